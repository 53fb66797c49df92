"""RequestGuard: what the server answers before the app sees a request, and how it ends requests when it stops.

It wraps both apps (vLLM's and the pt one), inside the API key check:
- a body over `max_request_bytes` gets 413 before it is read (a 10 MB body would otherwise be parsed,
  rendered and tokenised while the loop that streams everyone's answers waits);
- a stop string with a lone surrogate gets 400 (vLLM's engine core cannot take it: a 500 on vLLM's server);
- a dead engine gets 503 with why it died and how to restart, on every route (/health included), and so does
  a sleeping one (engine.sleep()), with how to wake it;
- an error FastAPI answers itself as `{"detail": ...}` goes out in OpenAI's error JSON, as every other does;
- `drain(grace)` stops taking requests (503 "the server is stopping"), gives the running ones `grace`
  seconds, then ends each: a stream with an OpenAI error event and `data: [DONE]`, any other with a 503.
  Ending one cancels its handler, and vLLM's serving layer and the pt app abort a cancelled request in
  the engine, so nothing keeps generating for a client that is gone.
"""
import asyncio
import json
import re
from typing import Optional

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swiftnb.errors import UnknownModelError
from swiftnb.server.errors import error_body, error_json
from swiftnb.server.protocol import encodable

MIB = 1 << 20


def default_max_request_bytes(max_model_len: int) -> int:
    """Room for a whole context of text with JSON escapes, tools and images: 64 bytes a token, 8 MiB at least."""
    return max(8 * MIB, 64 * max_model_len)


class _Request:
    """One request the guard let through: its handler's task and what it has sent so far."""

    def __init__(self, task: asyncio.Task):
        self.task, self.started, self.streaming, self.ended = task, False, False, False
        self.error_start: Optional[Message] = None  # an error's start, held until its body is read
        self.error_body = b''


