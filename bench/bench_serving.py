"""Serving: swiftnb's server vs vLLM's own OpenAI server, with vLLM's own serving benchmark.

    .venv/bin/python bench/bench_serving.py [--concurrency 16 64] [--reps 2] [--num_prompts 64]

Both servers run the same model (the embedded tiny-chat unless --model) with the same engine
settings, side by side; runs alternate between them. The workload is vLLM's `random` dataset,
input 64 / output 128 tokens, ignore_eos, on /v1/completions. Prints output tokens/s and median
TTFT of each, and their ratio (goal: swiftnb >= 1.0x on throughput, TTFT no worse).
"""
import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx

from swiftnb import DEMO_MODEL_DIR

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(cmd: list, port: int, log: Path):
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get('VLLM_CPU_KVCACHE_SPACE', '2'))
    with open(log, 'w') as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 600
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f'http://127.0.0.1:{port}/health', timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f'{cmd[0]} did not start; see {log}')
            time.sleep(1)
        yield
    finally:
        proc.terminate()
        proc.wait(60)


def run_benchmark(port: int, model_dir: str, concurrency: int, num_prompts: int) -> dict:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([
        '--backend', 'openai', '--base-url', f'http://127.0.0.1:{port}', '--model', 'tiny-chat',
        '--tokenizer', model_dir, '--dataset-name', 'random', '--random-input-len', '64',
        '--random-output-len', '128', '--num-prompts', str(num_prompts), '--ignore-eos',
        '--max-concurrency', str(concurrency), '--disable-tqdm', '--seed', '0'])
    with contextlib.redirect_stdout(open(os.devnull, 'w')):
        result = main(args)
    return {'tok/s': result['output_throughput'], 'ttft_ms': result['median_ttft_ms']}


def measure(concurrency=(16, 64), reps: int = 2, num_prompts: int = 64, model: Optional[str] = None,
            progress=print) -> list[dict]:
    """Per concurrency: median output tokens/s and median TTFT of each server."""
    model = model or str(DEMO_MODEL_DIR)
    vllm_port, ours_port = free_port(), free_port()
    vllm_cmd = [sys.executable, '-m', 'vllm.entrypoints.openai.api_server', '--model', model,
                '--served-model-name', 'tiny-chat', '--port', str(vllm_port)]  # defaults, as `vllm serve`
    ours_cmd = [str(BIN / 'swiftnb'), 'deploy', '--model_id_or_path', model, '--served_model_name',
                'tiny-chat', '--port', str(ours_port)]
    logs = Path(os.environ.get('TMPDIR', '/tmp'))
    rows = []
    with running(vllm_cmd, vllm_port, logs / 'bench-vllm-server.log'), \
            running(ours_cmd, ours_port, logs / 'bench-swiftnb-server.log'):
        for port in (vllm_port, ours_port):  # warm-up both
            run_benchmark(port, model, 4, 8)
        for c in concurrency:
            samples = {'vllm': [], 'swiftnb': []}
            for _ in range(reps):
                for name, port in (('vllm', vllm_port), ('swiftnb', ours_port)):
                    samples[name].append(run_benchmark(port, model, c, num_prompts))
                    progress(f'c={c} {name} server: {samples[name][-1]}')
            row = {'concurrency': c}
            for name, runs in samples.items():
                row[f'{name}_tok_s'] = statistics.median(s['tok/s'] for s in runs)
                row[f'{name}_ttft_ms'] = statistics.median(s['ttft_ms'] for s in runs)
            rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=str(DEMO_MODEL_DIR))
    parser.add_argument('--concurrency', type=int, nargs='+', default=[16, 64])
    parser.add_argument('--reps', type=int, default=2)
    parser.add_argument('--num_prompts', type=int, default=64)
    args = parser.parse_args()
    rows = measure(args.concurrency, args.reps, args.num_prompts, args.model)
    print(f'\n{"concurrency":>11} | {"vLLM tok/s":>10} | {"swiftnb tok/s":>13} | {"ratio":>5} | '
          f'{"vLLM TTFT ms":>12} | {"swiftnb TTFT ms":>15}')
    for r in rows:
        print(f'{r["concurrency"]:>11} | {r["vllm_tok_s"]:10.1f} | {r["swiftnb_tok_s"]:13.1f} | '
              f'{r["swiftnb_tok_s"] / r["vllm_tok_s"]:5.2f} | {r["vllm_ttft_ms"]:12.1f} | {r["swiftnb_ttft_ms"]:15.1f}')


if __name__ == '__main__':
    main()
