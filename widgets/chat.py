"""ChatWidget: a conversation with the kernel's engine (or any OpenAI-compatible URL).

    chat = ChatWidget(engine)           # or ChatWidget('http://127.0.0.1:8000/v1')
    chat                                # shows it; chat.send('Hello') drives it from code
"""
import concurrent.futures
import html
from typing import Optional

import ipywidgets as widgets

from swiftnb.errors import UnknownModelError, UsageError
from swiftnb.widgets.answer import Answer, AnswerView
from swiftnb.widgets.streaming import StreamingWidget

_USER_STYLE = 'background:#eef3fb;border-radius:6px;padding:4px 8px;margin:6px 0 2px;white-space:pre-wrap'


class ChatWidget(StreamingWidget):
    def __init__(self, engine_or_url, model: Optional[str] = None, system: Optional[str] = None,
                 api_key: str = 'EMPTY', **generation):
        """`model`: the base model or an adapter's name (the selector lists them); `generation`: the
        client layer's settings (temperature, max_tokens, seed, top_p, top_k, stop, ...)."""
        super().__init__(engine_or_url, api_key, placeholder='Message (Enter sends, Shift+Enter: new line)',
                         **generation)
        self.history: list[list[str]] = []  # the seed's format: [[query, response], ...]
        self.last_answer: Optional[Answer] = None
        self.last_view: Optional[AnswerView] = None
        models = self.source.models()
        if model is not None and model not in models:
            raise UnknownModelError(f'no model or adapter named {model!r}; known: {", ".join(models)}')
        self.model_select = widgets.Dropdown(options=models, value=model or models[0], description='model')
        self.system_box = widgets.Text(value=system or '', placeholder='system prompt (optional)',
                                       description='system', layout=widgets.Layout(flex='1 1 auto'))
        self.clear_button = widgets.Button(description='Clear', icon='eraser')
        self.clear_button.on_click(lambda _: self.clear())
        self.transcript = widgets.VBox()
        self.transcript.add_class('swiftnb-transcript')
        self.add_class('swiftnb-chat')
        self.children = [widgets.HBox([self.model_select, self.system_box]), self.settings.box, self.transcript,
                         self.prompt, widgets.HBox([self.send_button, self.stop_button, self.clear_button]),
                         self.status]

    def shows(self) -> str:
        return f'a chat with {self.model_select.value} (models: {", ".join(self.model_select.options)})'

    @property
    def messages(self) -> list[dict]:
        """The conversation as OpenAI chat messages."""
        system = self.system_box.value.strip()
        messages = [{'role': 'system', 'content': system}] if system else []
        for query, response in self.history:
            messages += [{'role': 'user', 'content': query}, {'role': 'assistant', 'content': response}]
        return messages

    def submit(self, text: str) -> concurrent.futures.Future:
        """Start an answer and return at once; the future gives the answer's text."""
        with self._action():
            if not text.strip():
                raise UsageError('nothing to send: the message is empty')
            request = self.source.prepare(text, self.history, self.system_box.value.strip() or None,
                                          self.model_select.value, self.settings.request_config())
            answer, view = Answer(), AnswerView()
            turn = widgets.VBox([widgets.HTML(f'<div style="{_USER_STYLE}">{html.escape(text)}</div>'), view.box])
            self.transcript.children += (turn,)
            self.last_answer, self.last_view = answer, view
            self.prompt.value = ''

            def take_back():  # no answer: the turn goes, the message comes back to the box
                self.transcript.children = tuple(c for c in self.transcript.children if c is not turn)
                self.prompt.value = self.prompt.value or text

            def done(error):
                if error is not None:
                    take_back()
                    self.show_error(error)
                    raise error
                self.history.append([text, answer.text])  # a stopped answer stays, as it was shown
                return answer.text
            try:
                return self._start([(answer, self.source.stream(request), view.redraw)], done)
            except Exception:  # the engine was shut down, say
                take_back()
                raise

    def clear(self) -> None:
        """Stop any answer, forget the conversation, and re-read the model list (adapters may have changed)."""
        self.stop(wait=True)  # so that a stopped answer does not land in the new history
        self.history = []
        self.transcript.children = ()
        self.show_error(None)
        current, models = self.model_select.value, self.source.models()
        self.model_select.options = models
        self.model_select.value = current if current in models else models[0]
