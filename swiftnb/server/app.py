"""An OpenAI-compatible FastAPI app over an Engine (either backend).

The app runs on the engine's own loop (see background.py), so handlers iterate
`engine.stream` directly. Responses are the `openai` package's types; errors are
OpenAI's JSON with the status codes vLLM's server gives.
"""
import time
import uuid
from http import HTTPStatus
from typing import AsyncIterator, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types import Completion as OpenAICompletion
from openai.types import CompletionChoice, CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion_choice import Logprobs as CompletionLogprobs
from pydantic import ValidationError

from swiftnb.config import validation_message
from swiftnb.engine.base import Completion, Delta, Engine, LoRARequest
from swiftnb.engine.merge import merge
from swiftnb.server import protocol
from swiftnb.template import Template


class APIError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def error_json(status: int, message: str, param: Optional[str] = None) -> JSONResponse:
    kind = HTTPStatus(status).phrase.replace(' ', '') + 'Error'  # 'BadRequestError', as vLLM names them
    return JSONResponse({'error': {'message': message, 'type': kind, 'param': param, 'code': status}}, status)


def create_app(engine: Engine, template: Template, served_model_name: Optional[str] = None,
               api_key: Optional[str] = None) -> FastAPI:
    async def check_key(request: Request):
        if api_key and request.url.path != '/health':
            if request.headers.get('authorization') != f'Bearer {api_key}':
                raise APIError(401, 'missing or wrong API key')

    # A dependency, not an HTTP middleware: Starlette's BaseHTTPMiddleware re-streams every response
    # through a memory channel, which cost a third of the server's time per streamed token.
    app = FastAPI(title='swiftnb', docs_url=None, redoc_url=None, dependencies=[Depends(check_key)])
    app.state.base_name = served_model_name or engine.model_type
    app.state.created = int(time.time())

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_, exc: RequestValidationError):
        return error_json(400, *validation_message(exc))

    @app.exception_handler(APIError)
    async def api_error(_, exc: APIError):
        return error_json(exc.status, exc.message, exc.param)

    @app.exception_handler(ValueError)  # bad settings, too-long prompts, bad adapters: the caller's mistake
    async def value_error(_, exc: ValueError):
        if isinstance(exc, ValidationError):
            return error_json(400, *validation_message(exc))
        return error_json(400, str(exc))


    @app.get('/health')
    async def health():
        return {}

    @app.get('/v1/models')
    async def models():
        base = Model(id=app.state.base_name, created=app.state.created, object='model', owned_by='swiftnb',
                     root=engine.model_dir, parent=None)
        adapters = [Model(id=name, created=app.state.created, object='model', owned_by='swiftnb',
                          root=lora.lora_path, parent=app.state.base_name) for name, lora in engine.adapters.items()]
        return {'object': 'list', 'data': [m.model_dump() for m in [base, *adapters]]}

    @app.post('/v1/load_lora_adapter')
    async def load_lora(body: protocol.LoadLoRARequest):
        engine.add_lora(body.lora_name, body.lora_path)
        return {'message': f'adapter {body.lora_name!r} loaded'}

    @app.post('/v1/unload_lora_adapter')
    async def unload_lora(body: protocol.UnloadLoRARequest):
        engine.remove_lora(body.lora_name)
        return {'message': f'adapter {body.lora_name!r} unloaded'}

    @app.post('/v1/chat/completions')
    async def chat(body: protocol.ChatCompletionRequest):
        lora = _adapter(app, engine, body.model)
        prompt_ids = template.encode_messages([m.model_dump() for m in body.messages])
        run = _Run(engine, body, [prompt_ids], lora, body.num_logprobs)
        if body.stream:
            return _sse(run.chat_chunks())
        return await run.chat_response()

    @app.post('/v1/completions')
    async def completions(body: protocol.CompletionRequest):
        lora = _adapter(app, engine, body.model)
        prompts = [engine.hf_tokenizer(p)['input_ids'] for p in body.prompts]
        run = _Run(engine, body, prompts, lora, body.logprobs)
        if body.stream:
            return _sse(run.completion_chunks())
        return await run.completion_response()

    return app


def _adapter(app: FastAPI, engine: Engine, model: str) -> Optional[LoRARequest]:
    if model == app.state.base_name:
        return None
    if model in engine.adapters:
        return engine.adapters[model]
    names = ', '.join([app.state.base_name, *engine.adapters])
    raise APIError(404, f'the model {model!r} does not exist; available models: {names}', 'model')


