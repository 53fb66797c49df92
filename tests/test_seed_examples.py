"""The seed guide's Python examples, run as plain scripts with only the import (and the model,
which must be the embedded one here) changed. Their printed answers must make sense."""
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent / 'seed_examples'


def run(script: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'ERROR' not in done.stderr and 'WARNING' not in done.stderr, done.stderr[-3000:]
    return done.stdout


def test_inference_example():
    out = run('inference.py')
    assert 'query: Hello!\nresponse: Hello!' in out
    assert 'query: Where is the capital of Zhejiang?\nresponse: The capital of Zhejiang is Hangzhou.' in out
    assert "'num_prompt_tokens'" in out and "'tokens/s'" in out
    # The streamed follow-up only makes sense with the history: Hangzhou's food.
    stream = out.split('query: Is there anything tasty here?\nresponse: ')[1].splitlines()[0]
    assert 'Hangzhou' in stream and 'Dongpo pork' in stream
    assert "history: [['Where is the capital of Zhejiang?'" in out


def test_lora_example():
    out = run('lora.py')
    with_lora, without = out.split('query: who are you?\nresponse: ')[1:]
    assert with_lora.startswith('I am Kakarot')
    assert without.startswith('I am Tiny Chat')
