"""Serving: swiftnb's server vs vLLM's own OpenAI server, with vLLM's own serving benchmark.

    .venv/bin/python bench/bench_serving.py [--concurrency 16 64] [--reps 2] [--num_prompts 64]
                                            [--input_len 64] [--output_len 128] [--seconds S] [--waves W]
                                            [--profile DIR [--profile_at C ...]]

Both servers run the same model (the embedded tiny-chat unless --model) with the same engine settings, side by
side; runs alternate between them, each pair on prompts new to both, vLLM's first in one pair and swiftnb's in
the next. The workload is vLLM's `random` dataset, input 64 / output 128 tokens, ignore_eos, greedy (temperature 0
sent with each request: vLLM's benchmark leaves it to the server's default, which differs where a model's
generation_config.json says `do_sample: false`, as tiny-chat's does: swiftnb reads it, vLLM does not), on
/v1/completions.
Prints output tokens/s, median TTFT and TPOT of each, and their ratio (goal: swiftnb >= 1.0x on throughput, TTFT
and TPOT no worse), and each server process's CPU time per 1,000 output tokens (its front end's work, which sets
the pace on a GPU). --seconds S sizes each run to last about S seconds (from a first run at that concurrency)
instead of --num_prompts, and --waves W to send at least W times the concurrency; --profile DIR adds one run per
server under py-spy (raw stacks of every thread of the server process into DIR), outside the measured runs, at
the highest concurrency or at each of --profile_at.
"""
import argparse
import contextlib
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import httpx

from swiftnb import DEMO_MODEL_DIR

SERVED_NAME = 'tiny-chat'  # both servers serve the model under this name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(cmd: list, port: int, log: Path):
    """The server process, once /health answers."""
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
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)


def run_benchmark(port: int, model_dir: str, concurrency: int, num_prompts: int, input_len: int = 64,
                  output_len: int = 128, seed: int = 0) -> dict:
    """One greedy run of vLLM's benchmark; `seed` picks the prompts (the same seed and number give the same ones)."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([
        '--backend', 'openai', '--base-url', f'http://127.0.0.1:{port}', '--model', SERVED_NAME,
        '--tokenizer', model_dir, '--dataset-name', 'random', '--random-input-len', str(input_len),
        '--random-output-len', str(output_len), '--num-prompts', str(num_prompts), '--ignore-eos',
        '--max-concurrency', str(concurrency), '--disable-tqdm', '--seed', str(seed), '--temperature', '0'])
    with contextlib.redirect_stdout(open(os.devnull, 'w')):
        result = main(args)
    return {'tok_s': result['output_throughput'], 'ttft_ms': result['median_ttft_ms'],
            'tpot_ms': result['median_tpot_ms'], 'seconds': result['duration']}


def flags(engine_args: dict, dash: str) -> list:
    """{'gpu_memory_utilization': 0.4} as command-line flags, vLLM's (dash '-') or swiftnb deploy's ('_')."""
    return [item for name, value in engine_args.items() for item in (f'--{name.replace("_", dash)}', str(value))]


def vllm_serve_cmd(model: str, port: int, engine_args: dict) -> list:
    """vLLM's own OpenAI server for `model` as SERVED_NAME on `port`: `engine_args` as flags, otherwise vLLM's
    defaults, as `vllm serve`."""
    return [sys.executable, '-m', 'vllm.entrypoints.openai.api_server', '--model', model,
            '--served-model-name', SERVED_NAME, '--port', str(port), *flags(engine_args, '-')]


def front_end_timed(proc, run) -> dict:
    """run()'s result with 'cpu_s': the CPU seconds the server's own process spent meanwhile (its HTTP and
    front-end work; the engine core is a child process), and 'client_cpu_s': this process's (vLLM's benchmark
    client). Where the device is fast the server's work sets the pace, so on a CPU machine it shows what a GPU run
    would feel; a client near one CPU second per second of the run would set the pace itself."""
    import psutil
    server, client = psutil.Process(proc.pid), psutil.Process()
    before, client_before = sum(server.cpu_times()[:2]), sum(client.cpu_times()[:2])
    result = run()
    return {**result, 'cpu_s': sum(server.cpu_times()[:2]) - before,
            'client_cpu_s': sum(client.cpu_times()[:2]) - client_before}


def profiled_run(proc, port, model_dir, concurrency, num_prompts, lengths, out: Path, seed: int):
    """One benchmark run with py-spy sampling every thread of the server process; its raw stacks go to `out`."""
    spy = subprocess.Popen(['py-spy', 'record', '--pid', str(proc.pid), '--rate', '100', '--nonblocking',
                            '--format', 'raw', '--output', str(out)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT)
    time.sleep(1)  # attached
    try:
        return run_benchmark(port, model_dir, concurrency, num_prompts, *lengths, seed)
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
        spy.wait(60)


def measure(concurrency=(16, 64), reps: int = 2, num_prompts: int = 64, model: Optional[str] = None,
            progress=print, input_len: int = 64, output_len: int = 128, seconds: Optional[float] = None,
            engine_args: Optional[dict] = None, profile: Optional[Path] = None, profile_at: Sequence[int] = (),
            waves: int = 1, on_row=None, vllm_twice: bool = False) -> list[dict]:
    """Per concurrency: median output tokens/s, TTFT and TPOT of each server. `seconds`: size each run to last
    about that long (from a first run at that concurrency); `waves`: and to send at least that many times the
    concurrency's prompts (a run of two waves is mostly its ramps); `engine_args`: vLLM engine arguments both
    servers start with; `profile`: a folder for one py-spy profiled run per server at each concurrency of
    `profile_at` (default: the highest); `on_row`: called with each concurrency's row after every pair of runs (the
    same dict, its medians so far), so that a run cut short still leaves what it measured; `vllm_twice`: vLLM's
    server in swiftnb's place too (an A/A run: the ratios two equal servers give on this machine)."""
    model = model or str(DEMO_MODEL_DIR)
    engine_args = engine_args or {}
    lengths = (input_len, output_len)
    vllm_port, ours_port = free_port(), free_port()
    vllm_cmd = vllm_serve_cmd(model, vllm_port, engine_args)
    ours_cmd = vllm_serve_cmd(model, ours_port, engine_args) if vllm_twice else [
        sys.executable, '-m', 'swiftnb.cli', 'deploy', '--model_id_or_path', model, '--served_model_name', SERVED_NAME,
        '--port', str(ours_port), *flags(engine_args, '_')]
    logs = Path(os.environ.get('TMPDIR', '/tmp'))
    rows, seeds = [], itertools.count(1)  # seed 0: the warm-up and sizing runs
    with running(vllm_cmd, vllm_port, logs / 'bench-vllm-server.log') as vllm_proc, \
            running(ours_cmd, ours_port, logs / 'bench-swiftnb-server.log') as ours_proc:
        servers = {'vllm': (vllm_port, vllm_proc), 'swiftnb': (ours_port, ours_proc)}
        for port, _ in servers.values():  # warm-up both
            run_benchmark(port, model, 4, 8, *lengths)
        for c in concurrency:
            prompts = num_prompts
            if seconds is not None:  # a first run at this concurrency says how many prompts last `seconds`
                probe = max(8, 2 * c)
                took = run_benchmark(vllm_port, model, c, probe, *lengths)['seconds']
                prompts = max(probe, c * round(probe / c * seconds / took))
            prompts = max(prompts, waves * c)
            samples = {name: [] for name in servers}
            row = {'concurrency': c, 'prompts': prompts}
            for rep in range(reps):
                # Prompts neither server has seen: vLLM caches prefixes, so a second run of the same prompts would
                # skip most of their prefill, and the runs of one server would not measure the same work.
                seed = next(seeds)
                # Which server goes first alternates (vLLM, ours; ours, vLLM; ...): the client is this process, and
                # whatever one run leaves it (garbage to collect, warm caches) falls on both servers alike.
                for name, (port, proc) in list(servers.items())[::-1 if rep % 2 else 1]:
                    samples[name].append(front_end_timed(proc, lambda: run_benchmark(port, model, c, prompts,
                                                                                     *lengths, seed)))
                    samples[name][-1]['cpu_ms_per_ktok'] = samples[name][-1]['cpu_s'] * 1e6 / (prompts * output_len)
                    progress(f'c={c} {name} server, {prompts} prompts: {samples[name][-1]}')
                for name, runs in samples.items():
                    row[f'{name}_runs_tok_s'] = [s['tok_s'] for s in runs]
                    for key in ('tok_s', 'ttft_ms', 'tpot_ms', 'cpu_ms_per_ktok'):
                        row[f'{name}_{key}'] = statistics.median(s[key] for s in runs)
                if on_row is not None:
                    on_row(row)
            rows.append(row)
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            wanted = profile_at or [rows[-1]['concurrency']]
            for row in (row for row in rows if row['concurrency'] in wanted):
                c, seed = row['concurrency'], next(seeds)
                for name, (port, proc) in servers.items():
                    result = profiled_run(proc, port, model, c, row['prompts'], lengths, profile / f'{name}_c{c}.txt',
                                          seed)
                    progress(f'profiled c={c} {name} server: {result}')
    return rows


