"""Where a request's time goes in swiftnb's server: vLLM's own OpenAI app and swiftnb's, over one engine.

    .venv/bin/python bench/bench_server_apps.py [--model DIR] [--concurrency 256] [--num_prompts 1024]
                                                [--input_len 64] [--output_len 128] [--reps 4] [--vllm_serve]

One engine (the embedded tiny-chat unless --model; `vllm serve`'s batch sizes) in this process, served at once by
three apps, all on the engine's loop thread, so that the engine, the loop and the thread are the same for each and
only the app differs:
  vllm       vLLM's OpenAI app as `vllm serve` builds it (build_app, init_app_state) over the engine's AsyncLLM
  swiftnb    serve()'s app: vllm_app.py's, behind the RequestGuard (on CPU its requests pass the adapter gate)
  unguarded  vllm_app.py's app without the RequestGuard
and with --vllm_serve a fourth, in the same rotation:
  vllm_serve vLLM's own server process (`vllm serve`'s entry point) over its own engine, same model and arguments,
             its loop on its main thread
vLLM's serving benchmark runs from another process against each in turn (random prompts, ignore_eos, a seed per
round, the first of a round rotating), and the loop thread's CPU time is read from /proc around each run.
Prints each one's output tok/s, TTFT, TPOT and the loop's CPU ms per request, medians of the runs, and their
ratio to vLLM's app. Where vLLM's app on swiftnb's loop thread matches swiftnb's app but not vllm_serve, the
difference is the process around the app (or the engine), not the app.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import uvicorn

from bench_serving import SERVED_NAME, free_port, running, vllm_serve_cmd

HERE = Path(__file__).resolve().parent
APPS = ('vllm', 'swiftnb', 'unguarded')
CLIENT = ('import json, sys; sys.path.insert(0, sys.argv[1]); from bench_serving import run_benchmark; '
          'print(json.dumps(run_benchmark(*json.loads(sys.argv[2]))))')


def loop_cpu_s(pid: int, thread_id: int) -> float:
    """User + system CPU seconds of one thread of a process (Linux)."""
    fields = Path(f'/proc/{pid}/task/{thread_id}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def start_apps(engine, served_name: str) -> dict:
    """{app name: port}: the three apps, each on its own loopback port on the engine's loop."""
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm.utils.gc_utils import freeze_gc_heap
    from swiftnb.engine.vllm_compat import server_parts
    from swiftnb.server import serve
    from swiftnb.server.background import _bind
    from swiftnb.server.options import ServerOptions
    from swiftnb.server.vllm_app import build_vllm_app

    async def vllms_app():
        make_arg_parser, build_app, init_app_state = server_parts()
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(
            ['--model', engine.model_dir, '--served-model-name', served_name])
        tasks = await engine.llm.get_supported_tasks()
        app = build_app(args, tasks, engine.llm.model_config)
        await init_app_state(engine.llm, app.state, args, tasks)
        return app

    def on_the_loop(app) -> int:  # as BackgroundServer serves its app
        sock = _bind('127.0.0.1', 0)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level='warning', access_log=False,
                                               lifespan='off'))
        engine.loop.submit(server.serve(sockets=[sock]))
        while not server.started:
            time.sleep(0.05)
        return sock.getsockname()[1]

    ports = {'vllm': on_the_loop(engine.loop.run(vllms_app())),
             'swiftnb': serve(engine, port=0, served_model_name=served_name).port,
             'unguarded': on_the_loop(engine.loop.run(build_vllm_app(engine, ServerOptions(), served_name)))}
    freeze_gc_heap()  # every app's objects alike, as each server freezes its own
    return ports


def measure(model: Optional[str] = None, concurrency: int = 256, num_prompts: int = 1024, input_len: int = 64,
            output_len: int = 128, reps: int = 4, engine_args: Optional[dict] = None, progress=print,
            vllm_serve: bool = False) -> dict:
    from swiftnb import DEMO_MODEL_DIR, get_vllm_engine
    model, engine_args = model or str(DEMO_MODEL_DIR), engine_args or {}
    with contextlib.ExitStack() as stack:
        served = {}  # name: (port, process id, its loop thread's id)
        if vllm_serve:  # started first: on CPU, vLLM's memory check counts what the other engine already took
            port = free_port()
            proc = stack.enter_context(running(vllm_serve_cmd(model, port, engine_args), port,
                                               Path(os.environ.get('TMPDIR', '/tmp'), 'bench-apps-vllm-serve.log')))
            served['vllm_serve'] = port, proc.pid, proc.pid
        engine = get_vllm_engine(model_id_or_path=model, defaults_for='server', **engine_args)
        stack.callback(engine.shutdown)
        loop = os.getpid(), engine.loop._thread.native_id
        # SERVED_NAME: the name bench_serving's client asks for
        served.update({name: (port, *loop) for name, port in start_apps(engine, SERVED_NAME).items()})
        names = tuple(served)
        runs = {name: [] for name in names}
        for rep in range(reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                port, *thread = served[name]
                params = [port, engine.model_dir, concurrency, num_prompts, input_len, output_len, rep + 1]
                before = loop_cpu_s(*thread)
                out = subprocess.run([sys.executable, '-c', CLIENT, str(HERE), json.dumps(params)],
                                     capture_output=True, text=True, check=True).stdout
                cpu_s = loop_cpu_s(*thread) - before
                run = {**json.loads(out.strip().splitlines()[-1]), 'cpu_ms_per_request': cpu_s * 1e3 / num_prompts}
                runs[name].append(run)
                progress(f'{name}: {run}')
    keys = ('tok_s', 'ttft_ms', 'tpot_ms', 'cpu_ms_per_request')
    return {'concurrency': concurrency, 'prompts': num_prompts,
            **{name: {key: statistics.median(r[key] for r in rs) for key in keys} for name, rs in runs.items()},
            'runs': runs}


def table(result: dict) -> str:
    peer = result['vllm']
    lines = [f'{"app":>10} | {"tok/s":>8} | {"TTFT ms":>8} | {"TPOT ms":>7} | {"loop CPU ms/request":>19} | '
             'tok/s, TTFT ratio to vLLM\'s app']
    for name in [name for name in (*APPS, 'vllm_serve') if name in result]:
        r = result[name]
        lines.append(f'{name:>10} | {r["tok_s"]:8.0f} | {r["ttft_ms"]:8.1f} | {r["tpot_ms"]:7.2f} | '
                     f'{r["cpu_ms_per_request"]:19.3f} | {r["tok_s"] / peer["tok_s"]:.2f}x, '
                     f'{r["ttft_ms"] / peer["ttft_ms"]:.2f}x')
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model')
    parser.add_argument('--concurrency', type=int, default=256)
    parser.add_argument('--num_prompts', type=int, default=1024)
    parser.add_argument('--input_len', type=int, default=64)
    parser.add_argument('--output_len', type=int, default=128)
    parser.add_argument('--reps', type=int, default=4)
    parser.add_argument('--vllm_serve', action='store_true', help="vLLM's own server process in the rotation too")
    args = parser.parse_args()
    result = measure(args.model, args.concurrency, args.num_prompts, args.input_len, args.output_len, args.reps,
                     vllm_serve=args.vllm_serve)
    print('\n' + table(result))


if __name__ == '__main__':
    main()
