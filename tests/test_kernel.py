"""The engine inside a real Jupyter kernel (nbclient), after a user's mistakes (each a short traceback, a failed start
its root cause): sync calls and top-level await in cells, with and without nest_asyncio (applied in the same kernel,
before an engine's start), engine reuse on re-run, replacement without orphan processes (also when swapping vLLM and
pt backends), and no vLLM log lines in cell output."""
import json
import re
import time

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

CELLS = [
    # 0: set-up
    "from swiftnb import get_vllm_engine, get_template, inference_vllm, inference_vllm_async\n"
    "import os, psutil, json\n"
    "me = psutil.Process(os.getpid())",
    # 1: load the engine
    "engine = get_vllm_engine()\n"
    "template = get_template('chatml', engine.hf_tokenizer)",
    # 2: the sync API in a cell (the kernel's loop is running)
    "print(inference_vllm(engine, template, [{'query': 'Where is the capital of Zhejiang?'}])[0]['response'])",
    # 3: top-level await
    "resp = await inference_vllm_async(engine, template, [{'query': 'Hello!'}])\n"
    "print(resp[0]['response'])",
    # 4: re-running the cell reuses the live engine: the same object, and no process started
    "before = {p.pid for p in me.children(recursive=True)}\n"
    "again = get_vllm_engine()\n"
    "print(json.dumps({'same': again is engine, 'new': len({p.pid for p in me.children(recursive=True)} - before)}))",
    # 5: an engine built without enable_lora refuses an adapter with a clear error, and keeps serving
    "from swiftnb import LoRARequest, AdapterError, DEMO_ADAPTERS\n"
    "try:\n"
    "    inference_vllm(engine, template, [{'query': 'who are you?'}],\n"
    "                   lora_request=LoRARequest('kakarot', 1, str(DEMO_ADAPTERS['kakarot'])))\n"
    "except AdapterError as e:\n"
    "    print('refused:', e)\n"
    "print(inference_vllm(engine, template, [{'query': 'who are you?'}])[0]['response'])",
    # 6: a replacement with other arguments; count the kernel's child processes before and after (cell 9 replaces
    # twice more, vllm -> pt -> vllm, and checks that nothing of the replaced engines is left)
    "counts = [len(me.children(recursive=True))]\n"
    "engine = get_vllm_engine(max_model_len=768)\n"
    "counts.append(len(me.children(recursive=True)))\n"
    "answer = inference_vllm(engine, template, [{'query': 'Hello!'}])[0]['response']\n"
    "from swiftnb import logs\n"
    "from swiftnb.engine.forkserver import server_pid\n"
    "engine_server = psutil.Process(server_pid())\n"
    "print(json.dumps({'counts': counts, 'max_model_len': engine.max_model_len, 'answer': answer,\n"
    "                  'children': [p.pid for p in me.children(recursive=True)],\n"
    "                  'server': [engine_server.ppid() == me.pid, engine_server.cmdline()],\n"
    "                  'bars': [line.strip() for line in open(logs.log_file()) if 'shards: 100%' in line]}))",
    # 7: the kernel's engine as an endpoint; the cell returns at once
    "from swiftnb import serve\n"
    "server = serve(engine, port=0)",
    # 8: while this cell keeps the kernel busy, the server (on the engine's loop thread) answers
    "import subprocess\n"
    "body = json.dumps({'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'Hello!'}]})\n"
    "out = subprocess.run(['curl', '-s', server.url + '/chat/completions', '-H', 'Content-Type: application/json',\n"
    "                      '-d', body], capture_output=True, text=True, timeout=120).stdout\n"
    "print(json.loads(out)['choices'][0]['message']['content'])\n"
    "server.stop()",
    # 9: swap backends in the same kernel: vllm -> pt (-> vllm in cell 10), each replacing the other
    "from swiftnb import get_pt_engine\n"
    "# (multiprocessing's resource tracker and forkserver serve the whole kernel, not one engine: they stay)\n"
    "vllm_children = [p for p in me.children(recursive=True) if p.name().startswith('VLLM')]\n"
    "pt = get_pt_engine()\n"
    "_, left = psutil.wait_procs(vllm_children, timeout=30)\n"
    "swap = {'vllm_closed': engine.closed, 'left': [' '.join(p.cmdline()) for p in left], 'pt': pt.backend,\n"
    "        'pt_answer': inference_vllm(pt, template, [{'query': 'Hello!'}])[0]['response']}",
    # 10: nest_asyncio applied (as some libraries do), then back to vLLM: the engine starts and answers under it
    # (cells 11-13: cells 2-4 again)
    "import nest_asyncio\n"
    "nest_asyncio.apply()\n"
    "engine = get_vllm_engine()\n"
    "swap.update(pt_closed=pt.closed, back=engine.backend, children=[p.pid for p in me.children(recursive=True)],\n"
    "            answer=inference_vllm(engine, template, [{'query': 'Hello!'}])[0]['response'])\n"
    "try:\n"
    "    inference_vllm(pt, template, [{'query': 'Hello!'}])\n"
    "except Exception as error:  # the replaced engine says what closed it\n"
    "    swap['pt_error'] = str(error)\n"
    "print(json.dumps(swap))",
]
UNDER_NEST_ASYNCIO = CELLS[2:5]


