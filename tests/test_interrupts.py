"""The kernel's interrupt stops the cell, never the engine, in real kernels (jupyter_client), on both backends and
with tensor parallel 2: during an engine start, a stream, a batch, an awaited call and stream, a widget's answer,
a %%chat cell, twice in a row, by signal and by interrupt_request message, and while the kernel's server streams
to a client. After each, the cell shows a short KeyboardInterrupt (or, for an awaiting cell, ipykernel's
CancelledError) that says its requests were aborted, the engine runs none, the next cell answers with no new
engine, and no process was started or lost. A restart of the kernel, and its death, leave no engine process."""
import json
import queue
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from conftest import gone, settles
from jupyter_kernels import Kernel

pytestmark = pytest.mark.slow

QUESTION = "{'query': 'Where is the capital of Zhejiang?'}"
LONG = "{'query': 'Tell me a long story.'}"

TOKENS = 600
SETUP = f"""
from swiftnb import *
import json, threading, time
LONG = {{'max_tokens': {TOKENS}, 'ignore_eos': True}}  # 9 s of answer in a kernel here: room to interrupt it

def when_running(path):
    '''Touch `path` once the engine runs a request (the test interrupts then).'''
    def watch():
        while engine.num_running == 0:
            time.sleep(0.01)
        open(path, 'w').close()
    threading.Thread(target=watch, daemon=True).start()

def ask():
    return inference_vllm(engine, template, [{QUESTION}])[0]['response']
"""

# (what is interrupted, its cell: FLAG is the file when_running touches, the exception the cell shows). Each cell
# makes its call again until it is interrupted: under load the test process itself may wait long for a CPU after
# it saw the flag (measured beside two busy loops: 37 s, nine answers), and a cell whose answer ended by then would
# end with no error. An interrupt that is lost still fails the test: the cell then never ends.
AGAIN = 'while True:\n'
DOORS = {
    'stream': ("when_running(FLAG)\n" + AGAIN +
               f"    for d in inference_stream_vllm(engine, template, [{LONG}], generation_config=LONG):\n"
               "        pass", 'KeyboardInterrupt'),
    'batch': (f"when_running(FLAG)\n{AGAIN}    inference_vllm(engine, template, [{LONG}] * 8, generation_config=LONG)",
              'KeyboardInterrupt'),
    'await': (f"when_running(FLAG)\n{AGAIN}    await inference_vllm_async(engine, template, [{LONG}] * 4, "
              "generation_config=LONG)", 'CancelledError'),
    'async stream': ("when_running(FLAG)\n" + AGAIN +
                     f"    async for d in inference_stream_vllm_async(engine, template, [{LONG}], "
                     "generation_config=LONG):\n        pass", 'CancelledError'),
    'widget': ("from swiftnb.widgets import ChatWidget\n"
               "chat = ChatWidget(engine, **LONG)\n"
               f"when_running(FLAG)\n{AGAIN}    chat.send('Tell me a long story.')", 'KeyboardInterrupt'),
    'ms-swift 4.x': ("when_running(FLAG)\n" + AGAIN +
                     "    for c in InferEngine(engine).infer([InferRequest([{'role': 'user', 'content': 'Tell me a long "
                     "story.'}])], RequestConfig(stream=True, **LONG))[0]:\n        pass", 'KeyboardInterrupt'),
    # a %%chat cell is, once IPython has read it, this call (its message is the cell's text); its answer follows
    # the engine's defaults, made long here
    '%%chat': ("engine.generation_config = defaults.model_copy(update=LONG)\n"
               f"when_running(FLAG)\n{AGAIN}    get_ipython().run_cell_magic('chat', '', 'Tell me a long story.')",
               'KeyboardInterrupt'),
}
WORDS = 'was stopped and its requests aborted; the engine is ready'


def interrupt_when_running(kernel: Kernel, code: str, flag: Path, by: str = 'signal', times: int = 1):
    """Start the cell, interrupt it once the engine runs its requests; the cell and the interrupt's time."""
    msg, started = kernel.start(code.replace('FLAG', repr(str(flag)))), time.time()
    assert settles(flag.exists, 120), kernel.wait(msg, 1).traceback
    time.sleep(0.2)  # tokens are flowing
    at = kernel.interrupt(by)
    for _ in range(times - 1):
        time.sleep(0.05)
        kernel.interrupt(by)
    try:
        cell = kernel.wait(msg, timeout=120)
    except queue.Empty:
        pytest.fail(f'the interrupt was lost: the cell still runs 120 s after it\n{code}')
    cell.interrupted_at, cell.started_at = at, started
    return cell, at


