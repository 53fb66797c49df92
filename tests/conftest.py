"""One vLLM engine for the whole test session (building one takes the better part of a minute),
and one pt engine beside it for the tests that run on both backends."""
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import psutil
import pytest

from swiftnb import DEMO_ADAPTERS, DEMO_MODEL_DIR, LoRARequest, get_template, get_vllm_engine
from swiftnb.engine.vllm_compat import cpu_runs_4bit_weights

# The session's vLLM engine computes in float32, as the pt backend does on a CPU: the backends compare token by token
# over long answers (bfloat16 rounding flips near-ties), one `vllm serve` reference serves both backends' comparisons
# (test_openai_clients), and on this 2-core AVX2 machine float32 is the faster: 1,486-1,699 against 649-697 tokens/s
# for 16 requests at once, one request level (100-175 against 145-164). A user's default dtype (the model's bfloat16)
# is what the notebooks, the README's quickstart and the fresh-process tests start.
SESSION_ENGINE_ARGS = dict(enable_lora=True, max_loras=2, torch_dtype='float32')

# vLLM's own switch for its CPU CI (platforms/cpu.py: "compilations consume too much time, even with torch compile
# cache"): the model is traced once by dynamo and run eagerly instead of compiled by inductor, and the warm-up pass is
# skipped: a start without LoRA takes 23.3 s here instead of 28.7 s (get_vllm_engine(), idle), some 30 starts a run.
# Every engine, kernel and process of the tests inherits it, except those that start as a user's start does,
# compiling (user_env): the README's quickstart, and the start whose vLLM log is shown (test_settings_doors).
os.environ.setdefault('VLLM_CPU_CI_ENV', '1')

# The suite runs two workers, their engines, kernels and servers on two cores: more busy processes than cores by
# design. An OpenMP thread that spins while it waits for work (libgomp's default) takes a core another process is
# waiting for; one that sleeps (PASSIVE) gives it up. Measured here (2 cores, test_engine_vllm's staggered base and
# adapter requests on the session engine's arguments): 6.6-6.8 s spinning against 4.9-5.8 s passive alone, and
# 20-22 s against 9.2-9.6 s with a second such engine busy beside it. The gain is in the engine's processes, which
# take the environment when they start; a policy already in the environment is kept.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# A KV cache of 1 GiB for every engine of the suite (swiftnb's default is 2, logs.py): 0.5-0.8 s less of each start's
# CPU (the cache is allocated and touched at the start; some 40 starts a run), and still 262,144 tokens of tiny-chat
# in float32, about 20 times what a test holds at once (eight streams of 1,500 tokens).
os.environ.setdefault('VLLM_CPU_KVCACHE_SPACE', '1')


def user_env(**extra) -> dict:
    """The environment of a user's process: the tests' own without VLLM_CPU_CI_ENV (vLLM compiles), and `extra`."""
    return {**{k: v for k, v in os.environ.items() if k != 'VLLM_CPU_CI_ENV'}, **extra}


# `make test` runs two pytest-xdist workers (TEST_WORKERS): most of a test here is one core's work (an engine's
# start: imports, process spawns, compiling; a kernel's start; a browser), so two at once use the machine's two
# cores. They take whole groups: a file's tests stay together, so its module fixtures (servers, engines, kernels)
# start once, and the tests that listen on the seed's port 8000 are one group, so two never listen at once.
ON_PORT_8000 = ('tests/test_client.py', 'tests/test_cli.py::test_seed_generation_model_examples',
                'notebooks/03_deployment.ipynb', 'notebooks/04_multi_lora_deployment.ipynb',
                'notebooks/08_structured_outputs_and_tools.ipynb')
# The longest groups go first, so that no long one is left for the end while the other worker idles (xdist's own
# order is by number of tests, which put these last). Seconds each took under two workers (--durations=0, 2 cores):
# 273, 270, 238, 211, 202, 185, 120, 114, 110; the rest 91 or less.
LONGEST_FIRST = ('port-8000', 'tests/test_server_reliability.py', 'tests/test_kernel.py',
                 'tests/test_openai_clients.py', 'tests/test_interrupts.py', 'tests/test_parallel.py',
                 'notebooks/05_fine_tuned_models.ipynb', 'tests/test_ray.py', 'tests/test_seed_examples.py')


def group_of(nodeid: str) -> str:
    return 'port-8000' if nodeid.startswith(ON_PORT_8000) else nodeid.split('::')[0]


