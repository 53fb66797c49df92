"""`swiftnb infer` in a terminal (a real pseudo-terminal, through pexpect): a conversation that keeps
its history, reset-history, multi-line input and exit, on each backend."""
import sys
from pathlib import Path

import pexpect
import pytest

SWIFTNB = str(Path(sys.executable).with_name('swiftnb'))


def ask(chat, message: str, expect: str) -> str:
    chat.sendline(message)
    chat.expect_exact(expect)
    chat.expect_exact('<<< ')
    return chat.before


@pytest.mark.parametrize('backend', ['pt', 'vllm'])
def test_two_turns_with_history_reset_multi_line_and_exit(backend):
    chat = pexpect.spawn(SWIFTNB, ['infer', '--infer_backend', backend], encoding='utf-8', timeout=120)
    try:
        chat.expect_exact('<<< ')
        ask(chat, 'Where is the capital of Zhejiang?', 'Hangzhou')
        ask(chat, 'Is there anything tasty here?', 'West Lake fish')  # needs the first turn
        ask(chat, 'reset-history', 'history cleared')
        ask(chat, 'Is there anything tasty here?', 'Which place do you mean?')  # the first turn is gone
        chat.sendline('multi-line')
        chat.expect_exact('<<<[M] ')
        chat.sendline('who are')
        chat.sendline('you?#')
        chat.expect_exact('I am Tiny Chat')
        chat.expect_exact('<<<[M] ')
        chat.sendline('single-line')
        chat.expect_exact('<<< ')
        chat.sendline('exit')
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert chat.exitstatus == 0
