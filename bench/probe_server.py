"""The server's reliability figures (issue 15's table): a 10 MB body beside a stream, stop with 8 streams in flight,
`swiftnb deploy` stopped by SIGTERM / SIGINT / SIGKILL, an engine core killed under the server. Prints a table.

    python bench/probe_server.py
"""
import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil

from swiftnb import get_pt_engine, get_vllm_engine, serve

STREAM = {'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'Tell me a story'}], 'stream': True,
          'max_tokens': 1500, 'ignore_eos': True}


def _stream(url: str, lines: list, stamps: list) -> None:
    try:
        with httpx.stream('POST', url + '/chat/completions', json=STREAM, timeout=120) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    stamps.append(time.monotonic())
    except httpx.HTTPError as error:  # the server was killed
        lines.append(type(error).__name__)


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def big_body(url: str) -> str:
    lines, stamps = [], []
    streaming = threading.Thread(target=_stream, args=(url, lines, stamps))
    streaming.start()
    _wait(lambda: len(lines) > 5, 60)
    body = json.dumps({'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'a b ' * 2_500_000}]})
    started = time.monotonic()
    resp = httpx.post(url + '/chat/completions', content=body, timeout=120, headers={'Content-Type': 'application/json'})
    took = time.monotonic() - started
    health_started = time.monotonic()
    httpx.get(url.removesuffix('/v1') + '/health')
    health = time.monotonic() - health_started
    streaming.join()
    gap = max(b - a for a, b in zip(stamps, stamps[1:]) if b >= started)
    return f'{resp.status_code} in {took:.2f} s; /health {health:.3f} s; stream gap {gap:.2f} s'


def stop_in_flight(server, engine) -> str:
    streams = [([], []) for _ in range(8)]
    threads = [threading.Thread(target=_stream, args=(server.url, *s)) for s in streams]
    for thread in threads:
        thread.start()
    _wait(lambda: all(len(lines) > 3 for lines, _ in streams), 60)
    started = time.monotonic()
    server.stop()
    took, cut = time.monotonic() - started, server.cut_off
    for thread in threads:
        thread.join()
    done = sum(lines[-1] == 'data: [DONE]' and 'error' in lines[-2] for lines, _ in streams)
    _wait(lambda: engine.num_running == 0, 5)
    return f'{took:.1f} s, {cut} cut, {done}/8 got an error event + [DONE], num_running {engine.num_running}'


def deploy_signal(sig) -> str:
    process = subprocess.Popen([sys.executable, '-m', 'swiftnb.cli', 'deploy', '--port', '0'],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # progress: stderr
    url = process.stdout.readline().split(' at ')[1].split()[0]
    children = psutil.Process(process.pid).children(recursive=True)
    streams = [([], []) for _ in range(8)]
    threads = [threading.Thread(target=_stream, args=(url, *s)) for s in streams]
    for thread in threads:
        thread.start()
    _wait(lambda: all(len(lines) > 3 for lines, _ in streams), 60)
    started = time.monotonic()
    process.send_signal(sig)
    process.wait(60)
    took = time.monotonic() - started
    for thread in threads:
        thread.join()
    done = sum(lines[-1] == 'data: [DONE]' for lines, _ in streams)

    def alive():
        return [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    _wait(lambda: not alive(), 10)
    left = alive()
    for child in left:
        child.kill()
    return f'exit {process.returncode} after {took:.1f} s, {done}/8 streams ended with [DONE], ' \
           f'{len(left)} engine processes alive 10 s later'


def dead_core() -> str:
    from swiftnb.engine.vllm import VllmEngine
    from swiftnb import DEMO_MODEL_DIR
    from swiftnb.server import BackgroundServer
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    engine = VllmEngine('tiny-chat', str(DEMO_MODEL_DIR))
    server = BackgroundServer(engine, port=0)
    core = next(p for p in psutil.Process().children(recursive=True) if p.pid not in before and 'EngineCore' in p.name())
    core.kill()
    started = time.monotonic()
    health = server.url.removesuffix('/v1') + '/health'
    _wait(lambda: httpx.get(health).status_code == 503, 30)
    noticed = time.monotonic() - started
    chat = httpx.post(server.url + '/chat/completions', json={'model': 'tiny-chat', 'messages': STREAM['messages']})
    server.stop()
    engine.shutdown()
    return f'/health 503 after {noticed:.1f} s; a chat: {chat.status_code} "{chat.json()["error"]["message"][:60]}..."'


def main() -> int:
    rows = []
    for backend in ('vllm', 'pt'):
        engine = get_vllm_engine() if backend == 'vllm' else get_pt_engine()
        server = serve(engine, port=0)
        rows.append((f'10 MB chat body beside a stream ({backend})', big_body(server.url)))
        rows.append((f'server.stop() with 8 streams ({backend})', stop_in_flight(server, engine)))
        engine.shutdown()
    rows.append(('engine core SIGKILLed under the server (vllm)', dead_core()))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        rows.append((f'swiftnb deploy, 8 streams, {sig.name}', deploy_signal(sig)))
    print('| probe | measured |\n|---|---|')
    for probe, figure in rows:
        print(f'| {probe} | {figure} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