def table(rows: list[dict]) -> str:
    lines = [f'{"concurrency":>11} | {"prompts":>7} | {"vLLM tok/s":>10} | {"swiftnb tok/s":>13} | {"ratio":>5} | '
             f'{"TTFT ms vLLM / ours":>19} | {"TPOT ms vLLM / ours":>19} | front end CPU ms/1k tokens vLLM / ours']
    for r in rows:
        lines.append(f'{r["concurrency"]:>11} | {r["prompts"]:>7} | {r["vllm_tok_s"]:10.1f} | {r["swiftnb_tok_s"]:13.1f} | '
                     f'{r["swiftnb_tok_s"] / r["vllm_tok_s"]:5.2f} | {r["vllm_ttft_ms"]:8.1f} / {r["swiftnb_ttft_ms"]:8.1f} | '
                     f'{r["vllm_tpot_ms"]:8.2f} / {r["swiftnb_tpot_ms"]:8.2f} | '
                     f'{r["vllm_cpu_ms_per_ktok"]:.1f} / {r["swiftnb_cpu_ms_per_ktok"]:.1f}')
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=str(DEMO_MODEL_DIR))
    parser.add_argument('--concurrency', type=int, nargs='+', default=[16, 64])
    parser.add_argument('--reps', type=int, default=2)
    parser.add_argument('--num_prompts', type=int, default=64)
    parser.add_argument('--input_len', type=int, default=64)
    parser.add_argument('--output_len', type=int, default=128)
    parser.add_argument('--seconds', type=float, help='size each run to last about this long')
    parser.add_argument('--waves', type=int, default=1, help='send at least this many times the concurrency')
    parser.add_argument('--profile', type=Path, help='a folder for py-spy profiles (at the highest concurrency)')
    parser.add_argument('--profile_at', type=int, nargs='+', default=(), help='profile at these concurrencies')
    args = parser.parse_args()
    rows = measure(args.concurrency, args.reps, args.num_prompts, args.model, input_len=args.input_len,
                   output_len=args.output_len, seconds=args.seconds, profile=args.profile,
                   profile_at=args.profile_at, waves=args.waves)
    print('\n' + table(rows))


if __name__ == '__main__':
    main()