class RequestGuard:
    def __init__(self, app: ASGIApp, engine, max_request_bytes: int, served_model_name: Optional[str] = None):
        self.app, self.engine, self.max_request_bytes = app, engine, max_request_bytes
        self.served_model_name = served_model_name
        self.stopping = False
        self._running: set[_Request] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None and scope['method'] not in ('GET', 'HEAD', 'OPTIONS'):
            receive, refusal = await self._read_body(receive)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        request = _Request(asyncio.current_task())
        self._running.add(request)
        try:
            await self.app(scope, receive, self._sender(request, send, self._unknown_model))
        except asyncio.CancelledError:
            if not self.stopping:
                raise  # the client left, or the server is going down: nothing to send
            await self._end(request, send)
        finally:
            self._running.discard(request)

    def _refusal(self, scope: Scope):
        if self.stopping:
            return error_json(503, 'the server is stopping; send the request to the next one')
        if self.engine.closed:
            return error_json(503, f'the engine cannot answer: {self.engine.closed_because}; '
                                   'start it again (get_vllm_engine / get_pt_engine) and serve it')
        if self.engine.asleep:
            return error_json(503, f'the engine is asleep (level {self.engine.asleep}) and its GPU memory is free; '
                                   'wake it (engine.wake_up() or %swiftnb wake) and send the request again')
        length = dict(scope['headers']).get(b'content-length')
        if length is not None and length.isdigit() and int(length) > self.max_request_bytes:
            return self._too_large(f'{int(length)} bytes')
        return None

    def _too_large(self, size: str):
        return error_json(413, f'the request body has {size}, more than this server takes ({self.max_request_bytes} '
                               'bytes); send a shorter one or start the server with a larger max_request_bytes')

    async def _read_body(self, receive: Receive):
        """The body, read here up to the limit (one sent without a length is checked as it comes): (a receive that
        replays it, a refusal or None)."""
        body, more = b'', True
        while more:
            message = await receive()
            if message['type'] != 'http.request':
                return receive, None  # the client left: the app sees it on its first receive
            body += message.get('body', b'')
            more = message.get('more_body', False)
            if len(body) > self.max_request_bytes:
                return receive, self._too_large('more bytes')
        refusal = _lone_surrogate_in_stop(body)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {'type': 'http.request', 'body': body, 'more_body': False}
        return replay, refusal

    def _unknown_model(self, error: dict) -> None:
        """vLLM's 404 for a `model` it does not serve ('The model `qwen-7b-chat` does not exist.') in the words the
        pt server and the engine use, which name what is served, adapters included."""
        if error.get('code') == 404 and error.get('message', '').startswith('The model `'):
            try:
                self.engine.adapter(error['message'].split('`')[1], self.served_model_name)
            except UnknownModelError as unknown:
                error['message'], error['param'] = str(unknown), 'model'

    @staticmethod
    def _sender(request: _Request, send: Send, reword) -> Send:
        async def sender(message: Message) -> None:
            if message['type'] == 'http.response.start':
                request.started = True
                content_type = dict(message.get('headers', [])).get(b'content-type', b'')
                request.streaming = content_type.startswith(b'text/event-stream')
                if message['status'] >= 400 and content_type.startswith(b'application/json'):
                    request.error_start = message
                    return
            elif message['type'] == 'http.response.body':
                request.ended = not message.get('more_body', False)
                if request.error_start is not None:
                    request.error_body += message.get('body', b'')
                    if request.ended:
                        await _send_openai_error(request.error_start, request.error_body, send, reword)
                    return
            await send(message)
        return sender

    @staticmethod
    async def _end(request: _Request, send: Send) -> None:
        """What a request cut off at stop gets: the end of its stream, or a 503 if nothing was sent yet."""
        if request.ended:
            return
        if not request.started or request.error_start is not None:
            response = error_json(503, 'the server stopped before this request finished; send it again')
            await send({'type': 'http.response.start', 'status': 503, 'headers': response.raw_headers})
            await send({'type': 'http.response.body', 'body': response.body})
        elif request.streaming:
            event = error_body(503, 'the server stopped before this answer finished; send the request again')
            await send({'type': 'http.response.body', 'more_body': False,
                        'body': f'data: {json.dumps(event)}\n\ndata: [DONE]\n\n'.encode()})
        else:
            await send({'type': 'http.response.body', 'body': b'', 'more_body': False})

    async def drain(self, grace: float) -> int:
        """Stop taking requests, wait up to `grace` seconds for the running ones, end the rest; how many were cut."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._running and loop.time() < deadline:
            await asyncio.sleep(0.05)
        cut = list(self._running)
        for request in cut:
            request.task.cancel()
        while self._running:  # each ends itself (RequestGuard.__call__), sending its last bytes
            await asyncio.sleep(0.01)
        return len(cut)


_SURROGATE = re.compile(rb'\\u[dD][89a-fA-F]')  # a surrogate's escape: in JSON's text only as such


def _lone_surrogate_in_stop(body: bytes):
    """A 400 for a stop string that is not text (a lone surrogate, which JSON's escapes allow), or None. vLLM's
    server passes it to its engine core, whose message encoding fails: a 500 with no message, on both servers of
    vLLM's. Bodies without a surrogate escape (nearly all) are not parsed."""
    if not _SURROGATE.search(body):
        return None
    try:
        stop = json.loads(body).get('stop')
    except (ValueError, AttributeError):
        return None  # not a JSON object: the app says what is wrong with it
    for text in [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []:
        if not isinstance(text, str):
            continue
        try:
            encodable(text)  # the pt server's rule for text, one for both apps
        except ValueError:
            return error_json(400, f'stop string {text!r} is not valid Unicode text (it holds a lone surrogate); '
                                   'send text whose surrogates come in pairs', 'stop')
    return None


async def _send_openai_error(start: Message, body: bytes, send: Send, reword) -> None:
    """An error answer, in OpenAI's error JSON if it was FastAPI's own `{"detail": ...}`: FastAPI answers some of
    its errors so without asking the app's handlers (a body that is not UTF-8 JSON: 400), so no handler can.
    `reword(error)` may change an OpenAI error's fields in place."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and set(answer) == {'detail'}:
        body = json.dumps(error_body(start['status'], str(answer['detail']))).encode()
    elif isinstance(answer, dict) and isinstance(answer.get('error'), dict):
        reword(answer['error'])
        body = json.dumps(answer).encode()
    headers = [(k, v) for k, v in start.get('headers', []) if k.lower() != b'content-length']
    await send({**start, 'headers': [*headers, (b'content-length', str(len(body)).encode())]})
    await send({'type': 'http.response.body', 'body': body})
