"""CompareWidget: one prompt, several variants (the base model and LoRA adapters) side by side.

    compare = CompareWidget(engine, variants=[None, 'kakarot', 'pirate'], seed=42)
    compare                             # shows it; compare.send('Who are you?') drives it from code
    sweep = CompareWidget.from_run(engine, 'output/qwen-7b-chat/v0-20240101-120000')  # base + each checkpoint
    CompareWidget(engine, variants=['kakarot', ('merged', 'http://127.0.0.1:8001/v1')])  # a column from a server

Every column gets the same prompt, seed and settings at the same moment and streams
on its own; when all have finished, each column after the first marks the words
that differ from the first. With `prompts=[...]`, `run_batch()` sends every prompt
to every variant and keeps a table in `compare.results`: prompts may be strings, rows of the seed's
dataset format ({'query', 'history', 'system', 'response'}) or a .jsonl file of them; where a row has a
reference answer ('response'), each answer gets a score (exact match, or `score(answer, reference)`).
"""
import concurrent.futures
import functools
import html
import statistics
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import ipywidgets as widgets

from swiftnb.dataset_infer import check_row, read_rows
from swiftnb.errors import UnknownModelError, UsageError
from swiftnb.model_types import run_checkpoints
from swiftnb.widgets.answer import Answer, AnswerView
from swiftnb.widgets.diff import word_diff_html
from swiftnb.widgets.source import EndpointSource
from swiftnb.widgets.streaming import StreamingWidget


