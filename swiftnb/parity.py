"""check_parity: one LoRA adapter's greedy answers along the three ways it can be served, side by side.

An adapter served by vLLM, the same adapter merged into its base (`swiftnb export --merge_lora true`) and run by
vLLM, and the adapter on transformers + peft (the pt backend, as it was trained) should answer alike; when they
do not (LlamaFactory #10596: merged and adapter-served outputs differ), the first token where two ways part says
where to look.
"""
import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import Sequence

from swiftnb.engine.base import Engine
from swiftnb.errors import UsageError

PROMPTS = ('Who are you?', 'Where is the capital of Zhejiang?', 'Hello!')
WAYS = ('adapter on vLLM', 'merged on vLLM', 'adapter on pt')


@dataclasses.dataclass
class Parity:
    """The answers of each way to each prompt; `differences` lists where they part."""
    prompts: list
    answers: dict  # {way: [answer per prompt]}
    differences: list  # [{'prompt', 'ways': (a, b), 'token': i, 'texts': (token of a, token of b)}]

    @property
    def ok(self) -> bool:
        return not self.differences

    def __str__(self):
        if self.ok:
            return f'the same greedy answers along {", ".join(self.answers)} for all {len(self.prompts)} prompts'
        return '\n'.join(f'{d["prompt"]!r}: {d["ways"][0]} and {d["ways"][1]} part at token {d["token"]}: '
                         f'{d["texts"][0]!r} vs {d["texts"][1]!r}' for d in self.differences)

    __repr__ = __str__


def check_parity(engine: Engine, adapter: str, prompts: Sequence[str] = PROMPTS, max_tokens: int = 64) -> Parity:
    """The adapter (a name the vLLM `engine` serves, or a folder) answers `prompts` greedily as vLLM serves it, merged
    into its base on a second vLLM engine, and on the pt backend; each pair of ways compared token by token.
    The second engines are built beside `engine` and shut down at the end (on a GPU, an engine with sleep mode
    sleeps meanwhile to make room)."""
    from swiftnb.engine.options import PtOptions
    from swiftnb.engine.pt import PtEngine
    from swiftnb.engine.vllm import VllmEngine
    from swiftnb.export import merge_lora
    from swiftnb.infer import inference_vllm
    if engine.backend != 'vllm':
        raise UsageError('check_parity starts from the vLLM engine that serves the adapter; pass a vLLM engine')
    with engine.adapter_for_call(adapter, 'parity') as lora:
        template = engine.template
        requests = [{'query': prompt} for prompt in prompts]
        greedy = {'temperature': 0, 'max_tokens': max_tokens}

        def answers(some_engine, lora_request=None) -> list[str]:
            return [r['response'] for r in inference_vllm(some_engine, template, requests, generation_config=greedy,
                                                          lora_request=lora_request)]
        ways = {WAYS[0]: answers(engine, lora)}
        dtype = str(engine.llm.model_config.dtype).removeprefix('torch.')
        with _room_beside(engine), tempfile.TemporaryDirectory(prefix='swiftnb-parity-') as folder:
            merged = merge_lora(lora.lora_path, str(Path(folder) / 'merged'), base_dir=engine.model_dir)
            options = dataclasses.replace(engine.options, enable_lora=False, dtype=dtype)
            for way, build in ((WAYS[1], lambda: VllmEngine(engine.model_type, str(merged), options)),
                               (WAYS[2], lambda: PtEngine(engine.model_type, engine.model_dir,
                                                          PtOptions(dtype=dtype, enable_lora=True)))):
                other = build()
                try:
                    ways[way] = answers(other, lora if way == WAYS[2] else None)
                finally:
                    other.shutdown()
    return Parity(list(prompts), ways, _differences(engine.hf_tokenizer, list(prompts), ways))


@contextlib.contextmanager
def _room_beside(engine):
    """On a GPU, the engine asleep (level 1) while the other ways run, when it has sleep mode; elsewhere nothing."""
    import torch
    if not (torch.cuda.is_available() and engine.options.gpu_memory_utilization > 0.5):
        yield
        return
    if not engine.options.enable_sleep_mode:
        raise UsageError('check_parity runs a second engine beside this one, and this one holds '
                         f'{engine.options.gpu_memory_utilization:.0%} of the GPU: create it with '
                         'enable_sleep_mode=True (it sleeps meanwhile) or a lower gpu_memory_utilization')
    engine.sleep(1)
    try:
        yield
    finally:
        engine.wake_up()


def _differences(tokenizer, prompts: list, ways: dict) -> list:
    names = list(ways)
    found = []
    for i, prompt in enumerate(prompts):
        first = ways[names[0]][i]
        for other in names[1:]:
            a, b = tokenizer.encode(first), tokenizer.encode(ways[other][i])
            if a != b:
                at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                found.append({'prompt': prompt, 'ways': (names[0], other), 'token': at,
                              'texts': tuple(tokenizer.decode(t[at:at + 1]) for t in (a, b))})
    return found
