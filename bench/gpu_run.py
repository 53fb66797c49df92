"""`make bench` on a CUDA machine: each GPU row against its peer in the same run, as one table.

    python bench/gpu_run.py [--rows start sleep batch serving apps] [--sizes 0.5b 1.5b] [--vocab 151936]
                            [--seconds 20] [--waves 1]
                            [--concurrency 1 16 64 256] [--reps 2] [--profile [C ...]] [--batch_prompts 1024]
                            [--batch_stats] [--engine_args NAME=VALUE ...] [--out DIR]

Rows:
  start    two "kernels" in turn (fresh processes; vLLM's compile caches empty for the first, kept for the
           second) run `get_vllm_engine()` on the embedded model: the time from `import swiftnb` to a ready
           engine, where the progress line says it went, and whether vLLM loaded its compiled graphs from
           its cache; then the same with enforce_eager=True
  sleep    the first random-weight model with enable_sleep_mode: sleep and wake at levels 1 and 2 and the memory
           it frees, against the engine's start (tests/test_gpu.py checks the answers after waking, on the trained
           demo model: random bf16 weights give near-ties that flip from one run to the next)
  batch    inference_vllm vs vLLM's LLM.generate on the first random-weight model (bench_batch), --batch_prompts
           prompts of 128 tokens, 256 new tokens each; --batch_stats: again with vLLM's stats on in swiftnb's engine
  serving  swiftnb's server vs vLLM's own on each random-weight model: vLLM's serving benchmark, random 128
           tokens in / 256 out, ignore_eos, runs of about --seconds and at least --waves times the concurrency's
           prompts, alternating (bench_serving); --profile [C ...]: one more run per server under py-spy at the
           highest concurrency or at each C (first model)
  apps     vLLM's OpenAI app and swiftnb's (with and without its RequestGuard) over one engine on the first
           random-weight model, on the same loop thread, and vLLM's own server process beside them
           (bench_server_apps --vllm_serve), at the highest concurrency, --reps rounds of max(4, --waves) times its
           prompts: whether what serving differs in is the app or the process
The random-weight models are Qwen2-0.5B's, -1.5B's and -7B's configurations (bench/random_model.py). Engines
that share the card (batch, serving) each take 0.4 of it; --engine_args adds engine arguments to both sides of
those rows, ones that `vllm serve` and `swiftnb deploy` both take with a value (on two cards: `--rows serving
--sizes 7b --engine_args tensor_parallel_size=2`, or data_parallel_size=2, which LLM.generate has not).
Writes DIR/gpu_bench.json and DIR/gpu_bench.md.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from random_model import VOCAB, random_qwen2, random_words  # noqa: E402

SHARED = {'gpu_memory_utilization': 0.4}  # two engines on one card
BATCH = dict(prompt_tokens=128, new_tokens=256, reps=3)
START = '''
import json, sys, time
began = time.perf_counter()
from swiftnb import get_vllm_engine, logs
engine = get_vllm_engine(**json.loads(sys.argv[1]))
ready = time.perf_counter() - began
log = logs.log_file().read_text(errors='replace')
cache = 'load failed' if 'due to a load failure' in log else 'loaded' if 'Directly load' in log else 'none'
print(json.dumps({'wall_s': ready, 'compile_cache': cache, **engine.start_times}))
engine.shutdown()
'''


def start_row(out: list) -> None:
    """First and second kernel start on the embedded model, with and without torch.compile and CUDA graphs."""
    cache = tempfile.mkdtemp(prefix='swiftnb-vllm-cache-')
    env = dict(os.environ, VLLM_CACHE_ROOT=cache, TRITON_CACHE_DIR=os.path.join(cache, 'triton'))
    for options, kernel in (({}, 'first'), ({}, 'second'), ({'enforce_eager': True}, 'second')):
        run = subprocess.run([sys.executable, '-c', START, json.dumps(options)], env=env, capture_output=True,
                             text=True, timeout=400)
        if run.returncode != 0:
            raise RuntimeError(run.stderr[-3000:])
        figures = json.loads(run.stdout.strip().splitlines()[-1])
        out.append({'row': 'start', 'kernel': kernel, 'options': options, **figures})
        print(out[-1], flush=True)


def engine_arg(text: str) -> tuple:
    """'tensor_parallel_size=2' -> ('tensor_parallel_size', 2): the value as JSON where it reads as JSON."""
    name, _, value = text.partition('=')
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def sleep_row(model_dir: Path, out: list) -> None:
    import torch
    from swiftnb import get_vllm_engine
    engine = get_vllm_engine(model_id_or_path=str(model_dir), enable_sleep_mode=True)
    free = {'awake': torch.cuda.mem_get_info()[0]}
    for level in (1, 2):
        began = time.perf_counter()
        engine.sleep(level)
        asleep_s, free[f'asleep {level}'] = time.perf_counter() - began, torch.cuda.mem_get_info()[0]
        began = time.perf_counter()
        engine.wake_up()
        wake_s = time.perf_counter() - began
        out.append({'row': 'sleep', 'level': level, 'sleep_s': asleep_s, 'wake_s': wake_s,
                    'freed_gib': (free[f'asleep {level}'] - free['awake']) / 2**30,
                    'engine_start_s': engine.start_times['seconds']})
        print(out[-1], flush=True)
    engine.shutdown()


def batch_row(model_dir: Path, prompts: int, out: list, engine_args: dict, stats: bool = False) -> None:
    import bench_batch
    from transformers import AutoTokenizer
    from swiftnb.engine import registry
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    queries = [random_words(tokenizer, BATCH['prompt_tokens'], seed) for seed in range(prompts)]
    figures = bench_batch.measure(prompts=len(queries), new_tokens=BATCH['new_tokens'], reps=BATCH['reps'],
                                  model=str(model_dir), engine_options=engine_args, queries=queries, stats=stats)
    registry.live_engine().shutdown()
    out.append({'row': 'batch', 'model': model_dir.parent.name + ' with vLLM stats' * stats, **figures})
    print(out[-1], flush=True)


def serving_rows(model_dir: Path, args, out: list, save) -> None:
    import bench_serving
    first = model_dir == next(iter(args.models.values()))  # profiled once: what comes back from the machine is limited
    profile = Path(args.out) / f'profile-{model_dir.parent.name}' if args.profile is not None and first else None

    def keep(row):  # each concurrency's row is saved after every pair of runs, replacing what it had so far
        figures = {'row': 'serving', 'model': model_dir.parent.name, **row}
        if out and out[-1]['row'] == 'serving' and out[-1]['model'] == figures['model'] \
                and out[-1]['concurrency'] == row['concurrency']:
            out[-1] = figures
        else:
            out.append(figures)
        save()
    rows = bench_serving.measure(args.concurrency, args.reps, model=str(model_dir), input_len=128, output_len=256,
                                 seconds=args.seconds, engine_args=args.engine_args, profile=profile,
                                 vllm_twice=args.vllm_twice,
                                 profile_at=args.profile or (), waves=args.waves, on_row=keep)
    print(bench_serving.table(rows), flush=True)


def apps_row(model_dir: Path, args, out: list) -> None:
    import bench_server_apps
    c = args.concurrency[-1]

    def keep(line: str) -> None:  # each run as it ends, so that a call cut short still brings back what it measured
        print(line, flush=True)
        with open(Path(args.out, 'apps_runs.txt'), 'a') as runs:
            runs.write(line + '\n')
    result = bench_server_apps.measure(str(model_dir), c, max(4, args.waves) * c, 128, 256, args.reps,
                                       args.engine_args, progress=keep, vllm_serve=True)
    out.append({'row': 'apps', 'model': model_dir.parent.name, **result})
    print(bench_server_apps.table(result), flush=True)


def apps_cell(r: dict) -> str:
    return (f'{r["tok_s"]:.0f} tok/s, TTFT {r["ttft_ms"]:.1f} ms, TPOT {r["tpot_ms"]:.2f} ms, loop '
            f'{r["cpu_ms_per_request"]:.3f} CPU ms/request')


def serving_cell(row: dict, server: str) -> str:
    runs = ', '.join(f'{x:.0f}' for x in row[f'{server}_runs_tok_s'])
    return (f'{row[f"{server}_tok_s"]:.0f} tok/s (runs {runs}), TTFT {row[f"{server}_ttft_ms"]:.1f} ms, '
            f'TPOT {row[f"{server}_tpot_ms"]:.2f} ms, front end {row[f"{server}_cpu_ms_per_ktok"]:.0f} CPU ms/1k '
            'tokens')


def markdown(out: list, header: str) -> str:
    lines = [header, '', '| row | what | swiftnb | peer | ratio |', '| --- | --- | --- | --- | --- |']
    for r in out:
        if r['row'] == 'start':
            stages = ', '.join(f'{k} {v:.1f} s' for k, v in r['stages'].items())
            lines.append(f'| start | {r["kernel"]} kernel {r["options"] or ""} | {r["wall_s"]:.1f} s from import '
                         f'(engine {r["seconds"]:.1f} s: {stages}); compile cache: {r["compile_cache"]} | | |')
        elif r['row'] == 'sleep':
            lines.append(f'| sleep | level {r["level"]} | sleep {r["sleep_s"]:.2f} s, wake {r["wake_s"]:.2f} s, '
                         f'{r["freed_gib"]:.1f} GiB freed | engine start '
                         f'{r["engine_start_s"]:.1f} s | |')
        elif r['row'] == 'batch':
            lines.append(f'| batch | {r["model"]}, {r["tokens"]} tokens | {r["tokens"] / r["swiftnb_s"]:.0f} tok/s, '
                         f'front end {r["swiftnb_cpu_s"]:.2f} CPU s | LLM.generate {r["tokens"] / r["vllm_s"]:.0f} '
                         f'tok/s, front end {r["vllm_cpu_s"]:.2f} CPU s | {r["ratio"]:.3f}x |')
        elif r['row'] == 'apps':
            lines.append(f'| apps | {r["model"]}, c={r["concurrency"]}, {r["prompts"]} prompts | swiftnb\'s '
                         f'{apps_cell(r["swiftnb"])}; unguarded {apps_cell(r["unguarded"])} | vLLM\'s app on the '
                         f'same loop {apps_cell(r["vllm"])}; vllm serve {apps_cell(r["vllm_serve"])} | '
                         f'{r["swiftnb"]["tok_s"] / r["vllm"]["tok_s"]:.2f}x |')
        else:
            lines.append(f'| serving | {r["model"]}, c={r["concurrency"]}, {r["prompts"]} prompts | '
                         f'{serving_cell(r, "swiftnb")} | vLLM server {serving_cell(r, "vllm")} | '
                         f'{r["swiftnb_tok_s"] / r["vllm_tok_s"]:.2f}x |')
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rows', nargs='+', default=['start', 'sleep', 'batch', 'serving'],
                        choices=['start', 'sleep', 'batch', 'serving', 'apps'])
    parser.add_argument('--sizes', nargs='+', default=['0.5b', '1.5b'], choices=['0.5b', '1.5b', '7b'])
    parser.add_argument('--engine_args', nargs='*', type=engine_arg, default=[], metavar='NAME=VALUE',
                        help='vLLM engine arguments of both sides in the batch and serving rows, beside '
                             f'{SHARED} (e.g. tensor_parallel_size=2)')
    parser.add_argument('--vocab', type=int, default=VOCAB,
                        help="the random models' vocabulary (1280, the demo model's: short steps, the front end shows)")
    parser.add_argument('--seconds', type=float, default=20)
    parser.add_argument('--concurrency', type=int, nargs='+', default=[1, 16, 64, 256])
    parser.add_argument('--reps', type=int, default=2)
    parser.add_argument('--waves', type=int, default=1)
    parser.add_argument('--vllm_twice', action='store_true',
                        help="serving rows with vLLM's server in swiftnb's place too: the ratios of two equal servers")
    parser.add_argument('--profile', type=int, nargs='*', help='alone: at the highest concurrency')
    parser.add_argument('--batch_prompts', type=int, default=1024)
    parser.add_argument('--batch_stats', action='store_true', help="the batch row again with vLLM's stats on")
    parser.add_argument('--out', default=os.environ.get('OUT', '.'))
    args = parser.parse_args()
    args.engine_args = {**SHARED, **dict(args.engine_args)}
    import torch
    import vllm
    header = (f'{torch.cuda.get_device_name()}, vLLM {vllm.__version__}, torch {torch.__version__}; '
              f'`python bench/gpu_run.py {" ".join(sys.argv[1:])}`')
    print(header, flush=True)
    folder = Path(tempfile.mkdtemp(prefix='swiftnb-gpu-bench-'))
    named = {size: size if args.vocab == VOCAB else f'{size}-vocab{args.vocab}' for size in args.sizes}
    models = args.models = {size: random_qwen2(folder / named[size], size, vocab=args.vocab)[0]
                            for size in args.sizes} if set(args.rows) - {'start'} else {}
    out = []
    Path(args.out).mkdir(parents=True, exist_ok=True)

    def save():  # after every row: what was measured comes back even when a later row fails or runs out of time
        Path(args.out, 'gpu_bench.json').write_text(json.dumps({'header': header, 'rows': out}, indent=1))
        Path(args.out, 'gpu_bench.md').write_text(markdown(out, header))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` stops it: the servers stop in order
    try:
        if 'start' in args.rows:
            start_row(out)
            save()
        if 'sleep' in args.rows:
            sleep_row(models[args.sizes[0]], out)
            save()
        if 'batch' in args.rows:
            for stats in (False, True) if args.batch_stats else (False,):
                batch_row(models[args.sizes[0]], args.batch_prompts, out, args.engine_args, stats)
                save()
        if 'serving' in args.rows:
            for model_dir in models.values():
                serving_rows(model_dir, args, out, save)
        if 'apps' in args.rows:
            apps_row(models[args.sizes[0]], args, out)
            save()
    finally:
        save()
        print(markdown(out, header), flush=True)


if __name__ == '__main__':
    main()
