"""One streamed answer: its text and figures (`Answer`), and the view that shows it (`AnswerView`).

`stream_into` fills an answer and redraws its view as often as swiftnb.redraw allows, and once
more at the end, so the final text is exactly what the source produced.
"""
import asyncio
import contextlib
import html
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Optional

import ipywidgets as widgets

from swiftnb.redraw import Redraws
from swiftnb.widgets.markdown import render_markdown
from swiftnb.widgets.source import Piece


@dataclass
class Answer:
    text: str = ''
    tokens: int = 0
    finish_reason: Optional[str] = None
    started: float = field(default_factory=time.perf_counter)
    first_token_at: Optional[float] = None
    finished_at: Optional[float] = None

    def add(self, piece: Piece) -> None:
        if self.first_token_at is None and piece.num_tokens:
            self.first_token_at = time.perf_counter()
        self.text += piece.text
        self.tokens = piece.total_tokens if piece.total_tokens is not None else self.tokens + piece.num_tokens
        self.finish_reason = piece.finish_reason or self.finish_reason

    def finish(self, reason: Optional[str] = None) -> None:
        self.finished_at = time.perf_counter()
        self.finish_reason = reason or self.finish_reason

    @property
    def ttft(self) -> Optional[float]:
        """Seconds to the first token."""
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def tokens_per_s(self) -> Optional[float]:
        end = self.finished_at or time.perf_counter()
        return self.tokens / (end - self.started) if end > self.started else None

    def summary(self) -> str:
        parts = [f'{self.tokens} tokens']
        if self.tokens_per_s is not None:
            parts.append(f'{self.tokens_per_s:.1f} tokens/s')
        if self.ttft is not None:
            parts.append(f'TTFT {self.ttft:.2f} s')
        parts.append(self.finish_reason or 'streaming')
        return ' · '.join(parts)

    def record(self) -> dict:
        return {'response': self.text, 'tokens': self.tokens, 'tokens_per_s': self.tokens_per_s,
                'ttft_s': self.ttft, 'finish_reason': self.finish_reason}


async def stream_into(answer: Answer, pieces: AsyncIterator[Piece],
                      redraw: Callable[[Answer], None] = lambda answer: None) -> Answer:
    """Fill `answer` from `pieces`, redrawing at most swiftnb.redraw.PER_SECOND times and once at the end.

    Cancelling (Stop) closes `pieces`, which aborts the request; the answer keeps its text, 'abort'.
    """
    redraws = Redraws()
    try:
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                answer.add(piece)
                if redraws.due():
                    redraw(answer)
    except asyncio.CancelledError:
        answer.finish('abort')
        redraw(answer)
        raise
    answer.finish()
    redraw(answer)
    return answer


class AnswerView:
    """An answer as Markdown with its figures underneath, in one HTML widget, so that a redraw is one
    message to the frontend; counts its redraws (`num_updates`)."""

    def __init__(self, title: str = ''):
        self.title = widgets.HTML(f'<b>{html.escape(title)}</b>' if title else '')
        self.html = widgets.HTML(layout=widgets.Layout(min_height='1.5em'))
        self.box = widgets.VBox([self.title, self.html])
        self.box.add_class('swiftnb-answer')
        self.body_html = self.footer_html = ''
        self.num_updates = 0
        self.render_html: Optional[Callable[[str], str]] = None  # set to show something other than Markdown

    def redraw(self, answer: Answer) -> None:
        self.num_updates += 1
        self.body_html = (self.render_html or render_markdown)(answer.text)
        self.footer_html = f'<small style="color:#666">{html.escape(answer.summary())}</small>'
        self.html.value = f'<div class="swiftnb-body">{self.body_html}</div>{self.footer_html}'

    def clear(self) -> None:
        self.body_html = self.footer_html = self.html.value = ''
