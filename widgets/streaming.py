"""What the chat and compare widgets share: answers streamed on a loop thread, Stop, errors.

`StreamGroup` runs the answers of one action (one for a chat turn, one per column
for a comparison) at once on the source's loop thread, and `stop()` aborts them
from any thread. `StreamingWidget` is the frame around it: settings, Stop, a
status line that shows a mistake in one line while the widget keeps working.
"""
import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import html
from typing import AsyncIterator, Callable, Optional

import ipywidgets as widgets

from swiftnb.errors import UsageError
from swiftnb.settings import describe_error
from swiftnb.engine.interrupts import stopped
from swiftnb.engine.loop import EngineLoop
from swiftnb.widgets.answer import Answer, stream_into
from swiftnb.widgets.prompt_box import PromptBox
from swiftnb.widgets.settings import SettingsBar
from swiftnb.widgets.source import Piece, open_source

Job = tuple[Answer, AsyncIterator[Piece], Callable[[Answer], None]]  # (answer, its pieces, redraw)


class StreamGroup:
    def __init__(self, loop: EngineLoop, jobs: list[Job], then: Callable[[Optional[BaseException]], object]):
        """Stream every job at once; when all end, `then(first error or None)` gives the future's result."""
        self._loop = loop
        self._tasks: list[asyncio.Task] = []
        self._stopped = False
        self.future: concurrent.futures.Future = loop.submit(self._run(jobs, then))

    async def _run(self, jobs, then):
        self._tasks = [asyncio.ensure_future(stream_into(*job)) for job in jobs]
        if self._stopped:  # Stop came before the tasks existed
            self._cancel()
        await asyncio.wait(self._tasks)
        errors = [task.exception() for task in self._tasks if not task.cancelled() and task.exception()]
        return then(errors[0] if errors else None)

    def _cancel(self):
        for task in self._tasks:
            task.cancel()

    def stop(self) -> None:
        """Abort every answer still streaming; each keeps what it had, finished 'abort'."""
        self._stopped = True
        if self._loop.running:
            self._loop.asyncio_loop.call_soon_threadsafe(self._cancel)

    @property
    def running(self) -> bool:
        return not self.future.done()