# A user's mistakes, made in the same kernel before its first engine (cells 1-5; cell 6 undoes the last one's setting):
# each shows a short traceback, and the kernel's engine starts after them.
MISTAKES = [
    "get_vllm_engine(max_model_len=10**7)",          # more than the model allows
    "get_vllm_engine('qwen-7b-chat')",               # not on disk, no hub here
    "get_vllm_engine(model_id_or_path='/nonexistent')",
    "def load():\n    return get_vllm_engine(engine_kwargs={'no_such_arg': 1})\nload()",  # through the user's function
    "os.environ['VLLM_CPU_OMP_THREADS_BIND'] = 'auto'\nget_vllm_engine(tensor_parallel_size=2)",
]
UNDO = "del os.environ['VLLM_CPU_OMP_THREADS_BIND']"


def run_notebook(cells: list):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    # errors are allowed so that the mistakes' cells show theirs; any other cell's error fails stdout() below
    NotebookClient(nb, timeout=600, kernel_name='python3', allow_errors=True).execute()  # ends by shutting it down
    return nb


PROGRESS = re.compile(r'(vLLM|pt) engine for tiny-chat: (ready|shut down) in \d+\.\d s( \(.+\))?')


def progress_lines(cell) -> list[str]:
    """The engines' progress displays the cell kept: each is one line, its final one (progress.py)."""
    return [o['data']['text/plain'] for o in cell.outputs if o['output_type'] == 'display_data']


def stdout(cell) -> str:
    """The cell's printed text; anything else it shows (stderr, errors, other displays) fails the test."""
    kinds = {o.get('name', o['output_type']) for o in cell.outputs}
    assert kinds <= {'stdout', 'display_data'}, cell.outputs  # no vLLM log lines, no warnings, no stderr
    assert all(PROGRESS.fullmatch(line) for line in progress_lines(cell)), progress_lines(cell)
    return ''.join(o['text'] for o in cell.outputs if o['output_type'] == 'stream')


def check_cells(outputs):
    assert outputs[0] == outputs[1] == ''
    assert 'Hangzhou' in outputs[2]
    assert outputs[3].startswith('Hello!')
    reuse = json.loads(outputs[4])
    assert reuse == {'same': True, 'new': 0}


@pytest.fixture(scope='module')
def executed():
    """The kernel's notebook, run once: the set-up cell, the mistakes, the cell undoing the last one's setting, then
    CELLS' cells and UNDER_NEST_ASYNCIO's."""
    return run_notebook(CELLS[:1] + MISTAKES + [UNDO] + CELLS[1:] + UNDER_NEST_ASYNCIO).cells


