"""Choosing the next token of each row of a pt batch, with each request's own settings.

The logits processors are transformers' own (built by `processors` from a
GenerationConfig), and xgrammar's for structured outputs (the grammar library vLLM
uses); this module applies them row by row, since one batch mixes requests with
different settings, and draws from each request's own seeded generator, so a
request samples the same tokens whatever else shares its batch.
"""
from typing import Optional

import torch

from swiftnb.settings import GenerationConfig


class OutputPenaltyLogitsProcessor:
    """vLLM's presence and frequency penalties, which count generated tokens only.

    transformers has no processor for them (its repetition penalty is a different,
    multiplicative one, which `processors` uses for `repetition_penalty`).
    """

    def __init__(self, presence: float, frequency: float, num_prompt_tokens: int):
        self.presence, self.frequency, self.num_prompt_tokens = presence, frequency, num_prompt_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        output = input_ids[:, self.num_prompt_tokens:]
        counts = torch.zeros_like(scores).scatter_add_(1, output, torch.ones_like(output, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


def processors(config: GenerationConfig, num_prompt_tokens: int, grammar=None):
    """transformers logits processors for one request, in the order vLLM applies the same settings: the
    grammar's mask (an xgrammar CompiledGrammar, for structured outputs), penalties, then temperature,
    top-k, top-p (the warpers only when sampling)."""
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)
    chain = LogitsProcessorList()
    if grammar is not None:
        import xgrammar.contrib.hf
        chain.append(xgrammar.contrib.hf.LogitsProcessor(grammar))  # one per row: it keeps the row's state
    if config.repetition_penalty != 1.0:  # vLLM and transformers both count prompt and output tokens here
        chain.append(RepetitionPenaltyLogitsProcessor(float(config.repetition_penalty)))
    if config.presence_penalty or config.frequency_penalty:
        chain.append(OutputPenaltyLogitsProcessor(config.presence_penalty, config.frequency_penalty,
                                                  num_prompt_tokens))
    if not config.greedy:
        if config.temperature != 1.0:
            chain.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k > 0:
            chain.append(TopKLogitsWarper(config.top_k))
        if config.top_p < 1.0:
            chain.append(TopPLogitsWarper(config.top_p))
    return chain


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
        if self.processors:  # a setting at the edge of its range (repetition_penalty=5e-324) makes logits inf
            finite = torch.finfo(torch.float32)
            scores = torch.nan_to_num(scores.float(), nan=finite.min, posinf=finite.max, neginf=finite.min)
        if self.greedy:
            return int(scores.argmax(dim=-1))
        probs = torch.softmax(scores.float(), dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def logprobs(self, logits: torch.Tensor, token: int) -> Optional[dict]:
        """{token_id: logprob} of the chosen token and the top ones, from the raw logits as vLLM reports them."""
        if self.num_logprobs is None:
            return None
        return logprob_entry(torch.log_softmax(logits.float(), dim=-1)[0], token, self.num_logprobs)


def logprob_entry(logprobs: torch.Tensor, token: int, top: int) -> dict:
    """{token_id: logprob} for one position: `token` first, then the `top` most likely others."""
    entry = {token: float(logprobs[token])}
    if top:
        best = torch.topk(logprobs, top)
        entry.update({int(i): float(v) for v, i in zip(best.values, best.indices) if int(i) not in entry})
    return entry


def prompt_logprobs(logits: torch.Tensor, tokens: list[int], top: int) -> list:
    """vLLM's prompt logprobs from a prefill's logits ([len, vocab], one row): None for the first token,
    then each token's entry given the ones before it."""
    logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)
    return [None] + [logprob_entry(logprobs[i], token, top) for i, token in enumerate(tokens[1:])]


def choose_tokens(logits: torch.Tensor, samplers: list[RowSampler], token_ids) -> list[int]:
    """The next token of every row; `token_ids(i)` gives row i's tokens so far, only when its rule needs them."""
    chosen = logits.argmax(dim=-1).tolist()  # one batched argmax serves every plain greedy row
    for i, sampler in enumerate(samplers):
        if not sampler.plain_greedy:
            chosen[i] = sampler.choose(logits[i:i + 1], token_ids(i))
    return chosen


class Grammars:
    """Structured outputs for the pt backend: xgrammar (the library vLLM uses) compiles each constraint
    for this tokenizer; the compiler is made on first use and caches what it compiled."""

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self._compiler = None

    def compile(self, structured):
        """An xgrammar CompiledGrammar for a settings.StructuredOutputs."""
        import json

        import xgrammar
        if self._compiler is None:
            info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size)
            self._compiler = xgrammar.GrammarCompiler(info)
        if structured.json_schema is not None:
            schema = structured.json_schema
            return self._compiler.compile_json_schema(schema if isinstance(schema, str) else json.dumps(schema))
        if structured.json_object:
            return self._compiler.compile_builtin_json_grammar()
        if structured.regex is not None:
            return self._compiler.compile_regex(structured.regex)
        if structured.choice is not None:  # as vLLM's xgrammar backend does: one alternative per choice
            return self._compiler.compile_grammar('root ::= ' + ' | '.join(json.dumps(c) for c in structured.choice))
        return self._compiler.compile_grammar(structured.grammar)
