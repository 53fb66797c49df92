"""The seed's inference API: inference_vllm / inference_stream_vllm and their async twins.

Each is written once, as a coroutine or async generator that runs on the
engine's loop; the four public forms only bridge to it (engine.loop.run,
.iterate, .run_async, .aiterate). They take an engine of either backend.
All requests of a call go to the engine at once, so it batches them.
"""
import time
from typing import AsyncIterator, Iterator, Optional, Union

from swiftnb.config import GenerationConfig
from swiftnb.engine.base import Completion, Engine, LoRARequest
from swiftnb.engine.merge import merge
from swiftnb.template import Template


def _generation_config(engine: Engine, generation_config) -> GenerationConfig:
    if generation_config is None:
        return engine.generation_config
    if isinstance(generation_config, dict):
        return GenerationConfig(**generation_config)
    if isinstance(generation_config, GenerationConfig):
        return generation_config
    return GenerationConfig.from_hf(generation_config)  # a transformers.GenerationConfig


def _prompts(engine: Engine, template: Template, request_list: list) -> list[list[int]]:
    prompts = []
    for i, request in enumerate(request_list):
        if not isinstance(request, dict) or 'query' not in request:
            raise ValueError(f"request {i} must be a dict with a 'query', got {request!r}")
        ids = template.encode(request['query'], request.get('history'), request.get('system'))
        engine.check_prompt(ids, f'the prompt of request {i}')
        prompts.append(ids)
    return prompts


def _results(request_list: list, completions: list[Completion]) -> list[dict]:
    results = []
    for request, completion in zip(request_list, completions):
        history = [list(turn) for turn in request.get('history') or ()]
        results.append({'response': completion.text, 'history': history + [[request['query'], completion.text]]})
    return results


def _record(generation_info: Optional[dict], prompts, completions, start: float) -> None:
    if generation_info is None:
        return
    runtime = time.perf_counter() - start
    generated = sum(len(c.token_ids) for c in completions)
    generation_info.update({
        'num_prompt_tokens': sum(len(p) for p in prompts), 'num_generated_tokens': generated,
        'num_samples': len(completions), 'runtime': runtime,
        'samples/s': len(completions) / runtime if runtime else 0.0,
        'tokens/s': generated / runtime if runtime else 0.0})


async def stream_completions(engine, prompts, config, lora) -> AsyncIterator[list[Completion]]:
    """All requests at once; yields their Completions each time any of them grew."""
    completions = [Completion() for _ in prompts]
    async for batch in merge([engine.stream(p, config, lora) for p in prompts]):
        for i, delta in batch:
            if delta.index == 0:  # with n > 1 the seed's API reports the first choice
                completions[i].add(delta)
        yield completions


def _prepare(engine, template, request_list, generation_config, lora_request):
    config = _generation_config(engine, generation_config)
    prompts = _prompts(engine, template, request_list)
    engine.check_lora(lora_request)
    return config, prompts


async def _batch(engine, template, request_list, generation_config, generation_info, lora_request, use_tqdm):
    if not request_list:
        return []
    config, prompts = _prepare(engine, template, request_list, generation_config, lora_request)
    start = time.perf_counter()
    progress = None
    if use_tqdm:
        from tqdm.auto import tqdm
        progress = tqdm(total=len(prompts))
    async for completions in stream_completions(engine, prompts, config, lora_request):
        if progress is not None:
            progress.update(sum(c.finish_reason is not None for c in completions) - progress.n)
    if progress is not None:
        progress.close()
    _record(generation_info, prompts, completions, start)
    return _results(request_list, completions)


async def _stream(engine, template, request_list, generation_config, generation_info, lora_request):
    if not request_list:
        return
    config, prompts = _prepare(engine, template, request_list, generation_config, lora_request)
    start = time.perf_counter()
    async for completions in stream_completions(engine, prompts, config, lora_request):
        yield _results(request_list, completions)
    _record(generation_info, prompts, completions, start)


GenerationConfigLike = Union[GenerationConfig, dict, None]


def inference_vllm(engine: Engine, template: Template, request_list: list, *,
                   generation_config: GenerationConfigLike = None, generation_info: Optional[dict] = None,
                   lora_request: Optional[LoRARequest] = None, use_tqdm: bool = False) -> list[dict]:
    """Run every request (dicts with 'query' and optional 'history', 'system') and return
    `[{'response', 'history'}]`. Works on an engine of either backend, in scripts and in cells."""
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
