"""The garbage collector's pauses in a serving process: the heap frozen at engine start and again once the server's
app is built (swiftnb's default, as vLLM's own server does at its start), at engine start only (the app's objects
left in the collector's full passes: swiftnb before 2026-12-02's change), and not at all (gc.unfreeze() after the
start).

    .venv/bin/python bench/bench_gc.py [--concurrency 256] [--num_prompts 1024] [--reps 2]

Each run is a fresh process: the embedded model's engine, its server (serve()), vLLM's serving benchmark against it
from another process (random 64 in / 128 out, ignore_eos), and gc.callbacks timing every collection by generation.
Prints per run: tok/s, full (generation 2) collections, their total and longest pause; then the medians side by side.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = '''
import gc, json, subprocess, sys, time
from swiftnb import DEMO_MODEL_DIR, get_vllm_engine, serve
engine = get_vllm_engine()
if sys.argv[1] == 'engine_start':
    import swiftnb.server.vllm_app
    swiftnb.server.vllm_app.freeze_gc_heap = lambda: None
server = serve(engine, port=0, served_model_name='tiny-chat')
if sys.argv[1] == 'unfrozen':
    gc.unfreeze()
tracked = len(gc.get_objects())  # what a full collection walks as serving begins
pauses, began = {0: [], 1: [], 2: []}, {}
def timing(phase, info):
    if phase == 'start':
        began['t'] = time.perf_counter()
    else:
        pauses[info['generation']].append(time.perf_counter() - began['t'])
gc.callbacks.append(timing)
bench = (f"import sys; sys.path.insert(0, {sys.argv[4]!r}); import bench_serving; "
         f"print(bench_serving.run_benchmark({server.port}, {str(DEMO_MODEL_DIR)!r}, {sys.argv[2]}, {sys.argv[3]}))")
run = subprocess.run([sys.executable, '-c', bench], capture_output=True, text=True, check=True)
gc.callbacks.remove(timing)
tok_s = float(run.stdout.split("'tok_s': ")[1].split(',')[0])
print(json.dumps({'heap': sys.argv[1], 'tracked': tracked, 'tok_s': tok_s,
                  'full_collections': len(pauses[2]), 'full_ms': 1000 * sum(pauses[2]),
                  'longest_ms': 1000 * max(pauses[2], default=0), 'young_ms': 1000 * sum(pauses[0] + pauses[1])}))
server.stop()
engine.shutdown()
'''


def measure(concurrency: int, num_prompts: int, reps: int, progress=print) -> dict:
    runs = {'frozen': [], 'engine_start': [], 'unfrozen': []}
    for _ in range(reps):
        for heap in runs:
            out = subprocess.run([sys.executable, '-c', RUN, heap, str(concurrency), str(num_prompts), str(HERE)],
                                 capture_output=True, text=True, check=True).stdout
            runs[heap].append(json.loads(out.strip().splitlines()[-1]))
            progress(runs[heap][-1])
    keys = ('tracked', 'tok_s', 'full_collections', 'full_ms', 'longest_ms', 'young_ms')
    return {heap: {key: statistics.median(r[key] for r in rs) for key in keys} for heap, rs in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--concurrency', type=int, default=256)
    parser.add_argument('--num_prompts', type=int, default=1024)
    parser.add_argument('--reps', type=int, default=2)
    args = parser.parse_args()
    result = measure(args.concurrency, args.num_prompts, args.reps)
    print(f'{"heap":>12} | {"tracked":>7} | {"tok/s":>7} | {"full GCs":>8} | {"full GC ms":>10} | '
          f'{"longest ms":>10} | {"young GC ms":>11}')
    for heap, r in result.items():
        print(f'{heap:>12} | {r["tracked"]:7.0f} | {r["tok_s"]:7.0f} | {r["full_collections"]:8g} | '
              f'{r["full_ms"]:10.0f} | {r["longest_ms"]:10.0f} | {r["young_ms"]:11.0f}')
    print(f'throughput ratio frozen/unfrozen: {result["frozen"]["tok_s"] / result["unfrozen"]["tok_s"]:.2f}x')


if __name__ == '__main__':
    main()