def test_engine_in_a_real_kernel(executed):
    assert stdout(executed[1 + len(MISTAKES)]) == ''  # the undo
    nb = nbformat.v4.new_notebook()
    nb.cells = executed[:1] + executed[2 + len(MISTAKES):]  # the cells as numbered in CELLS' comments
    outputs = [stdout(cell) for cell in nb.cells]
    check_cells(outputs)
    check_cells(['', ''] + outputs[-3:])  # sync, await and reuse, with nest_asyncio applied
    # the load shows one line, which ends as the time it took and where it went
    [loaded] = progress_lines(nb.cells[1])
    assert loaded.startswith('vLLM engine for tiny-chat: ready in') and 'starting the engine process' in loaded \
        and 'KV cache' in loaded, loaded
    assert progress_lines(nb.cells[4]) == []  # a reused engine shows nothing
    assert [line.split(':')[1].split(' in ')[0].strip() for line in progress_lines(nb.cells[6])] == \
        ['shut down', 'ready']  # the replacement: the old engine's stop, the new one's start
    refused, answer = outputs[5].splitlines()
    assert 'enable_lora=True' in refused and answer.startswith('I am Tiny Chat')
    replace = json.loads(outputs[6])
    assert replace['max_model_len'] == 768 and replace['answer'].startswith('Hello!')
    # the engines' forkserver is a fork of the kernel (engine/forkserver.py), in which the notebook's progress bars
    # are text again: the worker's loading bar is in vLLM's log, each start's
    assert replace['server'][0] and 'ipykernel_launcher' in replace['server'][1], replace['server']
    assert len(replace['bars']) == 2 and replace['bars'][0].startswith('Loading safetensors checkpoint shards: 100%'), \
        replace['bars']
    before, after = replace['counts']
    assert after == before, replace['counts']  # the replacement leaves exactly one engine's processes
    assert outputs[7] == '' and outputs[8].startswith('Hello!')
    assert outputs[9] == ''
    swap = json.loads(outputs[10])
    assert swap['vllm_closed'] and swap['left'] == [] and swap['pt'] == 'pt' and swap['pt_closed']
    assert swap['back'] == 'vllm' and swap['answer'] == swap['pt_answer'] == outputs[3].strip()
    assert swap['pt_error'].startswith('this engine cannot answer: get_vllm_engine or get_pt_engine was called '
                                       'with other arguments, which replaced it')
    # Interpreter exit (kernel shutdown) leaves no child process behind: the last engine's processes are gone.
    assert swap['children']
    deadline = time.time() + 30
    while time.time() < deadline and any(psutil.pid_exists(p) for p in swap['children']):
        time.sleep(0.5)
    alive = [p for p in swap['children'] if psutil.pid_exists(p) and psutil.Process(p).status() != 'zombie']
    assert alive == []




def test_a_users_mistake_shows_a_short_traceback_and_a_failed_start_its_root_cause(executed):
    cells = executed[1:1 + len(MISTAKES)]
    errors = [[o for o in cell.outputs if o['output_type'] == 'error'] for cell in cells]
    for cell, words in zip(cells[:4], ['max_model_len <= 2048', 'Qwen-7B-Chat', '/nonexistent', 'no_such_arg']):
        [error] = [o for o in cell.outputs if o['output_type'] == 'error']
        shown = re.sub(r'\x1b\[[0-9;]*m', '', '\n'.join(error['traceback']))
        assert words in error['evalue'] and words in shown
        # the user's own frames and the message; none of swiftnb's or vLLM's (a page of them before)
        assert 'File ' not in shown, shown  # IPython names a frame of a file 'File path:line'; cells are 'Cell In[n]'
        assert len(shown.splitlines()) <= 12, shown
    assert 'load()' in '\n'.join(errors[3][0]['traceback'])  # the user's function stays in view
    [start] = errors[4]
    assert start['ename'] == 'EngineStartError'
    assert 'Not enough allowed NUMA nodes' in start['evalue'] and "vLLM's log: /" in start['evalue']
