"""divergence: where a LoRA adapter's answer departs from its base model's, token by token.

Both variants answer one prompt greedily; then each answer is scored under both variants with prompt logprobs
(the answer appended to the prompt, one forward pass, as `prompt_logprobs` gives it on either backend). A token
the writer found likely and the other variant did not is where the fine-tune shows; the first token where the
two greedy paths split is where the answers part; the mean log-prob difference per token sums it up.
"""
import asyncio
import dataclasses
import html
import math
import statistics
from typing import Optional

from swiftnb.engine.base import Engine


@dataclasses.dataclass
class ScoredAnswer:
    """One variant's greedy answer, each token with its log-prob under the writer and under the other variant."""
    writer: str
    reader: str
    token_ids: list[int]
    tokens: list[str]
    own: list[float]  # log p(token | prompt, answer so far) under the variant that wrote it
    other: list[float]  # the same under the other variant

    @property
    def text(self) -> str:
        return ''.join(self.tokens)

    @property
    def mean_logprob_diff(self) -> float:
        """Mean over the answer's tokens of own - other log-prob (nats/token): how much more its writer expects it."""
        return statistics.fmean(a - b for a, b in zip(self.own, self.other)) if self.own else 0.0


@dataclasses.dataclass
class Divergence:
    """The two answers, scored both ways, and `first_split`: the first token index where they differ (None: the
    same answer)."""
    query: str
    answers: list[ScoredAnswer]  # the adapter's, then the base model's
    first_split: Optional[int]

    def __str__(self):
        where = 'the same answer' if self.first_split is None else f'the answers part at token {self.first_split}'
        lines = [f'{self.query!r}: {where}']
        for a in self.answers:
            lines.append(f'  {a.writer}: {a.text!r} (mean log-prob {a.writer} - {a.reader}: '
                         f'{a.mean_logprob_diff:+.2f} nats/token)')
        return '\n'.join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        rows = [f'<div><b>{html.escape(self.query)}</b> &mdash; '
                + ('both answer the same' if self.first_split is None else
                   f'the greedy answers part at token {self.first_split} (outlined)') + '</div>']
        for a in self.answers:
            spans = ''.join(_token_span(a, i, i == self.first_split) for i in range(len(a.tokens)))
            rows.append(f'<div class="swiftnb-divergence-answer" style="margin-top:6px">'
                        f'<div><b>{html.escape(a.writer)}</b> wrote, coloured by how surprising each token is to '
                        f'<b>{html.escape(a.reader)}</b>; mean log-prob {html.escape(a.writer)} &minus; '
                        f'{html.escape(a.reader)}: {a.mean_logprob_diff:+.2f} nats/token</div>'
                        f'<div style="font-family:monospace;white-space:pre-wrap;line-height:1.8">{spans}</div></div>')
        return '<div class="swiftnb-divergence">' + ''.join(rows) + '</div>'


def _token_span(answer: ScoredAnswer, i: int, split: bool) -> str:
    """A token on a red ground as strong as the other variant's surprise (1 - its probability there)."""
    surprise = 1 - math.exp(answer.other[i])
    outline = 'outline:2px solid #1f6feb;' if split else ''
    title = (f'{answer.writer} {answer.own[i]:.3f}, {answer.reader} {answer.other[i]:.3f} '
             f'(log-probs of {answer.tokens[i]!r})')
    return (f'<span title="{html.escape(title)}" style="background:rgba(220,38,38,{surprise:.2f});{outline}">'
            f'{html.escape(answer.tokens[i])}</span>')


def divergence(engine: Engine, query: str, adapter, base: Optional[str] = None, max_tokens: int = 64,
               template=None) -> Divergence:
    """Where `adapter` (a name the engine serves, a LoRARequest, or a folder) departs from the base model on
    `query`: both greedy answers, each token's log-prob under both variants, the first token where they split
    and the mean log-prob difference. Works on an engine of either backend; shows as coloured tokens in a cell."""
    with engine.adapter_for_call(adapter, 'divergence') as lora:
        template = template or engine.template
        prompt = template.encode(query)
        engine.check_prompt(prompt, 'the prompt')
        variants = {lora.lora_name: lora, base or 'base': None}
        result = engine.loop.run(_score(engine, prompt, variants, max_tokens))
    tokenizer = engine.hf_tokenizer
    names = list(variants)
    answers = []
    for (writer, reader) in (names, names[::-1]):
        ids = result[writer]['answer']
        answers.append(ScoredAnswer(writer, reader, ids, [tokenizer.decode([t]) for t in ids],
                                    result[writer]['scores'][writer], result[writer]['scores'][reader]))
    a, b = answers[0].token_ids, answers[1].token_ids
    split = None if a == b else next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return Divergence(query, answers, split)


async def _score(engine: Engine, prompt: list[int], variants: dict, max_tokens: int) -> dict:
    """{writer: {'answer': token ids, 'scores': {variant: [log-prob of each answer token]}}}."""
    from swiftnb.infer import settings_for
    greedy = settings_for(engine, {'temperature': 0, 'max_tokens': max_tokens})
    score = settings_for(engine, {'temperature': 0, 'max_tokens': 1, 'prompt_logprobs': 0})

    async def answer(lora) -> list[int]:
        ids = []
        async for delta in engine.stream(prompt, greedy, lora, final_only=True):
            ids += delta.token_ids
        return ids

    async def logprobs(ids: list[int], lora) -> list[float]:
        async for delta in engine.stream(prompt + ids, score, lora, final_only=True):
            entries = delta.prompt_logprobs[len(prompt):]
            return [entry[token] for entry, token in zip(entries, ids)]
        raise RuntimeError('the engine gave no prompt logprobs')

    names = list(variants)
    answers = dict(zip(names, await asyncio.gather(*(answer(variants[n]) for n in names))))
    pairs = [(writer, reader) for writer in names for reader in names]
    scored = await asyncio.gather(*(logprobs(answers[w], variants[r]) for w, r in pairs))
    result = {n: {'answer': answers[n], 'scores': {}} for n in names}
    for (writer, reader), values in zip(pairs, scored):
        result[writer]['scores'][reader] = values
    return result