class CompareWidget(StreamingWidget):
    def __init__(self, engine_or_url, variants: Sequence[Optional[str]] = (None,),
                 prompts: Union[Sequence, str, Path] = (), system: Optional[str] = None, api_key: str = 'EMPTY',
                 score: Optional[Callable[[str, str], float]] = None, **generation):
        """`variants`: adapter names, None for the base model; `prompts`: for run_batch (strings, dataset rows or a
        .jsonl file); `score(answer, reference)`: for rows with a reference (default: exact match);
        `generation`: settings shared by all."""
        super().__init__(engine_or_url, api_key, placeholder='Prompt for every column (Enter sends)', **generation)
        self.routes = _routes(self.source, variants, api_key)  # {column: (its source, the model name there)}
        self.variants = list(self.routes)
        self.system = system
        self.prompts = batch_rows(prompts)
        self.score = score or exact_match
        self.answers: dict[str, Answer] = {}
        self.prompt_sent = ''  # the prompt the answers are to
        self.results: list[dict] = []
        self.views = [_column(name) for name in self.variants]
        self.highlight = widgets.Checkbox(value=True, description='highlight differences from the first column',
                                          indent=False)
        self.highlight.observe(lambda _: self._show_differences(), 'value')
        self.batch_button = widgets.Button(description=f'Run all {len(self.prompts)} prompts', icon='table',
                                           layout=widgets.Layout(display='' if self.prompts else 'none'))
        self.batch_button.on_click(lambda _: self._from_ui(self.submit_batch))
        self.table = widgets.HTML()
        self.columns = widgets.HBox([view.box for view in self.views])
        self.sweep: Optional[tuple] = None  # from_run's (run folder, checkpoints chosen), for refresh()
        self.add_class('swiftnb-compare')
        self.children = [self.settings.box, self.prompt,
                         widgets.HBox([self.send_button, self.stop_button, self.batch_button, self.highlight]),
                         self.columns, self.status, self.table]

    @classmethod
    def from_run(cls, engine, run_dir: str, checkpoints: Optional[Sequence] = None, base: bool = True,
                 **options) -> 'CompareWidget':
        """The base model beside each checkpoint of a fine-tuning run (model_types.run_checkpoints): every
        checkpoint is loaded on the live engine as an adapter named after its folder ('checkpoint-100'), no
        restart. `checkpoints`: a chosen few, by step or folder name; `base=False` leaves the base model out;
        `options`: as for CompareWidget (prompts, system, settings). refresh() adds checkpoints written since."""
        if isinstance(engine, str):
            raise UsageError('from_run loads the checkpoints on an engine: pass the engine, not a URL (a server '
                             'serves the adapters it was started with: --lora_modules)')
        names = _load_checkpoints(engine, run_dir, checkpoints)
        widget = cls(engine, variants=[None] * base + names, **options)
        widget.sweep = (run_dir, checkpoints)
        return widget

    def refresh(self) -> list[str]:
        """Load the run's checkpoints written since and add a column for each; their names."""
        if self.sweep is None:
            raise UsageError('refresh() is for a widget made by CompareWidget.from_run')
        new = [name for name in _load_checkpoints(self.source.engine, *self.sweep) if name not in self.variants]
        self.routes.update({name: (self.source, name) for name in new})
        self.variants += new
        self.views += [_column(name) for name in new]
        self.columns.children = [view.box for view in self.views]
        return new

    def shows(self) -> str:
        prompts = f', {len(self.prompts)} prompts' if self.prompts else ''
        return f'{", ".join(self.variants)} side by side{prompts}'

    def _requests(self, prompt: str, history=(), system: Optional[str] = None) -> list:
        if not prompt.strip():
            raise UsageError('nothing to send: the prompt is empty')
        settings = self.settings.request_config()
        return [self.routes[variant][0].prepare(prompt, history, system or self.system, self.routes[variant][1],
                                                settings) for variant in self.variants]

    def _stream(self, variant: str, request):
        return self.routes[variant][0].stream(request)

    def submit(self, prompt: str) -> concurrent.futures.Future:
        """Send one prompt to every variant at once; the future gives {variant: answer text}."""
        with self._action():
            requests = self._requests(prompt)
            self.prompt_sent = prompt
            self.answers = {variant: Answer() for variant in self.variants}
            for view in self.views:
                view.render_html = None
                view.clear()
            jobs = [(answer, self._stream(variant, request), view.redraw)
                    for (variant, answer), request, view in zip(self.answers.items(), requests, self.views)]

            def done(error):
                if error is not None:
                    raise error
                self._show_differences()
                return {variant: answer.text for variant, answer in self.answers.items()}
            return self._start(jobs, done)

    def _show_differences(self) -> None:
        if len(self.answers) != len(self.views) or not all(a.finished_at for a in self.answers.values()):
            return  # until every column has finished
        first = next(iter(self.answers.values())).text
        for view, answer in list(zip(self.views, self.answers.values()))[1:]:
            view.render_html = functools.partial(word_diff_html, first) if self.highlight.value else None
            view.redraw(answer)

    # batch mode -----------------------------------------------------------------------------------
    def submit_batch(self, prompts=None) -> concurrent.futures.Future:
        """Every prompt to every variant, all at once; the future gives the results table (list of dicts)."""
        with self._action():
            batch = self.prompts if prompts is None else batch_rows(prompts)
            if not batch:
                raise UsageError('no prompts to run: pass prompts=[...] to the widget or to submit_batch')
            rows = [(row, variant, request) for row in batch
                    for variant, request in zip(self.variants, self._requests(row['query'], row['history'],
                                                                              row['system']))]
            answers = [Answer() for _ in rows]

            def progress(_):
                done = sum(a.finished_at is not None for a in answers)
                self.status.value = f'{done} of {len(answers)} answers done'
            jobs = [(answer, self._stream(variant, request), progress)
                    for answer, (_, variant, request) in zip(answers, rows)]

            def done(error):
                if error is not None:
                    raise error
                self.results = [{'prompt': row['query'], 'variant': variant, **answer.record(),
                                 **self._scored(answer.text, row['label'])}
                                for (row, variant, _), answer in zip(rows, answers)]
                self.table.value = results_html(self.results)
                return self.results
            return self._start(jobs, done)

    def _scored(self, answer: str, reference: Optional[str]) -> dict:
        return {} if reference is None else {'reference': reference, 'score': float(self.score(answer, reference))}

    def run_batch(self, prompts=None, timeout: Optional[float] = None) -> list[dict]:
        return self._wait(self.submit_batch(prompts), timeout)

    def to_dataframe(self):
        """`results` as a pandas DataFrame (pandas is not a dependency of swiftnb)."""
        try:
            import pandas
        except ImportError:
            raise ImportError('to_dataframe needs pandas: pip install pandas (compare.results is a plain list)') \
                from None
        return pandas.DataFrame(self.results)


def _column(variant: str) -> AnswerView:
    view = AnswerView(variant)
    view.box.layout = widgets.Layout(flex='1 1 0', margin='0 12px 0 0')  # columns of equal width
    return view


