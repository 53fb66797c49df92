"""Tokens generated for clients that left: swiftnb's vLLM route against vLLM's own server, on the same load.

Each round starts `--streams` chat streams at once (`--max-tokens`, ignore_eos); half of them are abandoned (the
connection closed) after `--keep` chunks. Every chunk carries vLLM's running usage (continuous_usage_stats), so
the clients know how many tokens they received; vLLM's `vllm:generation_tokens_total` (in /metrics) says how
many the engine generated. Their difference is what was generated after a client left: the cost of an abort
that comes late. Prints each server's tokens a round and after-leave tokens per abandoned stream, and their ratio.

    python bench/bench_abandoned_streams.py [--streams 32] [--rounds 3]
"""
import argparse
import asyncio
import json
import re
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))
from conftest import running_vllm_server  # noqa: E402  (vLLM's own server, as the tests start it)

GENERATED = re.compile(r'^vllm:generation_tokens_total(?:\{[^}]*\})? (\S+)$', re.M)


async def generated(client: httpx.AsyncClient, url: str) -> float:
    text = (await client.get(url.removesuffix('/v1') + '/metrics')).text
    return sum(float(v) for v in GENERATED.findall(text))


async def one_stream(client: httpx.AsyncClient, url: str, max_tokens: int, keep) -> int:
    """Stream one answer, leaving after `keep` chunks (None: to its end); the tokens received."""
    body = {'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'Tell me a long story.'}],
            'stream': True, 'max_tokens': max_tokens, 'ignore_eos': True,
            'stream_options': {'include_usage': True, 'continuous_usage_stats': True}}
    received, chunks = 0, 0
    async with client.stream('POST', url + '/chat/completions', json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith('data: {'):
                continue
            usage = json.loads(line[6:]).get('usage')
            if usage:
                received = usage['completion_tokens']
            chunks += 1
            if keep is not None and chunks >= keep:
                break  # leaving the block closes the connection
    return received


async def round_(url: str, streams: int, max_tokens: int, keep: int) -> dict:
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=0)  # a left stream's socket closes
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        before = await generated(client, url)
        received = await asyncio.gather(*(one_stream(client, url, max_tokens, keep if i % 2 else None)
                                          for i in range(streams)))
        for _ in range(100):  # the engine's counters settle once the aborts are through
            await asyncio.sleep(0.2)
            now = await generated(client, url)
            await asyncio.sleep(0.3)
            if await generated(client, url) == now:
                break
        total = now - before
    left = streams // 2
    return {'generated': total, 'received': sum(received), 'after_leaving': (total - sum(received)) / left}


def run(url: str, args) -> list:
    asyncio.run(round_(url, 4, 16, None))  # warm-up
    return [asyncio.run(round_(url, args.streams, args.max_tokens, args.keep)) for _ in range(args.rounds)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--streams', type=int, default=32)
    parser.add_argument('--max-tokens', type=int, default=400)
    parser.add_argument('--keep', type=int, default=20, help='chunks an abandoning client reads before it leaves')
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    from swiftnb import get_vllm_engine, serve
    results = {}
    engine = get_vllm_engine(defaults_for='server')  # vllm serve's settings, its stats included
    server = serve(engine, port=0)
    results['swiftnb (vLLM route)'] = run(server.url, args)
    server.stop()
    engine.shutdown()
    with running_vllm_server() as url:
        results["vLLM's server"] = run(url, args)
    print(f'{args.streams} streams a round, {args.max_tokens} tokens each, half left after {args.keep} chunks')
    print(f'{"server":24} {"generated a round":>18} {"received":>9} {"after leaving, per left stream":>31}')
    mean = {}
    for name, rounds in results.items():
        mean[name] = sum(r['after_leaving'] for r in rounds) / len(rounds)
        gen = '/'.join(f'{r["generated"]:.0f}' for r in rounds)
        got = '/'.join(f'{r["received"]}' for r in rounds)
        print(f'{name:24} {gen:>18} {got:>9} {mean[name]:31.1f}')
    a, b = mean.values()
    print(f'after-leaving tokens, swiftnb / vLLM: {a / b:.2f}x' if b else 'vLLM generated nothing after leaving')
    return 0


if __name__ == '__main__':
    sys.exit(main())
