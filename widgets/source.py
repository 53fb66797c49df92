"""Where a widget's answers come from: the kernel's engine, or any OpenAI-compatible URL.

Both sources take the same request (query, history, system, model name and the
settings as an XRequestConfig) and yield the same `Piece`s, so the widgets render
one way whatever answers them. A request is checked (`prepare`) in the caller's
thread before anything streams, so a bad setting is an error at once, not a half
drawn answer. Streams run on an EngineLoop thread, never on the kernel's loop: a
cell that blocks does not stall an answer, and an answer does not stall cells.
"""
import contextlib
import threading
from dataclasses import dataclass
from typing import AsyncIterator, Optional, Union

from swiftnb.client import build_request
from swiftnb.engine.base import Engine
from swiftnb.engine.loop import EngineLoop
from swiftnb.infer import Prepared, prepare
from swiftnb.settings import XRequestConfig


@dataclass
class Piece:
    """What one step of the answer added."""
    text: str
    num_tokens: int
    finish_reason: Optional[str] = None
    total_tokens: Optional[int] = None  # the whole answer's token count, where a source reports it at the end


@dataclass
class Request:
    query: str
    history: list
    system: Optional[str]
    model: str
    settings: XRequestConfig
    prepared: Optional[Prepared] = None  # the engine's: encoded and checked


class EngineSource:
    """The kernel's engine: prompts are encoded with the model's template, adapters picked by name."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.loop = engine.loop
        self.template = engine.template

    @property
    def base_name(self) -> str:
        return self.engine.model_type

    def models(self) -> list[str]:
        return self.engine.model_names()

    def prepare(self, query, history, system, model, settings) -> Request:
        request = Request(query, list(history), system, model or self.base_name, settings)
        turn = {'query': query, 'history': history, 'system': system}
        request.prepared, = prepare(self.engine, self.template, [turn], settings.apply(self.engine.generation_config),
                                    self.engine.adapter(request.model))
        return request

    async def stream(self, request: Request) -> AsyncIterator[Piece]:
        deltas = self.engine.stream(request.prepared.prompt_ids, request.prepared.config,
                                    self.engine.adapter(request.model))
        async with contextlib.aclosing(deltas):  # leaving early (Stop) aborts the request in the engine
            async for delta in deltas:
                yield Piece(delta.text, len(delta.token_ids), delta.finish_reason)


class EndpointSource:
    """An OpenAI-compatible server (swiftnb's, vLLM's, ...), through the client layer and the openai SDK."""

    def __init__(self, url: str, api_key: str = 'EMPTY'):
        from openai import OpenAI
        self.url, self.api_key = url.rstrip('/'), api_key
        self.loop = _endpoint_loop()
        self._sync_client = OpenAI(api_key=api_key, base_url=self.url)
        self._client = None  # an AsyncOpenAI, made on the loop thread that uses it

    def models(self) -> list[str]:
        return [model.id for model in self._sync_client.models.list().data]

    @property
    def base_name(self) -> str:
        return self.models()[0]  # servers list their base model first

    def prepare(self, query, history, system, model, settings) -> Request:
        return Request(query, list(history), system, model or self.base_name, settings)

    async def stream(self, request: Request) -> AsyncIterator[Piece]:
        from openai import AsyncOpenAI
        if self._client is None:
            self._client = AsyncOpenAI(api_key=self.api_key, base_url=self.url)
        _, kwargs = build_request(request.model, request.query, request.history, request.system,
                                  request.settings.model_copy(update={'stream': True}), is_chat_request=True)
        stream = await self._client.chat.completions.create(**kwargs, stream_options={'include_usage': True})
        async with stream:  # closing the connection early (Stop) makes the server abort the request
            async for chunk in stream:
                if chunk.choices:
                    choice = chunk.choices[0]
                    yield Piece(choice.delta.content or '', 1, choice.finish_reason)
                elif chunk.usage is not None:  # sent last: the exact count (a chunk may hold several tokens)
                    yield Piece('', 0, total_tokens=chunk.usage.completion_tokens)


_loop_lock = threading.Lock()
_loop: Optional[EngineLoop] = None


def _endpoint_loop() -> EngineLoop:
    """One loop thread for every widget that talks to a URL."""
    global _loop
    with _loop_lock:
        if _loop is None or not _loop.running:
            _loop = EngineLoop('swiftnb-widgets-loop')
        return _loop


Source = Union[EngineSource, EndpointSource]


def open_source(engine_or_url: Union[Engine, str], api_key: str = 'EMPTY') -> Source:
    if isinstance(engine_or_url, Engine):
        return EngineSource(engine_or_url)
    if isinstance(engine_or_url, str) and engine_or_url.startswith(('http://', 'https://')):
        return EndpointSource(engine_or_url, api_key)
    raise TypeError(f'a widget needs an engine or an http(s) URL, got {engine_or_url!r}')
