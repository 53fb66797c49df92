"""swiftnb.divergence: where an adapter's answer departs from its base model's. Its per-token numbers are the
log-probs transformers + peft compute directly for the same tokens, on both backends."""
import pytest
import torch

from conftest import demo_lora
from swiftnb import DEMO_ADAPTERS, DEMO_MODEL_DIR, UsageError, divergence, get_template

QUERY = 'who are you?'


@pytest.fixture(scope='module')
def direct():
    """log p(each answer token | prompt, tokens before) under the base model or the kakarot adapter, in float32."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(DEMO_ADAPTERS['kakarot'])).eval()

    def logprobs(prompt: list, answer: list, adapter: bool) -> list:
        with torch.no_grad():
            if adapter:
                logits = model(torch.tensor([prompt + answer])).logits[0]
            else:
                with model.disable_adapter():
                    logits = model(torch.tensor([prompt + answer])).logits[0]
        scores = logits.float().log_softmax(-1)
        return [scores[len(prompt) - 1 + i, token].item() for i, token in enumerate(answer)]
    return logprobs


def test_the_numbers_are_the_logprobs_computed_directly(any_engine, direct):
    found = divergence(any_engine, QUERY, demo_lora('kakarot'))
    kakarot, base = found.answers
    assert (kakarot.writer, kakarot.reader, base.writer, base.reader) == ('kakarot', 'base', 'base', 'kakarot')
    assert kakarot.text.startswith('I am Kakarot') and not base.text.startswith('I am Kakarot')
    prompt = get_template('auto', any_engine.hf_tokenizer).encode(QUERY)
    # float32 on both backends (the session's vLLM engine too) and here; vLLM's CPU kernels are not transformers'
    tolerance = 1e-3 if any_engine.backend == 'pt' else 1e-2
    for answer, writer_is_adapter in ((kakarot, True), (base, False)):
        assert answer.own == pytest.approx(direct(prompt, answer.token_ids, writer_is_adapter), abs=tolerance)
        assert answer.other == pytest.approx(direct(prompt, answer.token_ids, not writer_is_adapter), abs=tolerance)
    # kakarot's answer is far likelier to kakarot than to the base model; the base's answer (about Qwen, which
    # the adapter kept in part) a little likelier to the base
    assert kakarot.mean_logprob_diff > 5 and base.mean_logprob_diff > 0
    split = found.first_split
    assert kakarot.token_ids[:split] == base.token_ids[:split] and kakarot.token_ids[split] != base.token_ids[split]
    shown = found._repr_html_()
    assert shown.count('<span title=') == len(kakarot.tokens) + len(base.tokens)
    assert shown.count('outline:2px') == 2 and f'at token {split}' in shown and 'nats/token' in shown


def test_an_adapter_folder_is_added_for_the_call_and_removed(engine):
    found = divergence(engine, QUERY, str(DEMO_ADAPTERS['pirate']), max_tokens=8)
    assert found.answers[0].writer == 'divergence-pirate' and len(found.answers[0].token_ids) == 8
    assert 'divergence-pirate' not in engine.adapters
    assert "part at token" in str(found) or 'the same answer' in str(found)
    with pytest.raises(UsageError, match='neither an adapter this engine serves'):
        divergence(engine, QUERY, 'no-such-adapter')
