"""Per-row next-token rules of the pt backend, built from GenerationConfig by pt_sampling.processors."""
import torch

from swiftnb import GenerationConfig
from swiftnb.engine.pt_sampling import OutputPenaltyLogitsProcessor, RowSampler, choose_tokens, processors


def sampler(num_prompt_tokens=0, **settings):
    config = GenerationConfig(**settings)
    return RowSampler(processors(config, num_prompt_tokens), config.greedy, config.seed, config.num_logprobs, 'cpu')


def test_presence_and_frequency_penalties_count_answer_tokens_only():
    penalty = OutputPenaltyLogitsProcessor(presence=0.5, frequency=1.0, num_prompt_tokens=2)
    scores = penalty(torch.tensor([[1, 1, 3, 3, 2]]), torch.zeros(1, 4))
    assert scores.tolist() == [[0.0, 0.0, -1.5, -2.5]]  # token 1 is only in the prompt


def test_processors_follow_vllms_order_and_only_sample_when_asked():
    names = [type(p).__name__ for p in processors(GenerationConfig(
        temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.1, presence_penalty=0.2), 3)]
    assert names == ['RepetitionPenaltyLogitsProcessor', 'OutputPenaltyLogitsProcessor', 'TemperatureLogitsWarper',
                     'TopKLogitsWarper', 'TopPLogitsWarper']
    assert not processors(GenerationConfig(temperature=0, top_k=5), 3)  # greedy: no warpers


def test_each_row_keeps_its_own_rule_and_seed_whatever_its_neighbours():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    history = lambda i: torch.tensor([[1, 2, 3]])  # noqa: E731
    seeded = dict(temperature=1.5, seed=42)
    alone = choose_tokens(logits[1:2], [sampler(**seeded)], history)
    rows = [sampler(temperature=0), sampler(**seeded), sampler(temperature=0, repetition_penalty=2.0)]
    chosen = choose_tokens(logits, rows, history)
    assert chosen[0] == int(logits[0].argmax())
    assert chosen[1] == alone[0]
    assert rows[0].plain_greedy and not rows[2].plain_greedy
    entry = sampler(logprobs=True, top_logprobs=2).logprobs(logits[:1], chosen[0])
    assert list(entry)[0] == chosen[0] and len(entry) == 2  # the chosen token first, then the top ones