# GenerationConfig's names -> the request fields they come from, so errors name what the client sent.
class _Run:
    """One request's generation: validated settings, and its responses built from engine Deltas."""

    def __init__(self, engine: Engine, body, prompts: list[list[int]], lora, logprobs: Optional[int]):
        self.engine, self.body, self.prompts, self.lora = engine, body, prompts, lora
        self.config = body.generation_config(engine.generation_config, logprobs)
        for i, ids in enumerate(prompts):
            which = 'the prompt' if len(prompts) == 1 else f'prompt {i}'
            engine.check_prompt(ids, which)
            if body.requested_max_tokens is not None and len(ids) + body.requested_max_tokens > engine.max_model_len:
                raise APIError(400, f'{which} has {len(ids)} tokens and max_tokens is {body.requested_max_tokens}: '
                                    f'more than max_model_len {engine.max_model_len} allows', 'max_tokens')
        self.id = uuid.uuid4().hex
        self.created = int(time.time())
        self.n = self.config.n

    async def deltas(self) -> AsyncIterator[tuple[int, Delta]]:
        """(choice index, delta) from every prompt at once; leaving early aborts them all."""
        async for batch in merge([self.engine.stream(ids, self.config, self.lora) for ids in self.prompts]):
            for i, delta in batch:
                yield i * self.n + delta.index, delta

    async def collect(self) -> list[Completion]:
        completions = [Completion(index=i) for i in range(len(self.prompts) * self.n)]
        async for index, delta in self.deltas():
            completions[index].add(delta)
        return completions

    def usage(self, generated: int) -> CompletionUsage:
        prompt = sum(len(p) for p in self.prompts)
        return CompletionUsage(prompt_tokens=prompt, completion_tokens=generated, total_tokens=prompt + generated)

    # chat ---------------------------------------------------------------------------------------
    async def chat_response(self) -> dict:
        completions = await self.collect()
        choices = [{'index': c.index, 'message': {'role': 'assistant', 'content': c.text},
                    'finish_reason': _finish(c.finish_reason),
                    'logprobs': self.chat_logprobs(c.token_ids, c.logprobs)} for c in completions]
        return ChatCompletion(id=f'chatcmpl-{self.id}', object='chat.completion', created=self.created,
                              model=self.body.model, choices=choices,
                              usage=self.usage(_generated(completions))).model_dump()

    async def chat_chunks(self) -> AsyncIterator[str]:
        generated = 0
        for i in range(self.n):
            yield self.chat_chunk({'index': i, 'delta': {'role': 'assistant', 'content': ''}})
        async for index, delta in self.deltas():
            generated += len(delta.token_ids)
            yield self.chat_chunk({'index': index, 'delta': {'content': delta.text},
                                   'finish_reason': _finish(delta.finish_reason),
                                   'logprobs': self.chat_logprobs(delta.token_ids, delta.logprobs)})
        if self.body.include_usage:
            yield self.chat_chunk(None, usage=self.usage(generated))

    def chat_chunk(self, choice: Optional[dict], usage=None) -> str:
        return ChatCompletionChunk(id=f'chatcmpl-{self.id}', object='chat.completion.chunk', created=self.created,
                                   model=self.body.model, choices=[choice] if choice else [],
                                   usage=usage).model_dump_json(exclude_none=True)

    def chat_logprobs(self, token_ids, logprobs) -> Optional[dict]:
        if self.config.logprobs is None or not logprobs:
            return None
        content = []
        for token_id, top in zip(token_ids, logprobs):
            entry = self._chat_logprob(token_id, top[token_id])
            entry['top_logprobs'] = [self._chat_logprob(t, lp) for t, lp in _top(top, self.config.logprobs)]
            content.append(entry)
        return {'content': content}

    def _chat_logprob(self, token_id: int, logprob: float) -> dict:
        token = self._token(token_id)
        return {'token': token, 'bytes': list(token.encode()), 'logprob': logprob}

    # completions --------------------------------------------------------------------------------
    async def completion_response(self) -> dict:
        completions = await self.collect()
        choices = [self.completion_choice(c.index, self._echo(c.index) + c.text, c.finish_reason,
                                          c.token_ids, c.logprobs) for c in completions]
        return OpenAICompletion(id=f'cmpl-{self.id}', object='text_completion', created=self.created,
                                model=self.body.model, choices=choices,
                                usage=self.usage(_generated(completions))).model_dump()

    async def completion_chunks(self) -> AsyncIterator[str]:
        generated, echoed = 0, set()
        async for index, delta in self.deltas():
            generated += len(delta.token_ids)
            text = delta.text if index in echoed else self._echo(index) + delta.text
            echoed.add(index)
            choice = self.completion_choice(index, text, delta.finish_reason, delta.token_ids, delta.logprobs)
            yield self.completion_chunk([choice])
        if self.body.include_usage:
            yield self.completion_chunk([], usage=self.usage(generated))

    def completion_chunk(self, choices, usage=None) -> str:
        # The choices are built with model_construct: a stream chunk's finish_reason is null until the
        # end, which CompletionChoice does not allow; warnings=False keeps pydantic quiet about it.
        return OpenAICompletion(id=f'cmpl-{self.id}', object='text_completion', created=self.created,
                                model=self.body.model, choices=choices,
                                usage=usage).model_dump_json(exclude_none=True, warnings=False)

    def completion_choice(self, index, text, finish_reason, token_ids, logprobs) -> CompletionChoice:
        lp = None
        if self.config.logprobs is not None and logprobs:
            tokens = [self._token(t) for t in token_ids]
            lp = CompletionLogprobs(tokens=tokens, token_logprobs=[top[t] for t, top in zip(token_ids, logprobs)],
                                    top_logprobs=[{self._token(t): v for t, v in _top(top, self.config.logprobs)}
                                                  for top in logprobs],
                                    text_offset=[sum(len(x) for x in tokens[:k]) for k in range(len(tokens))])
        return CompletionChoice.model_construct(index=index, text=text, finish_reason=_finish(finish_reason),
                                                logprobs=lp)

    def _echo(self, index: int) -> str:
        return self.body.prompts[index // self.n] if getattr(self.body, 'echo', False) else ''

    def _token(self, token_id: int) -> str:
        return self.engine.hf_tokenizer.decode([token_id])


def _generated(completions: list[Completion]) -> int:
    return sum(len(c.token_ids) for c in completions)


def _top(logprobs: dict, k: int) -> list:
    return sorted(logprobs.items(), key=lambda item: -item[1])[:k]


def _finish(reason: Optional[str]) -> Optional[str]:
    return 'stop' if reason == 'abort' else reason  # OpenAI knows no 'abort'


def _sse(chunks: AsyncIterator[str]) -> StreamingResponse:
    """Server-sent events of JSON chunks, ending with [DONE] as OpenAI's API does."""
    async def events():
        async for chunk in chunks:
            yield f'data: {chunk}\n\n'
        yield 'data: [DONE]\n\n'
    return StreamingResponse(events(), media_type='text/event-stream')
