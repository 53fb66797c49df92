"""BlindCompare: CompareWidget with the names hidden, for votes that become preference data.

    blind = BlindCompare(engine, variants=[None, 'checkpoint-100', 'checkpoint-200'], votes_file='votes.jsonl',
                         prompts=['Who are you?', ...])
    blind                      # columns A, B, C in an order drawn anew for every prompt; vote with the buttons
                               # or keys (A, B, ..., T tie, N none good, once the key strip has focus)
    blind.vote('B')            # or from code: 'A', 'B', ... for the better answer, 'tie', or 'bad' (none is good)
    blind.win_rates()          # revealed only when asked: {variant: (wins, votes, low, high)}

Every vote appends rows to `votes_file` in ms-swift's preference format, so the next training run can take it as
its dataset: for DPO (`format='dpo'`) one row per answer the chosen one beat (an answer with the same text teaches
nothing and is left out), `messages` ending with the chosen answer and `rejected_response` the other; for KTO
(`format='kto'`) one row per answer, `label` true for the chosen one and false for the others ('bad': false for
all). A tie writes no row. Win rates share a tie's win among its answers, and give Wilson 95% intervals.
"""
import json
import math
import random
from pathlib import Path
from typing import Optional, Sequence

import ipywidgets as widgets

from swiftnb.errors import UsageError
from swiftnb.widgets.compare import CompareWidget
from swiftnb.widgets.vote_keys import VoteKeys

LETTERS = 'ABCDEFGHIJ'


class BlindCompare(CompareWidget):
    def __init__(self, engine_or_url, variants: Sequence[Optional[str]], votes_file: str = 'votes.jsonl',
                 format: str = 'dpo', seed: Optional[int] = None, **options):
        if format not in ('dpo', 'kto'):
            raise UsageError(f"format must be 'dpo' or 'kto', got {format!r}")
        if not 2 <= len(variants) <= len(LETTERS):
            raise UsageError(f'a blind comparison takes 2 to {len(LETTERS)} variants, got {len(variants)}')
        super().__init__(engine_or_url, variants, **options)
        self.votes_file, self.format = Path(votes_file), format
        self.votes: list[dict] = []  # {'prompt', 'order': variants as shown, 'choice'}
        self._draw = random.Random(seed)
        self._next = 0  # the next of `prompts` to send
        self.add_class('swiftnb-blind')
        self.highlight.value = False  # marks against "the first column" would tell which one that is
        self.highlight.layout.display = 'none'
        for letter, view in zip(LETTERS, self.views):
            view.title.value = f'<b>{letter}</b>'
        choices = [*LETTERS[:len(self.variants)], 'tie', 'bad']
        labels = {'tie': 'Tie', 'bad': 'None is good'}
        self.vote_buttons = [widgets.Button(description=labels.get(c, f'{c} is better')) for c in choices]
        for choice, button in zip(choices, self.vote_buttons):
            button.on_click(lambda _, choice=choice: self._from_ui(self.vote, choice))
        self.reveal_button = widgets.Button(description='Reveal win rates', icon='eye',
                                            layout=widgets.Layout(min_width='150px'))
        self.reveal_button.on_click(lambda _: self._from_ui(self.reveal))
        keys = {**{c: c for c in choices[:-2]}, 'T': 'tie', 'N': 'bad'}
        self.vote_keys = VoteKeys(label=f'Vote with keys: click here, then {"/".join(choices[:-2])} for the better '
                                        'answer, T for a tie, N when none is good')
        self.vote_keys.on_key(lambda key: self._from_ui(self.vote, keys[key]) if key in keys else None)
        self.children = [*self.children[:4], widgets.HBox([*self.vote_buttons, self.reveal_button]),
                         self.vote_keys, *self.children[4:]]

    def shows(self) -> str:
        return f'{len(self.variants)} answers, names hidden; {len(self.votes)} votes'

    def submit(self, prompt: str):
        """The prompt to every variant, in an order drawn anew."""
        self._draw.shuffle(self.variants)
        return super().submit(prompt)

    def send_next(self, timeout: Optional[float] = None) -> dict:
        """Send the next of `prompts` (the widget's); its answers."""
        if self._next >= len(self.prompts):
            raise UsageError('every prompt has been sent; pass more with prompts=[...]')
        self._next += 1
        return self.send(self.prompts[self._next - 1]['query'], timeout)

    def vote(self, choice: str) -> None:
        """'A', 'B', ...: that answer is the better one; 'tie'; 'bad': none is good. Writes the rows it makes."""
        if len(self.answers) != len(self.variants) or not all(a.finished_at for a in self.answers.values()):
            raise UsageError('vote once every answer of the prompt has finished')
        letters = LETTERS[:len(self.variants)]
        if choice not in (*letters, 'tie', 'bad'):
            raise UsageError(f"a vote is one of {', '.join(letters)}, 'tie' or 'bad'; got {choice!r}")
        prompt = self.prompt_sent
        order = list(self.answers)
        chosen = order[letters.index(choice)] if choice in letters else None
        self.votes.append({'prompt': prompt, 'order': order, 'choice': chosen or choice})
        with self.votes_file.open('a', encoding='utf-8') as out:
            for row in preference_rows(prompt, self.system, {v: a.text for v, a in self.answers.items()}, chosen,
                                       choice == 'bad', self.format):
                out.write(json.dumps(row, ensure_ascii=False) + '\n')
        self.answers = {}  # one vote per prompt
        self.status.value = f'{len(self.votes)} votes in {self.votes_file}'
        self.refresh_snapshot()

    def win_rates(self) -> dict:
        """{variant: (wins, votes, low, high)}: a tie shares one win among the answers; Wilson 95% bounds."""
        wins = {v: 0.0 for v in self.variants}
        seen = {v: 0 for v in self.variants}
        for vote in self.votes:
            share = 1 / len(vote['order']) if vote['choice'] == 'tie' else 0.0
            for variant in vote['order']:
                seen[variant] += 1
                wins[variant] += 1.0 if vote['choice'] == variant else share
        return {v: (wins[v], seen[v], *wilson(wins[v], seen[v])) for v in self.variants}

    def reveal(self) -> None:
        """The win rates under the columns, names shown."""
        rows = ''.join(f'<tr><td>{v}</td><td>{w:g} of {n}</td><td>{low:.0%} - {high:.0%}</td></tr>'
                       for v, (w, n, low, high) in self.win_rates().items())
        self.table.value = ('<table><tr><th>variant</th><th>wins</th><th>95% interval</th></tr>'
                            f'{rows}</table>')
        self.refresh_snapshot()


def preference_rows(prompt: str, system: Optional[str], answers: dict, chosen: Optional[str], none_good: bool,
                    format: str) -> list[dict]:
    """ms-swift's preference rows for one vote (see the module's docstring)."""
    head = ([{'role': 'system', 'content': system}] if system else []) + [{'role': 'user', 'content': prompt}]

    def messages(answer: str) -> list:
        return head + [{'role': 'assistant', 'content': answer}]
    if format == 'kto':
        if chosen is None and not none_good:
            return []  # a tie
        return [{'messages': messages(text), 'label': variant == chosen} for variant, text in answers.items()]
    if chosen is None:
        return []
    return [{'messages': messages(answers[chosen]), 'rejected_response': text}
            for variant, text in answers.items() if variant != chosen and text != answers[chosen]]


def wilson(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a win rate (0, 1 with no votes)."""
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
