"""What the server does under abuse and at its end: bodies too big, adapters from anywhere, browsers, stopping with
streams in flight, an engine core that dies, a deploy stopped with SIGTERM (one killed with SIGKILL: test_cli).
Real HTTP on loopback."""
import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from conftest import (CAPITAL, LONG_STREAM, engine_processes, gone, settles, stop_with_streams_in_flight,
                      stream_lines, streams_in_flight)
from swiftnb import DEMO_ADAPTERS, DEMO_MODEL_DIR
from swiftnb.server import BackgroundServer


@pytest.fixture(params=['vllm', 'pt'])
def serving_engine(request, engine, pt_engine):
    return engine if request.param == 'vllm' else pt_engine


def _answer(server) -> str:
    resp = httpx.post(server.url + '/chat/completions', json={'model': 'tiny-chat', 'messages': CAPITAL,
                                                               'temperature': 0}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()['choices'][0]['message']['content']


def test_a_huge_body_is_refused_at_once_while_a_stream_keeps_flowing(serving_engine):
    server = BackgroundServer(serving_engine, port=0)
    try:
        lines, stamps = [], []
        # long enough to outlive the refusals below on a busy machine (checked), no longer: it runs to its end
        body = {**LONG_STREAM, 'max_tokens': 600}
        streaming = threading.Thread(target=stream_lines, args=(server.url, lines, body, stamps))
        streaming.start()
        assert settles(lambda: len(lines) > 5, 30)
        big = json.dumps({'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'a b ' * 2_500_000}]})
        started = time.monotonic()
        refused = httpx.post(server.url + '/chat/completions', content=big, timeout=60,
                             headers={'Content-Type': 'application/json'})
        assert refused.status_code == 413 and 'max_request_bytes' in refused.json()['error']['message']
        # under the byte limit but far over the context: refused before it is tokenised, as vLLM does
        long = json.dumps({'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'a b ' * 1_500_000}]})
        too_long = httpx.post(server.url + '/chat/completions', content=long, timeout=60,
                              headers={'Content-Type': 'application/json'})
        assert too_long.status_code == 400 and 'characters' in too_long.json()['error']['message']
        # sent without a length (chunked): counted as it comes, refused at the limit
        chunked = httpx.post(server.url + '/chat/completions', timeout=60, headers={'Content-Type': 'application/json'},
                             content=(big[i:i + (1 << 20)].encode() for i in range(0, len(big), 1 << 20)))
        assert chunked.status_code == 413
        finished = time.monotonic()
        assert httpx.get(server.url.removesuffix('/v1') + '/health').status_code == 200
        streaming.join()
        gaps = [b - a for a, b in zip(stamps, stamps[1:]) if started <= b <= finished + 1]
        assert stamps[-1] > finished and gaps and max(gaps) < 1.0, (stamps[-1] - finished, max(gaps, default=None))
        assert lines[-1] == 'data: [DONE]'
        assert _answer(server).startswith('The capital of Zhejiang is Hangzhou.')
    finally:
        server.stop()


def test_adapters_load_only_from_the_allowed_directories(serving_engine, tmp_path):
    allowed = str(DEMO_ADAPTERS['kakarot'].parent)
    server = BackgroundServer(serving_engine, port=0, lora_dirs=[allowed])

    def load(name, path):
        return httpx.post(server.url + '/load_lora_adapter', json={'lora_name': name, 'lora_path': str(path)})
    try:
        outside = [tmp_path, '/etc', '/no/such/dir', f'{allowed}/../../..']
        for path in outside:  # the same answer whether or not the path exists: nothing is looked at
            refused = load('evil', path)
            assert refused.status_code == 400, path
            assert 'outside the directories this server loads adapters from' in refused.json()['error']['message']
            assert '--lora_dirs' in refused.json()['error']['message']
        assert load('goku', DEMO_ADAPTERS['kakarot']).status_code == 200
        assert 'goku' in serving_engine.adapters
    finally:
        server.stop()
        serving_engine.adapters.pop('goku', None)


def test_cors_is_off_unless_origins_are_given_and_models_show_no_paths(serving_engine):
    preflight = {'Origin': 'http://example.com', 'Access-Control-Request-Method': 'POST'}
    closed = BackgroundServer(serving_engine, port=0, lora_modules={'kakarot': str(DEMO_ADAPTERS['kakarot'])})
    try:
        answer = httpx.options(closed.url + '/chat/completions', headers=preflight)
        assert 'access-control-allow-origin' not in answer.headers
        listing = httpx.get(closed.url + '/models').json()['data']
        assert {card['id']: card['root'] for card in listing} == {'tiny-chat': 'tiny-chat', 'kakarot': 'kakarot'}
        assert str(DEMO_MODEL_DIR) not in json.dumps(listing)
    finally:
        closed.stop()
    opened = BackgroundServer(serving_engine, port=0, allowed_origins=['http://example.com'], show_model_paths=True)
    try:
        answer = httpx.options(opened.url + '/chat/completions', headers=preflight)
        assert answer.status_code == 200 and answer.headers['access-control-allow-origin'] == 'http://example.com'
        other = httpx.options(opened.url + '/chat/completions', headers={**preflight, 'Origin': 'http://evil.com'})
        assert 'access-control-allow-origin' not in other.headers
        roots = {card['id']: card['root'] for card in httpx.get(opened.url + '/models').json()['data']}
        assert roots['tiny-chat'] == serving_engine.model_dir and roots['kakarot'] == str(DEMO_ADAPTERS['kakarot'])
    finally:
        opened.stop()
        serving_engine.remove_lora('kakarot')


def test_stop_ends_streams_in_flight_with_an_error_event_and_done(serving_engine):
    server = BackgroundServer(serving_engine, port=0)
    streams, threads = streams_in_flight(server.url)
    stopping = threading.Thread(target=server.stop, kwargs={'grace': 1.5})
    started = time.monotonic()
    stopping.start()
    time.sleep(0.5)  # while it drains: new requests are told, not queued
    late = httpx.post(server.url + '/chat/completions', json={'model': 'tiny-chat', 'messages': CAPITAL})
    assert late.status_code == 503 and 'stopping' in late.json()['error']['message']
    stopping.join()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 5
    assert server.cut_off == 8  # how many stop() ended
    for lines in streams:
        assert lines[-1] == 'data: [DONE]'
        assert json.loads(lines[-2].removeprefix('data: '))['error']['code'] == 503
    assert settles(lambda: serving_engine.num_running == 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + '/models')


@pytest.mark.slow
def test_a_dead_engine_core_is_reported_and_the_kernel_can_start_again():
    from swiftnb import get_template, inference_vllm
    from swiftnb.engine.vllm import VllmEngine
    from swiftnb.errors import EngineClosedError
    before = {p.pid for p in engine_processes()}  # the session's engines'
    engine = VllmEngine('tiny-chat', str(DEMO_MODEL_DIR))  # its own: this test kills it
    server = BackgroundServer(engine, port=0)
    # vLLM's processes only: multiprocessing's resource tracker, started with the process's first engine, serves
    # the whole process and stays
    ours = [p for p in engine_processes() if p.pid not in before]
    try:
        assert _answer(server).startswith('The capital')
        next(p for p in ours if 'EngineCore' in p.name()).kill()
        health = server.url.removesuffix('/v1') + '/health'
        assert settles(lambda: httpx.get(health).status_code == 503, 10)
        for resp in (httpx.get(health), httpx.post(server.url + '/chat/completions',
                                                   json={'model': 'tiny-chat', 'messages': CAPITAL})):
            assert resp.status_code == 503
            message = resp.json()['error']['message']
            assert "engine core process died" in message and 'get_vllm_engine' in message
        assert engine.closed and 'died' in engine.closed_because
        with pytest.raises(EngineClosedError, match='engine core process died'):
            inference_vllm(engine, get_template('chatml', engine.hf_tokenizer), [{'query': 'hi'}])
    finally:
        server.stop()
        engine.shutdown()
    assert settles(lambda: gone(ours), 10)


def _deploy(*flags) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-m', 'swiftnb.cli', 'deploy', '--port', '0', *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _serving_url(process: subprocess.Popen) -> str:
    """The URL a deploy prints once it serves (after its start's progress lines, which go to the same pipe)."""
    lines = []
    while not lines or 'serving' not in lines[-1]:
        lines.append(process.stdout.readline())
        assert lines[-1], ''.join(lines)  # the deploy ended before it served
    return lines[-1].split(' at ')[1].split()[0]


def test_a_deploy_stops_on_sigterm_within_10_seconds():
    """SIGTERM (docker stop, systemd) stops a deploy at once, ending its streams. A deploy stops on SIGTERM as on
    Ctrl-C (one handler, cli._stop_on_signals; test_cli stops a vLLM and a pt deploy with SIGINT, and kills one with
    SIGKILL), so the SIGTERM'd one is a pt deploy, which starts in seconds."""
    stopped = _deploy('--infer_backend', 'pt')
    try:
        stop_with_streams_in_flight(stopped, _serving_url(stopped), signal.SIGTERM)
        assert 'swiftnb: stopped (8 requests cut off)' in stopped.stdout.read()
    finally:
        stopped.kill()
