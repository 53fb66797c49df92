"""The seed guide's Python examples, run as plain scripts with only the import (and the model,
which must be the embedded one here) changed. Their printed answers must make sense."""
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent / 'seed_examples'


def start(script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(EXAMPLES / script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture(scope='module')
def printed() -> dict:
    """What each example printed; they run at the same time (an engine's start, mostly one core, is most of it)."""
    started = {script: start(script) for script in ('inference.py', 'lora.py')}
    try:
        outputs = {script: process.communicate(timeout=600) for script, process in started.items()}
    finally:
        for process in started.values():
            process.kill()  # nothing left running if one of them hung
    for script, (out, err) in outputs.items():
        assert started[script].returncode == 0, err[-3000:]
        assert 'ERROR' not in err and 'WARNING' not in err, err[-3000:]
    return {script: out for script, (out, _) in outputs.items()}


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