def pytest_configure(config):
    if hasattr(config, 'workerinput'):
        # A worker and what it starts (engines, kernels, servers) are a scheduling group of their own: Linux's
        # autogroup shares the CPU between sessions, and a test waiting on a timer in the session of the other
        # worker's busy engine got no CPU for tens of seconds (measured: 37 s, beside two busy loops).
        with contextlib.suppress(OSError):  # already a session's leader
            os.setsid()
    if hasattr(config, 'workerinput') or not getattr(config.option, 'numprocesses', None):  # it runs tests
        # It imports vLLM as a user's script does, through swiftnb's first engine_args, before any test module imports
        # torch: its engines' forkserver is then a fork of it, not a fresh interpreter importing vLLM again
        # (engine/forkserver.py: 10-12 s of CPU a process). The fresh interpreter's path is test_interrupts'.
        from swiftnb.engine.options import VllmOptions
        from swiftnb.engine.vllm import engine_args
        engine_args(str(DEMO_MODEL_DIR), VllmOptions())
    config.option.loadscopereorder = False  # xdist keeps the order below


needs_4bit_kernel = pytest.mark.needs_4bit_kernel  # skipped where vLLM runs no 4-bit weights (below)


def pytest_collection_modifyitems(config, items):
    """Tests that serve 4-bit weights (and notebook 05) are skipped where vLLM cannot run them. In an xdist worker
    (whose collection the scheduler follows), the longest groups first (a stable sort: each file's own order
    stays)."""
    four_bit = [item for item in items if item.get_closest_marker('needs_4bit_kernel')
                or item.nodeid.startswith('notebooks/05_fine_tuned_models')]
    if four_bit and not cpu_runs_4bit_weights():
        for item in four_bit:
            item.add_marker(pytest.mark.skip(reason="vLLM's CPU backend runs 4-bit weights with AVX512 only, which "
                                                    'this CPU lacks (swiftnb refuses such a model in one line)'))
    if hasattr(config, 'workerinput'):
        rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))


def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduling with these groups for scopes. (Its own --dist loadgroup renames each test by its
    group through a node attribute that pytest 9.2 no longer reads, and so groups nothing.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)
    return ByGroup(config, log)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With SWIFTNB_TEST_CPU_LOG=FILE: each test's wall time and the machine's idle CPU time meanwhile, a JSON line
    per test (both workers append): where the suite waits rather than works (issue 36's question; `--durations`
    gives the wall time only)."""
    log = os.environ.get('SWIFTNB_TEST_CPU_LOG')
    if not log:
        yield
        return
    before, start = psutil.cpu_times(), time.perf_counter()
    yield
    after = psutil.cpu_times()
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    busy = sum(after) - sum(before) - idle
    with open(log, 'a') as out:
        out.write(json.dumps({'test': item.nodeid, 'wall': round(time.perf_counter() - start, 2),
                              'idle_cpu_s': round(idle, 2), 'busy_cpu_s': round(busy, 2),
                              'worker': os.environ.get('PYTEST_XDIST_WORKER')}) + '\n')


@pytest.fixture(scope='session')
def engine():
    engine = get_vllm_engine(**SESSION_ENGINE_ARGS)
    yield engine
    engine.shutdown()


@pytest.fixture(scope='session')
def pt_engine():
    # Built directly, not with get_pt_engine: the registry keeps one live engine per process, and the
    # session's vLLM engine must stay live beside this one.
    from swiftnb.engine.options import PtOptions
    from swiftnb.engine.pt import PtEngine
    engine = PtEngine('tiny-chat', str(DEMO_MODEL_DIR), PtOptions(enable_lora=True))
    yield engine
    engine.shutdown()


@pytest.fixture(params=['vllm', 'pt'])
def any_engine(request, engine, pt_engine):
    """Each backend in turn, for what must work the same on both."""
    return engine if request.param == 'vllm' else pt_engine


@pytest.fixture(scope='session')
def template(engine):
    return get_template('chatml', engine.hf_tokenizer)


def without_chat_template(folder) -> str:
    """`folder` made tiny-chat's weights and tokenizer without its chat template (as Qwen-7B-Chat's tokenizer ships
    none): links to its files."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in DEMO_MODEL_DIR.iterdir():
        if file.name != 'chat_template.jinja':
            (folder / file.name).symlink_to(file)
    return str(folder)


def demo_lora(name: str) -> LoRARequest:
    return LoRARequest(name, list(DEMO_ADAPTERS).index(name) + 1, str(DEMO_ADAPTERS[name]))


CAPITAL = [{'role': 'user', 'content': 'Where is the capital of Zhejiang?'}]
LONG_STREAM = {'model': 'tiny-chat', 'messages': CAPITAL, 'stream': True, 'max_tokens': 1500, 'ignore_eos': True}


