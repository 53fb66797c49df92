"""The seed's inference API: inference_vllm / inference_stream_vllm and their async twins.

Each is written once, as a coroutine or async generator that runs on the
engine's loop; the four public forms only bridge to it (engine.loop.run,
.iterate, .run_async, .aiterate). They take an engine of either backend.
All requests of a call go to the engine at once, so it batches them.

A request is a dict: 'query', and optionally 'history' ([[query, response], ...]),
'system', 'tools' and 'tool_choice' (OpenAI's). The settings are the engine's
(`engine.generation_config`) with what `generation_config` gives on top.
"""
import time
from dataclasses import dataclass
from typing import AsyncIterator, Iterator, Optional, Union

from swiftnb import tools as tool_calls
from swiftnb.engine.base import Choice, Engine, LoRARequest
from swiftnb.engine.streams import interleave
from swiftnb.errors import UsageError
from swiftnb.settings import GenerationConfig
from swiftnb.template import Template

GenerationConfigLike = Union[GenerationConfig, dict, None]


def settings_for(engine: Engine, generation_config: GenerationConfigLike) -> GenerationConfig:
    """The engine's defaults with what a call gives on top (a dict, a GenerationConfig, or a
    transformers GenerationConfig): the same rule at every door."""
    if generation_config is None:
        return engine.generation_config
    if isinstance(generation_config, dict):
        generation_config = GenerationConfig(**generation_config)
    elif not isinstance(generation_config, GenerationConfig):
        generation_config = GenerationConfig.from_hf(generation_config)
    return generation_config.apply(engine.generation_config)


@dataclass
class Prepared:
    """One request, checked and encoded: what the engine gets, and what reads its answer back."""
    prompt_ids: list[int]
    config: GenerationConfig
    tools: Optional[list] = None
    tool_choice: object = 'none'


def prepare(engine: Engine, template: Template, request_list: list, config: GenerationConfig,
            lora: Optional[LoRARequest] = None) -> list[Prepared]:
    """Check and encode every request before any of them runs, so a mistake costs no engine time."""
    engine.check_lora(lora)
    prepared = []
    for i, request in enumerate(request_list):
        if not isinstance(request, dict) or 'query' not in request:
            raise UsageError(f"request {i} must be a dict with a 'query', got {request!r}")
        tools, tool_choice = tool_calls.check(request.get('tools'), request.get('tool_choice'))
        ids = template.encode(request['query'], request.get('history'), request.get('system'),
                              [t.model_dump(exclude_none=True) for t in tools] if tools else None)
        engine.check_prompt(ids, f'the prompt of request {i}' if len(request_list) > 1 else 'the prompt')
        forced = tool_calls.constraint(tools, tool_choice, engine.tool_parser)
        request_config = config if forced is None else \
            config.model_copy(update={'structured_outputs': forced, 'response_format': None})
        prepared.append(Prepared(ids, request_config, tools, tool_choice))
    return prepared


async def stream_choices(engine: Engine, prepared: list[Prepared], lora,
                         final_only: bool = False) -> AsyncIterator[list[Choice]]:
    """All requests at once; yields their first choices each time any of them grew (`final_only`: finished)."""
    choices = [Choice() for _ in prepared]
    streams = [engine.stream(p.prompt_ids, p.config, lora, final_only=final_only) for p in prepared]
    async for batch in interleave(streams):
        for i, delta in batch:
            if delta.index == 0:  # with n > 1 the seed's API reports the first choice
                choices[i].add(delta)
        yield choices


def _results(engine: Engine, request_list: list, prepared: list[Prepared], choices: list[Choice]) -> list[dict]:
    results = []
    for request, p, choice in zip(request_list, prepared, choices):
        history = [list(turn) for turn in request.get('history') or ()]
        result = {'response': choice.text}
        if p.tools and choice.finish_reason is not None:  # tool calls are read from the whole answer
            content, calls = tool_calls.read_calls(choice.text, p.tools, p.tool_choice, engine.hf_tokenizer,
                                                   engine.tool_parser)
            result = {'response': content or '', 'tool_calls': calls}
        result['history'] = history + [[request['query'], result['response']]]
        results.append(result)
    return results


