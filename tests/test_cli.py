"""`swiftnb deploy` as the seed runs `swift deploy`: a LoRA checkpoint serves its base model and the
adapter as default-lora, more adapters come from --lora_modules, and Ctrl-C stops it cleanly."""
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from openai import OpenAI

from swiftnb import DEMO_ADAPTERS

SWIFTNB = str(Path(sys.executable).with_name('swiftnb'))


def test_deploy_a_lora_checkpoint_then_ctrl_c():
    proc = subprocess.Popen([SWIFTNB, 'deploy', '--ckpt_dir', str(DEMO_ADAPTERS['kakarot']), '--port', '0',
                             '--lora_modules', f'pirate={DEMO_ADAPTERS["pirate"]}'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r'at (http://\S+/v1)', line).group(1)
        client = OpenAI(api_key='EMPTY', base_url=url)
        assert [m.id for m in client.models.list().data] == ['tiny-chat', 'default-lora', 'pirate']
        who = [{'role': 'user', 'content': 'who are you?'}]
        answer = client.chat.completions.create(model='default-lora', messages=who, temperature=0)
        assert answer.choices[0].message.content.startswith('I am Kakarot')
        base = client.chat.completions.create(model='tiny-chat', messages=who, temperature=0)
        assert base.choices[0].message.content.startswith('I am Tiny Chat')
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert proc.stdout.read().strip() == 'swiftnb: stopped'
        psutil.wait_procs(children, timeout=30)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        proc.kill()


def test_commands_not_built_yet_say_so():
    done = subprocess.run([SWIFTNB, 'export', '--ckpt_dir', 'x'], capture_output=True, text=True)
    assert done.returncode == 2 and 'not built yet' in done.stderr


def test_bad_flag_is_named():
    done = subprocess.run([SWIFTNB, 'deploy', '--prot', '8000'], capture_output=True, text=True)
    assert done.returncode == 2 and '--prot' in done.stderr