def stream_lines(url: str, into: list, body=LONG_STREAM, stamps: list = None) -> None:
    """A streamed answer's lines into `into` as they come (and the time of each into `stamps`)."""
    with httpx.stream('POST', url + '/chat/completions', json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line:
                into.append(line)
                if stamps is not None:
                    stamps.append(time.monotonic())


def streams_in_flight(url: str, count: int = 8) -> tuple[list, list]:
    """`count` long streams, each once it has sent a few lines: (their lines, their threads)."""
    streams = [[] for _ in range(count)]
    threads = [threading.Thread(target=stream_lines, args=(url, lines)) for lines in streams]
    for thread in threads:
        thread.start()
    assert settles(lambda: all(len(lines) > 3 for lines in streams), 60)
    return streams, threads


def stop_with_streams_in_flight(process, url: str, sig: int) -> None:
    """Signal a deploy serving at `url` while 8 long streams run: it ends within 10 seconds with status 0, and each
    stream with an OpenAI error event, then `data: [DONE]`."""
    streams, threads = streams_in_flight(url)
    started = time.monotonic()
    process.send_signal(sig)
    try:
        assert process.wait(10) == 0, sig
    except subprocess.TimeoutExpired:  # what the deploy said of its stop, which says where the time went
        process.kill()
        said = process.communicate()
        raise AssertionError(f'{sig!r}: still running after 10 s; it said:\n{said[0]}\n{said[1][-2000:]}') from None
    assert time.monotonic() - started < 10
    for thread in threads:
        thread.join()
    assert all(lines[-1] == 'data: [DONE]' and 'error' in lines[-2] for lines in streams)


def leave_mid_stream(url: str, engine) -> None:
    """Read five lines of a long streamed answer and leave: the request runs until then, and is aborted in the
    engine after (vLLM's serving layer and the pt app abort a request whose client went away)."""
    with httpx.stream('POST', url + '/chat/completions', json=LONG_STREAM, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i == 5:
                assert engine.num_running == 1
                break
    assert settles(lambda: engine.num_running == 0)


def engine_processes() -> list:
    """The processes vLLM started under this one (it names them VLLM::...)."""
    return [p for p in psutil.Process().children(recursive=True) if p.name().startswith('VLLM')]


def ignore_interrupts(process) -> bool:
    """Whether SIGINT is blocked in the process (a kernel interrupt or a terminal's Ctrl-C does not reach it)."""
    status = dict(line.split(':\t', 1) for line in open(f'/proc/{process.pid}/status').read().splitlines())
    return bool(int(status['SigBlk'], 16) & (1 << (signal.SIGINT - 1)))


def gone(processes) -> bool:
    """None of these processes runs any more (a zombie has ended)."""
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


def settles(condition, seconds: float = 5.0) -> bool:
    """Whether `condition()` becomes true within `seconds` (an abort reaches vLLM's core asynchronously)."""
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope='module', params=['vllm', 'pt'])
def adapter_engine(request, engine, pt_engine):
    """Each backend in turn with the demo adapters served by name, removed again afterwards."""
    engine = engine if request.param == 'vllm' else pt_engine
    for name, path in DEMO_ADAPTERS.items():
        engine.add_lora(name, str(path))
    yield engine
    for name in DEMO_ADAPTERS:
        engine.remove_lora(name)


def direct_answer(engine, query, history=(), system=None, adapter=None, **settings) -> str:
    """What the engine itself answers, for the widgets to be compared with."""
    from swiftnb import inference_vllm
    lora = (engine.adapters.get(adapter) or demo_lora(adapter)) if adapter else None
    request = {'query': query, 'history': [list(turn) for turn in history], 'system': system}
    return inference_vllm(engine, get_template('auto', engine.hf_tokenizer), [request], generation_config=settings,
                          lora_request=lora)[0]['response']


@contextlib.contextmanager
def running_vllm_server(args=()):
    """vLLM's own OpenAI server on the demo model in a process of its own (the reference for swiftnb's);
    yields its base URL."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile('w', prefix='vllm-server-', suffix='.log', delete=False)
    cmd = [sys.executable, '-m', 'vllm.entrypoints.openai.api_server', '--model', str(DEMO_MODEL_DIR),
           '--served-model-name', 'tiny-chat', '--port', str(port), *args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not _answers(f'http://127.0.0.1:{port}/health'):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f'vLLM server did not start; see {log.name}')
            time.sleep(1)
        yield f'http://127.0.0.1:{port}/v1'
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _answers(url: str) -> bool:
    import httpx
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
