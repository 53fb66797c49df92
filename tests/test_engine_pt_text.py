"""TextStream: an answer's text grown token by token, as vLLM's detokenizer emits it."""
import pytest
from transformers import AutoTokenizer

from swiftnb import DEMO_MODEL_DIR
from swiftnb.engine.pt_text import TextStream


@pytest.fixture(scope='module')
def tokenizer():
    return AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


def feed(stream, ids):
    """The deltas of each step, and whether a stop string ended it."""
    deltas = []
    for token in ids:
        stopped = stream.add(token)
        deltas.append(stream.delta(finished=stopped))
        if stopped:
            break
    return deltas, stopped


def test_characters_split_over_tokens_come_out_whole(tokenizer):
    text = 'Hello héllo 你好 🙂'
    deltas, _ = feed(TextStream(tokenizer, tokenizer.encode('Q:'), []), tokenizer.encode(text))
    assert ''.join(deltas) == text
    assert all('\ufffd' not in d for d in deltas)
    assert '' in deltas  # the steps that ended inside a character sent nothing yet


def test_a_stop_string_is_cut_out_and_never_sent_in_part(tokenizer):
    stream = TextStream(tokenizer, [], ['Hangzhou'])
    deltas, stopped = feed(stream, tokenizer.encode('The capital is Hangzhou. It lies'))
    assert stopped and stream.stop_reason == 'Hangzhou'
    assert ''.join(deltas) == stream.text == 'The capital is '
    assert all('Hang' not in d for d in deltas)


def test_text_that_only_looks_like_a_stop_string_is_sent_when_finished(tokenizer):
    stream = TextStream(tokenizer, [], ['Hangzhou'])
    deltas, stopped = feed(stream, tokenizer.encode('I like Hang'))
    held = len('Hangzhou') - 1  # as many characters as could still grow into the stop string
    assert not stopped and ''.join(deltas) == 'I like Hang'[:-held]
    assert stream.delta(finished=True) == 'I like Hang'[-held:]


def test_special_tokens_are_skipped(tokenizer):
    deltas, _ = feed(TextStream(tokenizer, [], []), tokenizer.encode('Hi') + [tokenizer.eos_token_id])
    assert ''.join(deltas) == 'Hi'
