"""The model vLLM compiles on CPU, with and without torch's AOT compile: does the way it was compiled change its speed?

    .venv/bin/python bench/bench_aot_compile.py [--prompts 256] [--new_tokens 128] [--reps 8]

swiftnb sets VLLM_USE_AOT_COMPILE=0 on CPU (engine/vllm_compat.py: reuse_compile_cache), so that a later engine start
loads Inductor's cached model instead of compiling again; `vllm serve` and `LLM` keep vLLM's default (AOT). This
starts two LLMs of the embedded tiny-chat in this process, one with each setting (their engine cores inherit it), and
times greedy LLM.generate on the same prompts, alternating which goes first. Prints each one's median output
tokens/s and the ratio non-AOT / AOT.
"""
import argparse
import os
import statistics
import time

from swiftnb import DEMO_MODEL_DIR


def measure(prompts: int = 256, new_tokens: int = 128, reps: int = 8) -> dict:
    from vllm import LLM, SamplingParams
    from swiftnb import logs
    llms = {}
    for mode, value in (('aot', '1'), ('no_aot', '0')):
        os.environ['VLLM_USE_AOT_COMPILE'] = value  # read by the engine core process as it compiles
        with logs.quiet_fds():
            llms[mode] = LLM(model=str(DEMO_MODEL_DIR), disable_log_stats=True, gpu_memory_utilization=0.3)
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    batch = [{'prompt_token_ids': [100 + (i * 7 + j) % 500 for j in range(64)]} for i in range(prompts)]
    for llm in llms.values():  # warm-up
        llm.generate(batch[:8], params, use_tqdm=False)
    speeds = {mode: [] for mode in llms}
    for rep in range(reps):
        for mode in list(llms)[::-1 if rep % 2 else 1]:
            start = time.perf_counter()
            llms[mode].generate(batch, params, use_tqdm=False)
            speeds[mode].append(prompts * new_tokens / (time.perf_counter() - start))
    medians = {mode: statistics.median(s) for mode, s in speeds.items()}
    return {**{f'{mode}_tok_s': m for mode, m in medians.items()}, 'runs': speeds,
            'ratio': medians['no_aot'] / medians['aot'],
            'pairs': [b / a for a, b in zip(speeds['aot'], speeds['no_aot'])]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--prompts', type=int, default=256)
    parser.add_argument('--new_tokens', type=int, default=128)
    parser.add_argument('--reps', type=int, default=8)
    args = parser.parse_args()
    result = measure(args.prompts, args.new_tokens, args.reps)
    print(f'AOT compiled: {result["aot_tok_s"]:.0f} tok/s; without AOT (swiftnb on CPU): '
          f'{result["no_aot_tok_s"]:.0f} tok/s; ratio {result["ratio"]:.3f} (pairs: '
          f'{", ".join(f"{p:.3f}" for p in result["pairs"])})')


if __name__ == '__main__':
    main()
