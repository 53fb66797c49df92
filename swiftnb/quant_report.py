"""quant_report: what quantizing cost, measured beside the full model.

    report = quant_report(engine, ['tiny-chat-gptq-int4', 'tiny-chat-w8a8-int8'])   # the kernel's engine: the full one
    report            # a table: size, greedy answers the same, tokens until the first split, log-prob change, tokens/s

Each quantized folder runs on a vLLM engine of its own, one at a time, beside the full model's (shut down after).
Every model answers the same prompts greedily; an answer counts as the same when its tokens are the full model's,
and where it is not, the tokens before the first difference are counted. The full model's answers are then scored
by each model (vLLM's prompt log-probabilities of those tokens): the mean log-probability change per token says how
far a model's beliefs moved even where its greedy answer did not.
"""
import dataclasses
import math
import time
from pathlib import Path
from typing import Sequence, Union

from swiftnb.engine.base import Engine
from swiftnb.errors import UsageError

PROMPTS = ('Who are you?', 'Hello!', 'Where is the capital of Zhejiang?', 'What is Chengdu famous for?',
           'Is there anything tasty in Guangzhou?', "What to do if I can't fall asleep at night?",
           'What is 2 + 2?', 'Tell me a joke.')


@dataclasses.dataclass
class QuantReport:
    """One row per model, the full one first: {'model', 'MB', 'same answers', 'tokens to first split',
    'log-prob change', 'tokens/s'}; `answers` holds each model's greedy answers."""
    rows: list
    answers: dict

    def __str__(self):
        names = list(self.rows[0])
        table = [[str(row[name]) for name in names] for row in self.rows]
        widths = [max(len(name), *(len(cells[i]) for cells in table)) for i, name in enumerate(names)]
        lines = ['  '.join(name.ljust(w) for name, w in zip(names, widths))]
        lines += ['  '.join(cell.ljust(w) for cell, w in zip(cells, widths)) for cells in table]
        return '\n'.join(lines)

    __repr__ = __str__


def quant_report(full: Union[Engine, str, Path], quantized: Union[str, Path, Sequence], prompts=PROMPTS,
                 max_tokens: int = 64, **engine_options) -> QuantReport:
    """The quantized folders against the full model (a vLLM engine, or its folder) on `prompts`, greedily.
    `engine_options` (get_vllm_engine's) go to the engines started here; on a GPU the live engine shares, their
    gpu_memory_utilization is what the live one leaves free, less room for CUDA itself, unless given."""
    from swiftnb.engine.options import VllmOptions
    from swiftnb.engine.vllm import VllmEngine
    folders = [Path(quantized)] if isinstance(quantized, (str, Path)) else [Path(q) for q in quantized]
    if not folders or not all((f / 'config.json').is_file() for f in folders):
        raise UsageError('quant_report compares model folders (what swiftnb.quantize wrote) with the full model; '
                         f'not a model folder: {", ".join(str(f) for f in folders if not (f / "config.json").is_file())}')
    if isinstance(full, Engine) and full.backend != 'vllm':
        raise UsageError('quant_report runs the quantized models on vLLM; pass the full model as a vLLM engine or '
                         'its folder')
    models = [full, *folders]
    results, template = {}, None
    for model in models:
        engine = model if isinstance(model, Engine) else VllmEngine(Path(model).name, str(model),
                                                                    VllmOptions(**_room(engine_options)))
        try:
            template = template or engine.template  # the full model's, for every model: the same prompts
            name = _name(model) + (' (full)' if not results else '')
            results[name] = _measure(engine, template, list(prompts), max_tokens,
                                             next(iter(results.values()), None))
        finally:
            if engine is not model:
                engine.shutdown()
    rows = []
    first = next(iter(results.values()))
    for model, (name, result) in zip(models, results.items()):
        same = sum(a == b for a, b in zip(result['ids'], first['ids']))
        splits = [_split(a, b) for a, b in zip(result['ids'], first['ids']) if a != b]
        rows.append({'model': name, 'MB': round(_size(model) / 2**20, 1),
                     'same answers': f'{same}/{len(prompts)}',
                     'tokens to first split': round(sum(splits) / len(splits), 1) if splits else '-',
                     'log-prob change': round(result['logprob'] - first['logprob'], 4),
                     'tokens/s': round(result['tokens/s'], 1)})
    return QuantReport(rows, {name: result['answers'] for name, result in results.items()})


def _measure(engine: Engine, template, prompts: list, max_tokens: int, reference) -> dict:
    """Greedy answers (their token ids, tokens/s), and the mean log-probability per token this model gives the
    reference's answers (the full model's; its own when it is the reference)."""
    from swiftnb.infer import inference_vllm
    from swiftnb.settings import GenerationConfig
    info = {}
    started = time.perf_counter()
    answers = [r['response'] for r in inference_vllm(engine, template, [{'query': p} for p in prompts],
                                                     generation_config={'temperature': 0, 'max_tokens': max_tokens},
                                                     generation_info=info)]
    elapsed = time.perf_counter() - started
    tokenizer = engine.hf_tokenizer
    ids = [tokenizer.encode(a, add_special_tokens=False) for a in answers]
    scored = reference['ids'] if reference else ids
    score = GenerationConfig(max_tokens=1, temperature=0, prompt_logprobs=0)
    total, count = 0.0, 0
    for prompt, answer in zip(prompts, scored):
        prompt_ids = template.encode(prompt)
        logprobs = engine.loop.run(_prompt_logprobs(engine, prompt_ids + answer, score))
        for position, token in enumerate(answer, len(prompt_ids)):
            total, count = total + logprobs[position][token], count + 1
    return {'answers': answers, 'ids': ids, 'logprob': total / max(count, 1),
            'tokens/s': info.get('num_generated_tokens', 0) / elapsed}


async def _prompt_logprobs(engine: Engine, ids: list, config) -> list:
    async for delta in engine.stream(ids, config):
        if delta.prompt_logprobs is not None:
            return delta.prompt_logprobs
    raise RuntimeError('the engine sent no prompt log-probabilities')


def _room(options: dict) -> dict:
    """The GPU memory that is free now, less 1.5 GiB, for an engine started beside a live one (vLLM takes its
    gpu_memory_utilization of the whole card and refuses to start where that much is not free). NVML reads it
    without starting CUDA in this process, which would hold memory of its own and make vLLM spawn its engine core."""
    if 'gpu_memory_utilization' in options:
        return options
    try:
        from vllm.third_party import pynvml  # vLLM's own copy of NVIDIA's bindings
        pynvml.nvmlInit()
    except Exception:  # no NVIDIA GPU here (or no NVML): vLLM's default
        return options
    try:
        memory = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
    finally:
        pynvml.nvmlShutdown()
    # the new engine's processes take about 0.5 GiB for CUDA itself before vLLM measures what is free (H100, 0.26)
    share = max(memory.free - 1.5 * 2**30, 0) / memory.total
    return {**options, 'gpu_memory_utilization': math.floor(share * 100) / 100}


def _split(a: list, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _name(model) -> str:
    return model.model_type if isinstance(model, Engine) else Path(model).name


def _size(model) -> int:
    folder = Path(model.model_dir if isinstance(model, Engine) else model)
    return sum(f.stat().st_size for f in folder.glob('*.safetensors'))