class StreamingWidget(widgets.VBox):
    """The frame: a source, a prompt box, settings, Send / Stop, and a status line."""

    def __init__(self, engine_or_url, api_key: str = 'EMPTY', placeholder: str = '', **generation):
        super().__init__()
        self.source = open_source(engine_or_url, api_key)
        self.settings = SettingsBar(**generation)
        self.prompt = PromptBox(placeholder=placeholder)
        self.prompt.on_submit(lambda text: self._from_ui(self.submit, text))
        self.send_button = widgets.Button(description='Send', button_style='primary', icon='paper-plane')
        self.stop_button = widgets.Button(description='Stop', icon='stop', disabled=True)
        self.send_button.on_click(lambda _: self._from_ui(self.submit, self.prompt.value))
        self.stop_button.on_click(lambda _: self.stop())
        self.status = widgets.HTML()
        self._group: Optional[StreamGroup] = None
        self._snapshots: list = []  # the display handles of _ipython_display_'s snapshots

    def _ipython_display_(self):
        """The live widget (and a summary where it cannot run), then a snapshot of what it shows, refreshed each time
        answers end: the final HTML a reader of the saved notebook sees where widgets do not run (GitHub, an
        untrusted notebook). Where the widget runs, its own stylesheet hides the snapshot (prompt_box.py)."""
        from IPython.display import display
        display(self._repr_mimebundle_(), raw=True)
        self._snapshots.append(display({'text/html': self.snapshot_html()}, raw=True, display_id=True))

    def snapshot_html(self) -> str:
        shown = static_html(self)
        note = f'<p><i>{type(self).__name__} as it was when the notebook was saved</i></p>' if shown else ''
        return f'<div class="swiftnb-static">{note}{shown}</div>'

    def refresh_snapshot(self) -> None:
        # In an empty context: ipykernel then sends it as output of the cell running now (a notebook runner keeps
        # only those), not of the cell whose context the loop thread's task copied when it was submitted.
        update = functools.partial(self._update_snapshots, self.snapshot_html())
        with contextlib.suppress(Exception):  # a copy for readers: its failing (a kernel going away) must not fail
            contextvars.Context().run(update)  # the answers it follows

    def _update_snapshots(self, shown: str) -> None:
        for snapshot in self._snapshots:
            snapshot.update({'text/html': shown}, raw=True)

    def _repr_mimebundle_(self, **kwargs):
        """Besides the live widget, what a reader sees where it cannot run: a notebook not (yet) trusted, GitHub,
        nbviewer without the widget state. ipywidgets' own fallback is a page of repr."""
        bundle = super()._repr_mimebundle_(**kwargs)
        summary = self.shows()
        bundle['text/plain'] = f'{type(self).__name__}: {summary} (run the cell, or trust the notebook, to use it)'
        bundle['text/html'] = (f'<div style="border:1px solid #ccc;padding:6px"><b>{type(self).__name__}</b>: '
                               f'{html.escape(summary)} <i>(run the cell, or trust the notebook, to use it)</i></div>')
        return bundle

    def shows(self) -> str:
        """A line that says what the widget shows."""
        return ''

    @property
    def streaming(self) -> bool:
        return self._group is not None and self._group.running

    def stop(self, wait: bool = False) -> None:
        """Abort what is streaming; with `wait`, return once it has ended."""
        if self._group is not None:
            self._group.stop()
            if wait:
                concurrent.futures.wait([self._group.future], timeout=30)

    def submit(self, prompt: str) -> concurrent.futures.Future:
        """Start answering and return at once; the future gives the answer(s)."""
        raise NotImplementedError

    def send(self, prompt: str, timeout: Optional[float] = None):
        """Send and wait for the answer(s); the widget streams them meanwhile."""
        return self._wait(self.submit(prompt), timeout)

    def _wait(self, future: concurrent.futures.Future, timeout: Optional[float]):
        """The future's result; an interrupt (Ctrl-C, a kernel interrupt) or a timeout stops the answers too."""
        try:
            return future.result(timeout)
        except KeyboardInterrupt:  # as the engine's own calls do: aborted before the cell ends, and said so
            self.stop(wait=True)
            raise KeyboardInterrupt(stopped('the answer')) from None
        except BaseException:
            if not future.done():
                self.stop()
            raise

    async def send_async(self, prompt: str):
        """`await widget.send_async(...)`: the same, without blocking the caller's loop."""
        return await asyncio.wrap_future(self.submit(prompt))

    def _start(self, jobs: list[Job], then: Callable[[Optional[BaseException]], object]) -> concurrent.futures.Future:
        self.show_error(None)
        self._set_busy(True)

        def finish(error):
            self._set_busy(False)
            try:
                return then(error)
            finally:
                self.refresh_snapshot()
        try:
            self._group = StreamGroup(self.source.loop, jobs, finish)
        except Exception:  # the engine was shut down, say
            self._set_busy(False)
            raise
        return self._group.future

    def _set_busy(self, busy: bool) -> None:
        self.send_button.disabled = busy
        self.stop_button.disabled = not busy

    def show_error(self, error: Optional[BaseException]) -> None:
        self.status.value = '' if error is None else \
            f'<span style="color:#b00">&#9888; {html.escape(describe_error(error) or type(error).__name__)}</span>'

    @contextlib.contextmanager
    def _action(self):
        """Around Send: refused while an answer streams; a mistake (bad setting, unknown adapter) shows in
        the status line, then goes to the caller."""
        try:
            if self.streaming:
                raise UsageError('an answer is still streaming; wait for it or press Stop')
            yield
        except Exception as error:
            self.show_error(error)
            raise

    def _from_ui(self, action, *args):
        """A button or Enter: the mistake is already on show; the kernel and the widget go on."""
        try:
            action(*args)
        except Exception:
            pass


def static_html(widget: widgets.Widget) -> str:
    """What a widget tree shows, as plain HTML: the contents of its HTML widgets, side by side where an HBox lays
    them out; controls (inputs, buttons) and hidden boxes leave nothing."""
    if isinstance(widget, widgets.HTML):
        return f'<div>{widget.value}</div>' if widget.value else ''
    if not isinstance(widget, widgets.Box) or widget.layout.display == 'none':
        return ''
    parts = [part for part in map(static_html, widget.children) if part]
    if isinstance(widget, widgets.HBox) and parts:
        return '<div style="display:flex;gap:12px">' + ''.join(f'<div style="flex:1">{p}</div>' for p in parts) \
            + '</div>'
    return ''.join(parts)