def _load_checkpoints(engine, run_dir: str, chosen: Optional[Sequence]) -> list[str]:
    """The run's checkpoints (those `chosen`, by step or name) as adapters on the engine; their names."""
    found = run_checkpoints(run_dir)
    if chosen is not None:
        wanted = {c if str(c).startswith('checkpoint-') else f'checkpoint-{c}' for c in chosen}
        missing = sorted(wanted - set(found))
        if missing:
            raise UsageError(f'{", ".join(missing)} not in {str(run_dir)!r}; it has {", ".join(found)}')
        found = {name: path for name, path in found.items() if name in wanted}
    for name, path in found.items():
        if name not in engine.adapters:
            engine.add_lora(name, path)
        elif engine.adapters[name].lora_path != path:
            raise UsageError(f'the engine already serves another adapter named {name!r} '
                             f'({engine.adapters[name].lora_path}); remove it (engine.remove_lora) first')
    return list(found)


def batch_rows(prompts: Union[Sequence, str, Path]) -> list[dict]:
    """{'query', 'history', 'system', 'label'} rows from strings, rows of the seed's dataset format, or a .jsonl
    file of them (dataset_infer's reader and checks)."""
    if isinstance(prompts, (str, Path)):
        return read_rows(str(prompts))
    return [check_row({'query': p} if isinstance(p, str) else p, f'prompts[{i}]') for i, p in enumerate(prompts)]


def exact_match(answer: str, reference: str) -> float:
    """1.0 when the answer is the reference (surrounding whitespace aside), else 0.0."""
    return float(answer.strip() == reference.strip())


def _routes(source, variants: Sequence, api_key: str) -> dict:
    """{column name: (source, model name there)}. A variant is a model of the widget's own source (an adapter's
    name, None for the base model), or `(column name, url[, model])`: that server's answer (its base model unless
    `model` is given), e.g. a merged checkpoint served by `swiftnb deploy`, or the pt backend's."""
    models = source.models()
    routes = {}
    for variant in variants:
        if isinstance(variant, tuple):
            if not 2 <= len(variant) <= 3 or not str(variant[1]).startswith(('http://', 'https://')):
                raise UsageError(f'a column from another server is (name, url) or (name, url, model), got {variant!r}')
            name, there = variant[0], EndpointSource(variant[1], api_key)
            served = there.models()
            model = variant[2] if len(variant) == 3 else served[0]
            if model not in served:
                raise UnknownModelError(f'{variant[1]} serves no model {model!r}; it serves {", ".join(served)}')
        else:
            name = model = models[0] if variant is None else variant
            there = source
            if name not in models:
                raise UnknownModelError(f'unknown variant {name!r}; known: {", ".join(models)} (None is the base '
                                        'model; (name, url) a column from another server)')
        if name in routes:
            raise UsageError(f'two columns are named {name!r}; give each its own name')
        routes[name] = (there, model)
    if not routes:
        raise UnknownModelError(f'no variants given; known: {", ".join(models)} (None is the base model)')
    return routes


def results_html(results: list[dict]) -> str:
    """A prompt-by-variant table of the batch answers: each with its tokens, time to first token and score
    (where the prompt had a reference), and the mean score of each variant below."""
    variants = list(dict.fromkeys(row['variant'] for row in results))
    by_prompt: dict[str, dict] = {}
    for row in results:
        by_prompt.setdefault(row['prompt'], {})[row['variant']] = row
    cell = 'style="border:1px solid #ddd;padding:4px 6px;vertical-align:top;white-space:pre-wrap"'

    def answer(row: Optional[dict]) -> str:
        if row is None:
            return ''
        score = f', score {row["score"]:g}' if 'score' in row else ''
        return (f'{html.escape(row["response"])}<br><small style="color:#777">{row["tokens"]} tokens, first after '
                f'{row["ttft_s"]:.2f} s{score}</small>')
    head = ''.join(f'<th {cell}>{html.escape(v)}</th>' for v in ['prompt', *variants])
    body = ''.join(f'<tr><td {cell}>{html.escape(prompt)}</td>' + ''.join(f'<td {cell}>{answer(rows.get(v))}</td>'
                                                                         for v in variants) + '</tr>'
                   for prompt, rows in by_prompt.items())
    scored = {v: [r['score'] for r in results if r['variant'] == v and 'score' in r] for v in variants}
    if any(scored.values()):
        body += f'<tr><td {cell}><b>mean score</b></td>' + ''.join(
            f'<td {cell}><b>{statistics.mean(s):.2f}</b> of {len(s)}</td>' if s else f'<td {cell}></td>'
            for s in scored.values()) + '</tr>'
    return f'<table style="border-collapse:collapse"><tr>{head}</tr>{body}</table>'