def check_short(cell, ename: str, door: str = ''):
    """The interrupted cell's error: the given kind, saying what happened, as the cell's line and the message
    (IPython names a file's frame 'File path:line'; a cell's is 'Cell In[n]')."""
    timing = getattr(cell, 'interrupted_at', None) and {  # a cell that ended before the interrupt: the test was late
        'interrupted after': round(cell.interrupted_at - cell.started_at, 2),
        'cell ended after': round(cell.ended_at - cell.started_at, 2)}
    assert cell.error is not None and cell.error['ename'] == ename, (door, timing, cell.text, cell.traceback)
    assert WORDS in cell.error['evalue'], cell.traceback
    assert 'File ' not in cell.traceback and len(cell.traceback.splitlines()) <= 10, cell.traceback


def next_answer(kernel: Kernel, at: float) -> float:
    """The next cell finds no request running and answers; seconds from the interrupt to that answer."""
    running, answer = json.loads(kernel.output("print(json.dumps([engine.num_running, ask()]))"))
    assert running == 0 and 'Hangzhou' in answer, (running, answer)
    return time.time() - at


def pids(kernel: Kernel) -> set:
    return {p.pid for p in kernel.process.children(recursive=True)}


def interrupted_start(kernel: Kernel, code: str, ready) -> None:
    """Interrupt an engine start once `ready(engine processes)`: a short message, and none of them left."""
    msg = kernel.start(code)
    assert settles(lambda: ready(kernel.engine_processes()), 120)
    started = kernel.engine_processes()
    kernel.interrupt()
    cell = kernel.wait(msg)
    assert cell.error['ename'] == 'KeyboardInterrupt' and 'none of its processes is left' in cell.error['evalue'], \
        (cell.error, cell.text)
    assert 'File ' not in cell.traceback, cell.traceback
    assert settles(lambda: gone(started), 10)


