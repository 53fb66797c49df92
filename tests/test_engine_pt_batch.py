"""PaddedBatch: rows prefilled apart, joined into one left-padded cache, decode as they do alone."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from swiftnb import DEMO_MODEL_DIR
from swiftnb.engine.pt_batch import PaddedBatch

PROMPTS = [[5, 300, 301, 302, 303, 304, 305, 306], [7, 400, 401]]


@pytest.fixture(scope='module')
def model():
    return AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, dtype=torch.float32).eval()


def prefill(model, prompt):
    ids = torch.tensor([prompt])
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    return out.past_key_values, torch.ones_like(ids)


def next_logits(model, cache, mask, tokens, positions):
    out = model(input_ids=torch.tensor(tokens).view(-1, 1), attention_mask=mask, past_key_values=cache,
                position_ids=torch.tensor(positions).view(-1, 1), use_cache=True)
    return out.logits[:, -1]


@torch.inference_mode()
def test_joined_rows_decode_as_each_alone_and_padding_goes_with_the_long_row(model):
    alone = []
    for prompt in PROMPTS:
        cache, mask = prefill(model, prompt)
        alone.append(next_logits(model, cache, torch.ones(1, len(prompt) + 1, dtype=torch.long), [9], [len(prompt)]))
    batch = PaddedBatch()
    for prompt in PROMPTS:
        batch.join(*prefill(model, prompt))
    assert batch.size == 2 and batch.mask.tolist()[1] == [0] * 5 + [1] * 3
    joined = next_logits(model, batch.cache, batch.grow(), [9, 9], [len(p) for p in PROMPTS])
    torch.testing.assert_close(joined, torch.cat(alone), rtol=1e-4, atol=1e-4)

    batch.keep([1])  # the long row finished: the short one keeps no padding
    assert batch.mask.tolist() == [[1] * 4]
    assert all(layer.keys.shape[-2] == 4 for layer in batch.cache.layers)
    batch.keep([])
    assert batch.size == 0 and batch.cache is None