def _record(generation_info: Optional[dict], prepared, choices, start: float) -> None:
    if generation_info is None:
        return
    runtime = time.perf_counter() - start
    generated = sum(len(c.token_ids) for c in choices)
    generation_info.update({
        'num_prompt_tokens': sum(len(p.prompt_ids) for p in prepared), 'num_generated_tokens': generated,
        'num_samples': len(choices), 'runtime': runtime,
        'samples/s': len(choices) / runtime if runtime else 0.0,
        'tokens/s': generated / runtime if runtime else 0.0})


async def _batch(engine, template, request_list, generation_config, generation_info, lora_request, use_tqdm):
    if not request_list:
        return []
    await engine.load_lora(lora_request)
    prepared = prepare(engine, template, request_list, settings_for(engine, generation_config), lora_request)
    start = time.perf_counter()
    progress = None
    if use_tqdm:
        from tqdm.auto import tqdm
        progress = tqdm(total=len(prepared))
    # Only whole answers are returned (and counted), so vLLM sends each once, as LLM.generate has it do:
    # no per-step output objects for its output handler and this loop to pass along.
    async for choices in stream_choices(engine, prepared, lora_request, final_only=True):
        if progress is not None:
            progress.update(sum(c.finish_reason is not None for c in choices) - progress.n)
    if progress is not None:
        progress.close()
    _record(generation_info, prepared, choices, start)
    return _results(engine, request_list, prepared, choices)


async def _stream(engine, template, request_list, generation_config, generation_info, lora_request):
    if not request_list:
        return
    await engine.load_lora(lora_request)
    prepared = prepare(engine, template, request_list, settings_for(engine, generation_config), lora_request)
    start = time.perf_counter()
    async for choices in stream_choices(engine, prepared, lora_request):
        yield _results(engine, request_list, prepared, choices)
    _record(generation_info, prepared, choices, start)


def inference_vllm(engine: Engine, template: Template, request_list: list, *,
                   generation_config: GenerationConfigLike = None, generation_info: Optional[dict] = None,
                   lora_request: Optional[LoRARequest] = None, use_tqdm: bool = False) -> list[dict]:
    """Run every request (dicts with 'query' and optional 'history', 'system', 'tools', 'tool_choice') and
    return `[{'response', 'history'}]` (and 'tool_calls' where tools were given). Works on an engine of
    either backend, in scripts and in cells."""
    return engine.loop.run(_batch(engine, template, request_list, generation_config, generation_info,
                                  lora_request, use_tqdm))


async def inference_vllm_async(engine: Engine, template: Template, request_list: list, *,
                               generation_config: GenerationConfigLike = None, generation_info: Optional[dict] = None,
                               lora_request: Optional[LoRARequest] = None, use_tqdm: bool = False) -> list[dict]:
    """`await`-able inference_vllm, for cells with top-level await and any other event loop."""
    return await engine.loop.run_async(_batch(engine, template, request_list, generation_config, generation_info,
                                              lora_request, use_tqdm))


def inference_stream_vllm(engine: Engine, template: Template, request_list: list, *,
                          generation_config: GenerationConfigLike = None, generation_info: Optional[dict] = None,
                          lora_request: Optional[LoRARequest] = None) -> Iterator[list[dict]]:
    """Yield the whole result list each time any answer grows (cumulative 'response' and 'history')."""
    return engine.loop.iterate(lambda: _stream(engine, template, request_list, generation_config,
                                               generation_info, lora_request))


def inference_stream_vllm_async(engine: Engine, template: Template, request_list: list, *,
                                generation_config: GenerationConfigLike = None,
                                generation_info: Optional[dict] = None,
                                lora_request: Optional[LoRARequest] = None) -> AsyncIterator[list[dict]]:
    """`async for` form of inference_stream_vllm."""
    return engine.loop.aiterate(lambda: _stream(engine, template, request_list, generation_config,
                                                generation_info, lora_request))
