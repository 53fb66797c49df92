"""Streaming: swiftnb's inference_stream_vllm_async vs vLLM's AsyncLLM.generate, 16 concurrent streams.

Both run on the same AsyncLLM, alternating, several repetitions. swiftnb's streams are awaited from
a loop of their own, as a notebook cell awaits them (the engine lives on its loop thread); the raw
peer runs on the engine's loop itself, as vLLM's own server does. Reported per path: median time to
first token and mean gap between tokens; the difference of the gaps is what swiftnb adds per token.

    .venv/bin/python bench/bench_stream.py [--streams 16] [--new_tokens 128] [--reps 3] [--model M]
"""
import argparse
import asyncio
import statistics
import time
import uuid
from typing import Optional

from swiftnb import get_vllm_engine, inference_stream_vllm_async

from bench_batch import bench_queries


def stream_figures(stamps: list[list[float]], start: float) -> dict:
    """Median TTFT (ms) and mean inter-token gap (ms) over streams, from each stream's token times."""
    ttft = statistics.median(s[0] - start for s in stamps) * 1000
    gaps = [b - a for s in stamps for a, b in zip(s, s[1:])]
    return {'ttft_ms': ttft, 'itl_ms': statistics.fmean(gaps) * 1000}


async def ours(engine, template, queries, new_tokens) -> list[list[float]]:
    async def one(query):
        stamps = []
        async for _ in inference_stream_vllm_async(engine, template, [{'query': query}],
                                                   generation_config={'max_new_tokens': new_tokens,
                                                                      'ignore_eos': True}):
            stamps.append(time.perf_counter())
        return stamps
    return await asyncio.gather(*(one(q) for q in queries))


async def theirs(engine, template, queries, new_tokens) -> list[list[float]]:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True,
                            output_kind=RequestOutputKind.DELTA)

    async def one(query):
        stamps = []
        prompt = {'prompt_token_ids': template.encode(query)}
        async for _ in engine.llm.generate(prompt, params, request_id=uuid.uuid4().hex):
            stamps.append(time.perf_counter())
        return stamps
    return await asyncio.gather(*(one(q) for q in queries))


def measure(streams: int = 16, new_tokens: int = 128, reps: int = 3, model: Optional[str] = None) -> dict:
    """{'swiftnb': {...}, 'vllm': {...}} with the medians over reps of ttft_ms and itl_ms."""
    engine = get_vllm_engine(model_id_or_path=model)
    template = engine.template
    queries = bench_queries(streams)

    def run(name) -> dict:
        start = time.perf_counter()
        if name == 'swiftnb':
            stamps = asyncio.run(ours(engine, template, queries, new_tokens))
        else:
            stamps = engine.loop.run(theirs(engine, template, queries, new_tokens))
        return stream_figures(stamps, start)

    run('swiftnb'), run('vllm')  # warm-up
    runs = {'swiftnb': [], 'vllm': []}
    for _ in range(reps):
        for name in runs:
            runs[name].append(run(name))
    return {name: {key: statistics.median(r[key] for r in results) for key in ('ttft_ms', 'itl_ms')}
            for name, results in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--streams', type=int, default=16)
    parser.add_argument('--new_tokens', type=int, default=128)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--model', help='a model directory or hub id (default: the embedded model)')
    args = parser.parse_args()
    figures = measure(args.streams, args.new_tokens, args.reps, args.model)
    for name, row in figures.items():
        print(f'{name:8s} TTFT {row["ttft_ms"]:7.1f} ms   mean inter-token gap {row["itl_ms"]:6.3f} ms')
    added = figures['swiftnb']['itl_ms'] - figures['vllm']['itl_ms']
    print(f'added per token: {added:.3f} ms (goal < 0.2 ms: {"met" if added < 0.2 else "MISSED"})')


if __name__ == '__main__':
    main()
