"""The seed guide's Python examples, run as files with only the import (and the model, which must be the embedded
one here) changed, one after the other in one Python process. Their printed answers must make sense."""
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent / 'seed_examples'
SCRIPTS = ('inference.py', 'lora.py')
MARK = '=== the next script ===\n'  # printed before each script (the scripts print no such line)


@pytest.fixture(scope='module')
def printed() -> dict:
    """What each example printed, run one after the other in one Python process as `python FILE` runs a file (runpy,
    as __main__): the second script's engine, with other arguments, replaces the first's, as a re-run notebook's
    does, and starts from the process's forkserver; the process's first start is a script's own."""
    code = ('import runpy\n'
            f'for script in {SCRIPTS!r}:\n'
            f'    print({MARK!r}, end="", flush=True)\n'
            f'    runpy.run_path({str(EXAMPLES)!r} + "/" + script, run_name="__main__")\n')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'ERROR' not in done.stderr and 'WARNING' not in done.stderr, done.stderr[-3000:]
    return dict(zip(SCRIPTS, done.stdout.split(MARK)[1:], strict=True))


def test_inference_example(printed):
    out = printed['inference.py']
    assert 'query: Hello!\nresponse: Hello!' in out
    assert 'query: Where is the capital of Zhejiang?\nresponse: The capital of Zhejiang is Hangzhou.' in out
    assert "'num_prompt_tokens'" in out and "'tokens/s'" in out
    # The streamed follow-up only makes sense with the history: Hangzhou's food.
    stream = out.split('query: Is there anything tasty here?\nresponse: ')[1].splitlines()[0]
    assert 'Hangzhou' in stream and 'Dongpo pork' in stream
    assert "history: [['Where is the capital of Zhejiang?'" in out


def test_lora_example(printed):
    out = printed['lora.py']
    with_lora, without = out.split('query: who are you?\nresponse: ')[1:]
    assert with_lora.startswith('I am Kakarot')
    assert without.startswith('I am Tiny Chat')