def test_engines_outlive_every_interrupt(tmp_path):
    """One kernel: the vLLM engine at every door; after a restart, the pt engine, then tensor parallel 2."""
    kernel = Kernel()
    took = {}
    try:
        kernel.output(SETUP)
        interrupted_start(kernel, 'engine = get_vllm_engine(max_model_len=2048)', lambda processes: processes)
        kernel.output("engine = get_vllm_engine(max_model_len=2048)\n"
                      "template = get_template('chatml', engine.hf_tokenizer)\nprint(ask())")
        engine_pids, before = {p.pid for p in kernel.engine_processes()}, pids(kernel)
        kernel.output("%load_ext swiftnb\ndefaults = engine.generation_config")
        for door, (code, ename) in DOORS.items():
            by = 'message' if door == 'batch' else 'signal'  # interrupt_mode 'message' signals the group too
            cell, at = interrupt_when_running(kernel, code, tmp_path / door, by)
            check_short(cell, ename, door)
            kernel.output("engine.generation_config = defaults")  # as it was before the %%chat door
            took[door] = next_answer(kernel, at)
        # an interrupt in the cell's own code between two parts of a stream (a slow loop body): the cell's own
        # KeyboardInterrupt, and the stream's requests are aborted before the cell ends
        cell, at = interrupt_when_running(kernel, "when_running(FLAG)\n" + AGAIN +
                                          f"    for d in inference_stream_vllm(engine, template, [{LONG}], "
                                          "generation_config=LONG):\n        time.sleep(0.05)", tmp_path / 'own')
        assert cell.error['ename'] == 'KeyboardInterrupt', cell.traceback
        took['own code'] = next_answer(kernel, at)
        # twice in a row: the second lands while the first is being handled, in swiftnb's abort or in IPython's
        # display of the first (which may then show nothing): the engine does not mind
        cell, at = interrupt_when_running(kernel, DOORS['stream'][0], tmp_path / 'twice', times=2)
        assert cell.error is None or cell.error['ename'] == 'KeyboardInterrupt', cell.traceback
        took['twice'] = next_answer(kernel, at)
        assert pids(kernel) == before  # no process started or lost
        assert all(psutil.Process(pid).is_running() for pid in engine_pids)
        print('seconds from the interrupt to the next answer:', json.dumps({k: round(v, 2) for k, v in took.items()}))

        # the kernel's server keeps streaming to its client through an interrupt of a cell, and of the idle kernel
        url = kernel.output("server = serve(engine, port=0)\nprint(server.url)").strip()
        chunks, ended = [], []
        body = {'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'Tell me a long story.'}],
                'stream': True, 'max_tokens': TOKENS, 'ignore_eos': True, 'stream_options': {'include_usage': True}}

        def read():
            with httpx.stream('POST', url + '/chat/completions', json=body, timeout=120) as response:
                chunks.extend(line for line in response.iter_lines() if line.startswith('data: {'))
            ended.append(time.time())
        reader = threading.Thread(target=read)
        reader.start()
        assert settles(lambda: chunks or json.loads(kernel.output('print(engine.num_running)')), 30)
        # the interrupt waits for the cell to run: one sent before would reach the idle kernel (seen under CI's load)
        sleeping = tmp_path / 'sleeping'
        msg = kernel.start(f"open({str(sleeping)!r}, 'w').close()\ntime.sleep(30)")
        assert settles(sleeping.exists, 60)
        kernel.interrupt()
        assert kernel.wait(msg).error['ename'] == 'KeyboardInterrupt'
        at = kernel.interrupt()  # the kernel is idle now
        reader.join(120)
        # the whole answer, streamed on through both interrupts
        assert json.loads(chunks[-1][6:])['usage']['completion_tokens'] == TOKENS, chunks[-1]
        assert json.loads(chunks[-2][6:])['choices'][0]['finish_reason'] == 'length', chunks[-2]
        assert ended[0] > at, (ended, at)
        answer = httpx.post(url + '/chat/completions', timeout=60, json={
            'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'Where is the capital of Zhejiang?'}]})
        assert 'Hangzhou' in answer.json()['choices'][0]['message']['content']

        # a widget answering from its Send button while no cell runs: the interrupt of the idle kernel leaves it
        kernel.output(f"when_running({str(tmp_path / 'send')!r})\nsent = chat.submit('Tell me another story.')")
        assert settles((tmp_path / 'send').exists, 30)
        at = kernel.interrupt()
        done = json.loads(kernel.output(
            "sent.result(60)\nanswer = chat.last_answer\nprint(json.dumps([answer.tokens, answer.finish_reason, "
            "engine.num_running, time.time() - (time.perf_counter() - answer.finished_at)]))"))
        assert done[:3] == [TOKENS, 'length', 0] and done[3] > at, (done, at)  # the whole answer, ended after it

        # a restart shuts the engine down with the old kernel; no process of it is left
        kernel.restart()
        assert settles(lambda: not any(psutil.pid_exists(pid) for pid in engine_pids), 30)
        assert kernel.output('print(1 + 1)').strip() == '2'

        # in the new kernel, the pt engine: the doors it has
        kernel.output(SETUP)
        kernel.output("engine = get_pt_engine(max_model_len=2048)\n"
                      "template = get_template('chatml', engine.hf_tokenizer)\nprint(ask())\n"
                      # the 4.x door renders in the engine loop's thread pool: its one worker is there from now on
                      "InferEngine(engine).infer([InferRequest([{'role': 'user', 'content': 'Hi'}])])")
        threads = kernel.output("print(sorted(t.name for t in threading.enumerate()))")
        for door in ('stream', 'batch', 'await', 'widget', 'ms-swift 4.x'):
            code, ename = DOORS[door]
            cell, at = interrupt_when_running(kernel, code, tmp_path / f'pt {door}')
            check_short(cell, ename)
            next_answer(kernel, at)
        assert kernel.output("print(sorted(t.name for t in threading.enumerate()))") == threads  # its batch thread

        # then tensor parallel 2 (replacing it): an interrupted start leaves none of its three processes, the ranks
        # outlive an interrupted stream, and die with the kernel when it is killed (kill -9)
        start = "engine = get_vllm_engine(max_model_len=2048, tensor_parallel_size=2)"
        interrupted_start(kernel, start, lambda processes: len(processes) == 3)  # the core and both ranks
        kernel.output(start + "\ntemplate = get_template('chatml', engine.hf_tokenizer)\nprint(ask())")
        processes = kernel.engine_processes()
        assert sorted(p.name() for p in processes) == ['VLLM::EngineCore', 'VLLM::Worker_TP0', 'VLLM::Worker_TP1']
        # torch ran in this kernel before its first vLLM engine (the pt engine's): its engines' forkserver is a fresh
        # interpreter, no fork of the kernel (engine/forkserver.py)
        assert 'multiprocessing.forkserver' in kernel.output(
            "import psutil\nfrom swiftnb.engine.forkserver import server_pid\n"
            "print(psutil.Process(server_pid()).cmdline())")
        cell, at = interrupt_when_running(kernel, DOORS['stream'][0], tmp_path / 'tp stream')
        check_short(cell, 'KeyboardInterrupt')
        next_answer(kernel, at)
        assert all(p.is_running() for p in processes)
        kernel.process.kill()
        assert settles(lambda: gone(processes), 15), [(p.name(), p.status()) for p in processes if p.is_running()]
    finally:
        kernel.shutdown()


