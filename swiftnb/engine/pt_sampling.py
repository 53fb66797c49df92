"""Choosing the next token of each row of a pt batch, with each request's own settings.

The logits processors are transformers' own (built in config.to_transformers);
this module applies them row by row, since one batch mixes requests with
different settings, and draws from each request's own seeded generator, so a
request samples the same tokens whatever else shares its batch.
"""
from typing import Optional

import torch


class OutputPenaltyLogitsProcessor:
    """vLLM's presence and frequency penalties, which count generated tokens only.

    transformers has no processor for them (its repetition penalty is a different,
    multiplicative one, which config.to_transformers uses for `repetition_penalty`).
    """

    def __init__(self, presence: float, frequency: float, num_prompt_tokens: int):
        self.presence, self.frequency, self.num_prompt_tokens = presence, frequency, num_prompt_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        output = input_ids[:, self.num_prompt_tokens:]
        counts = torch.zeros_like(scores).scatter_add_(1, output, torch.ones_like(output, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class RowSampler:
    """The next-token rule of one choice of one request."""

    def __init__(self, processors, greedy: bool, seed: Optional[int], num_logprobs: Optional[int], device):
        self.processors, self.greedy, self.num_logprobs = processors, greedy, num_logprobs
        self.generator = None
        if not greedy:
            self.generator = torch.Generator(device=device)
            if seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(seed)

    @property
    def plain_greedy(self) -> bool:
        """Argmax of the raw logits: rows like this are decided for the whole batch at once."""
        return self.greedy and not self.processors

    def choose(self, logits: torch.Tensor, token_ids: torch.Tensor) -> int:
        """The next token from one row's logits (shape [1, vocab]) and its tokens so far ([1, len])."""
        scores = self.processors(token_ids, logits) if self.processors else logits
        if self.greedy:
            return int(scores.argmax(dim=-1))
        probs = torch.softmax(scores.float(), dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def logprobs(self, logits: torch.Tensor, token: int) -> Optional[dict]:
        """{token_id: logprob} of the chosen token and the top ones, from the raw logits as vLLM reports them."""
        if self.num_logprobs is None:
            return None
        logprobs = torch.log_softmax(logits.float(), dim=-1)[0]
        entry = {token: float(logprobs[token])}
        if self.num_logprobs:
            top = torch.topk(logprobs, self.num_logprobs)
            entry.update({int(i): float(v) for v, i in zip(top.values, top.indices) if int(i) not in entry})
        return entry


def choose_tokens(logits: torch.Tensor, samplers: list[RowSampler], token_ids) -> list[int]:
    """The next token of every row; `token_ids(i)` gives row i's tokens so far, only when its rule needs them."""
    chosen = logits.argmax(dim=-1).tolist()  # one batched argmax serves every plain greedy row
    for i, sampler in enumerate(samplers):
        if not sampler.plain_greedy:
            chosen[i] = sampler.choose(logits[i:i + 1], token_ids(i))
    return chosen
