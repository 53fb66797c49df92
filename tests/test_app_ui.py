"""`swiftnb app-ui` as the seed runs `swift app-ui`: the chat page in a real browser (Debian's chromium
driven by Playwright), answering from a LoRA checkpoint's adapter, then Ctrl-C."""
import re
import signal
import subprocess
import sys
from pathlib import Path

from browser import chromium_page, free_port
from conftest import direct_answer
from swiftnb import DEMO_ADAPTERS
from swiftnb.app_ui import chat_notebook

SWIFTNB = str(Path(sys.executable).with_name('swiftnb'))


def test_the_notebook_holds_a_heading_and_one_chat_widget_with_the_command_line_settings():
    heading, cell = chat_notebook('http://127.0.0.1:1/v1', 'default-lora', None, {'max_tokens': 64, 'seed': None}).cells
    assert heading.cell_type == 'markdown' and heading.source == '## swiftnb chat: default-lora'
    assert cell.source == ("from swiftnb.widgets import ChatWidget\n"
                           "ChatWidget('http://127.0.0.1:1/v1', model='default-lora', max_tokens=64)")
    # a merged checkpoint is served as the base model, and the page names the checkpoint (app-ui's --ckpt_dir)
    merged = chat_notebook('http://127.0.0.1:1/v1', None, None, {}, title='checkpoint-100-merged').cells[0]
    assert merged.source == '## swiftnb chat: checkpoint-100-merged'


def test_app_ui_chats_in_a_browser_tab(pt_engine, tmp_path):
    port = free_port()
    proc = subprocess.Popen([SWIFTNB, 'app-ui', '--ckpt_dir', str(DEMO_ADAPTERS['kakarot']), '--infer_backend', 'pt',
                             '--port', str(port), '--max_new_tokens', '64'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert re.fullmatch(rf'swiftnb: app-ui at http://127.0.0.1:{port}/ \(Ctrl-C stops\)\n', line), \
            line + proc.stderr.read()[-3000:] if proc.poll() is not None else line
        expected = direct_answer(pt_engine, 'who are you?', adapter='kakarot', max_new_tokens=64)
        with chromium_page() as page:
            remote, errors = [], []  # the page must work offline: nothing fetched from elsewhere, no console error
            local = ('http://127.0.0.1', 'ws://127.0.0.1', 'blob:http://127.0.0.1', 'data:')
            page.on('request', lambda r: None if r.url.startswith(local) else remote.append(r.url))
            page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
            page.goto(f'http://127.0.0.1:{port}/')
            page.locator('h2', has_text='swiftnb chat: default-lora').wait_for()  # the page's heading
            prompt = page.locator('textarea.swiftnb-prompt')
            assert page.locator('.swiftnb-chat select').input_value() == 'default-lora'
            prompt.fill('who are you?')
            prompt.press('Enter')
            page.wait_for_function("text => document.querySelector('.swiftnb-answer')?.textContent.includes(text)",
                                   arg=expected)
            assert page.locator('.swiftnb-answer p').inner_text() == expected
            page.screenshot(path=tmp_path / 'app_ui.png')
            assert remote == [] and errors == [], (remote, errors)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert proc.stdout.read().strip() == 'swiftnb: stopped'
    finally:
        proc.kill()
