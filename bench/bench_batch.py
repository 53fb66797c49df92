"""Batch throughput: swiftnb's inference_vllm vs vLLM's own LLM.generate, same engine settings and
prompts, in one process, alternating, several repetitions. Also: the cost of get_vllm_engine's reuse.

    .venv/bin/python bench/bench_batch.py [--prompts 64] [--new_tokens 128] [--reps 3] [--stats]

Prints the median seconds, output tokens/s and front-end CPU seconds (this process's) of each, and their
throughput ratio (goal >= 0.97).
"""
import argparse
import itertools
import statistics
import time
from typing import Optional

from swiftnb import get_template, get_vllm_engine, inference_vllm


SEED_QUESTIONS = ['Hello!', 'Where is the capital of Zhejiang?', 'who are you?', 'What delicious food is there?',
                  "What to do if I can't fall asleep at night?", 'What is the capital of Sichuan?']


def bench_queries(n):
    """n distinct prompts (numbered, so no two share a whole prefix-cache entry)."""
    return [f'{q} ({i})' for i, q in zip(range(n), itertools.cycle(SEED_QUESTIONS))]


def measure(prompts: int = 64, new_tokens: int = 128, reps: int = 3, model: Optional[str] = None,
            engine_options: Optional[dict] = None, queries: Optional[list] = None, stats: bool = False) -> dict:
    """Median seconds of each path, their throughput ratio, and get_vllm_engine's reuse time (ms).
    `engine_options`: get_vllm_engine's options, which LLM gets too (gpu_memory_utilization=0.4 where both share
    a GPU); `queries`: the prompts' texts (default: the seed's questions, numbered); a model whose tokenizer has
    no chat template gets them as plain text; `stats`: swiftnb's engine keeps vLLM's stats, as a server's does
    (defaults_for='server'; a batch engine has them off, as LLM)."""
    engine_options = engine_options or {}
    ours_options = {**engine_options, 'engine_kwargs': {'disable_log_stats': False}} if stats else engine_options
    engine = get_vllm_engine(model_id_or_path=model, **ours_options)  # None: the embedded model
    chat = getattr(engine.hf_tokenizer, 'chat_template', None) is not None
    template = get_template('auto' if chat else 'default-generation', engine.hf_tokenizer)
    start = time.perf_counter()
    assert get_vllm_engine(model_id_or_path=model, **ours_options) is engine
    reuse_ms = (time.perf_counter() - start) * 1000

    from vllm import LLM, SamplingParams
    from swiftnb import logs
    with logs.quiet_fds():
        llm = LLM(model=engine.model_dir, disable_log_stats=True, **engine_options)
    requests = [{'query': q} for q in (queries or bench_queries(prompts))]
    token_prompts = [{'prompt_token_ids': template.encode(r['query'])} for r in requests]
    config = {'max_new_tokens': new_tokens, 'ignore_eos': True}
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)

    def ours():
        inference_vllm(engine, template, requests, generation_config=config)

    def theirs():
        llm.generate(token_prompts, params, use_tqdm=False)

    ours(), theirs()  # warm-up
    # Wall time, and this process's CPU time: the front end's work (the engine cores are other processes), which
    # sets the pace where the device is fast (a GPU) and hides in the engine's compute where it is not (a CPU).
    times = {'swiftnb': [], 'vllm': []}
    cpu = {'swiftnb': [], 'vllm': []}
    for _ in range(reps):
        for name, fn in zip(times, (ours, theirs)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    llm.llm_engine.engine_core.shutdown()  # its engine core process; the next rows need the cores
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {'swiftnb_s': medians['swiftnb'], 'vllm_s': medians['vllm'], 'tokens': len(requests) * new_tokens,
            'ratio': medians['vllm'] / medians['swiftnb'], 'reuse_ms': reuse_ms,
            'swiftnb_cpu_s': statistics.median(cpu['swiftnb']), 'vllm_cpu_s': statistics.median(cpu['vllm'])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--prompts', type=int, default=64)
    parser.add_argument('--new_tokens', type=int, default=128)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--model', help='a model directory or hub id (default: the embedded model)')
    parser.add_argument('--stats', action='store_true', help="swiftnb's engine with vLLM's stats on, as a server's")
    args = parser.parse_args()
    figures = measure(args.prompts, args.new_tokens, args.reps, args.model, stats=args.stats)
    for name in ('swiftnb', 'vllm'):
        seconds = figures[f'{name}_s']
        print(f'{name:8s} {seconds:7.3f} s  {figures["tokens"] / seconds:8.1f} output tokens/s  '
              f'front end {figures[f"{name}_cpu_s"]:.3f} CPU s')
    ratio = figures['ratio']
    print(f'throughput ratio swiftnb / vLLM: {ratio:.3f} (goal >= 0.97: {"met" if ratio >= 0.97 else "MISSED"})')
    print(f'get_vllm_engine reuse: {figures["reuse_ms"]:.3f} ms (goal < 50 ms)')


if __name__ == '__main__':
    main()
