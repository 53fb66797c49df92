"""The pt backend's OpenAI-compatible app: the requests clients send to `vllm serve`, over a PtEngine.

vLLM's server needs a vLLM engine, so for the transformers backend swiftnb answers the same
routes itself, and the same tests run against both: /v1/chat/completions (swiftnb.chat: tools and
tool_choice, response_format and structured_outputs, logprobs, n, streaming), /v1/completions (text or
token-id prompts, echo with prompt logprobs), /v1/models, /tokenize, /detokenize, /metrics,
/version, /health and the adapter routes. It runs on the engine's own loop, so the handlers
iterate `engine.stream` directly. Responses are the `openai` package's types.
"""
import asyncio
import json
import time
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response, StreamingResponse
from openai.types import Completion, CompletionChoice, Model
from openai.types.completion_choice import Logprobs as CompletionLogprobs

from swiftnb import __version__
from swiftnb.chat import ChatRun, Generation, check_length, encode_messages, finish_reason as finish, top
from swiftnb.engine.base import Choice, Engine
from swiftnb.errors import SwiftnbError, UsageError
from swiftnb.server.adapters import add_adapter_routes
from swiftnb.server.errors import error_body, error_json, status_of, swiftnb_error_json
from swiftnb.server.openapi import declare_responses
from swiftnb.server.options import ServerOptions
from swiftnb.server.protocol import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest,
                                     refuse_not_applied)
from swiftnb.settings import describe, served_defaults


def create_pt_app(engine: Engine, options: ServerOptions, served_model_name: str) -> FastAPI:
    template = engine.template
    app = FastAPI(title='swiftnb', version=__version__, docs_url=None, redoc_url=None)
    tool_call_parser = options.tool_call_parser or engine.tool_parser
    if options.allowed_origins:  # as vLLM's server sets CORS up
        app.add_middleware(CORSMiddleware, allow_origins=list(options.allowed_origins), allow_credentials=False,
                           allow_methods=['*'], allow_headers=['*'])
    created = int(time.time())
    metrics = Metrics(served_model_name)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_, error: RequestValidationError):
        return error_json(400, *describe(error))

    @app.exception_handler(SwiftnbError)
    async def swiftnb_error(_, error: SwiftnbError):
        return swiftnb_error_json(error)

    @app.get('/health')
    async def health():
        return Response(status_code=200)

    @app.get('/version')
    async def version():
        return {'version': __version__}

    @app.get('/metrics')
    async def prometheus():
        return metrics.response(engine.num_running)

    @app.get('/v1/models')
    async def models():
        paths = options.show_model_paths
        cards = [Model(id=served_model_name, created=created, object='model', owned_by='swiftnb', parent=None,
                       root=engine.model_dir if paths else served_model_name, max_model_len=engine.max_model_len)]
        cards += [Model(id=name, created=created, object='model', owned_by='swiftnb', parent=served_model_name,
                        root=lora.lora_path if paths else name) for name, lora in engine.adapters.items()]
        return {'object': 'list', 'data': [card.model_dump() for card in cards]}

    @app.post('/tokenize')
    async def tokenize(body: TokenizeRequest):
        refuse_not_applied(body)
        if body.messages is not None:
            ids = await encode_messages(engine, template, [m.model_dump() for m in body.messages], body.tools)
        elif body.prompt is not None:
            ids = await _encode_text(engine, body.prompt, body.add_special_tokens)
        else:
            raise UsageError('give a prompt or messages to tokenize')
        strs = engine.hf_tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
        return {'count': len(ids), 'max_model_len': engine.max_model_len, 'tokens': ids, 'token_strs': strs}

    @app.post('/detokenize')
    async def detokenize(body: DetokenizeRequest):
        _check_ids(engine, body.tokens, 'tokens')
        return {'prompt': engine.hf_tokenizer.decode(body.tokens)}

    @app.post('/v1/chat/completions')
    async def chat(body: ChatCompletionRequest):
        run = await ChatRun.start(engine, [m.model_dump() for m in body.messages],
                                  body.generation(served_defaults(engine.generation_config)),
                                  engine.adapter(body.model, served_model_name), body.model or served_model_name,
                                  body.tools, body.tool_choice, tool_call_parser, metrics.finished, template,
                                  body.parallel_tool_calls)
        return _sse(run.chunks(body.include_usage)) if body.stream else (await run.response()).model_dump()

    @app.post('/v1/completions')
    async def completions(body: CompletionRequest):
        lora = engine.adapter(body.model, served_model_name)
        config = body.generation(served_defaults(engine.generation_config))
        prompts = await _prompt_ids(engine, body.prompt)
        for i, ids in enumerate(prompts):
            engine.admit(ids, config, 'the prompt' if len(prompts) == 1 else f'prompt {i}')
        run = CompletionRun(engine, prompts, config, lora, body.model or served_model_name, metrics.finished,
                            body=body)
        return _sse(run.completion_chunks()) if body.stream else await run.completion_response()

    add_adapter_routes(app, engine, options)
    declare_responses(app)
    return app


async def _encode_text(engine: Engine, text: str, add_special_tokens: bool = True, which: str = 'the prompt'):
    check_length(engine, text, which)  # before tokenising, in a worker thread (as swiftnb.chat encodes messages)
    return (await asyncio.to_thread(engine.hf_tokenizer, text, add_special_tokens=add_special_tokens))['input_ids']


def _check_ids(engine: Engine, ids: list[int], param: str) -> None:
    size = len(engine.hf_tokenizer)
    if any(not 0 <= t < size for t in ids):
        raise UsageError(f'{param}: token ids must be in [0, {size})')


async def _prompt_ids(engine: Engine, prompt) -> list[list[int]]:
    """The completions API's prompt (text, texts, token ids, or lists of them) as token-id lists."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not prompt:
        raise UsageError('prompt: give at least one prompt')
    prompts = []
    for i, item in enumerate(prompt):
        which = 'the prompt' if len(prompt) == 1 else f'prompt {i}'
        ids = await _encode_text(engine, item, which=which) if isinstance(item, str) else list(item)
        _check_ids(engine, ids, 'prompt')
        prompts.append(ids)
    return prompts


class Metrics:
    """/metrics in Prometheus' format, with the names vLLM's server uses, in a registry of this app's own."""

    def __init__(self, model_name: str):
        from prometheus_client import CollectorRegistry, Counter, Gauge
        self.registry = CollectorRegistry()
        labels = dict(labelnames=['model_name'], registry=self.registry)
        self.running = Gauge('vllm:num_requests_running', 'Requests in the engine', **labels).labels(model_name)
        self.prompt = Counter('vllm:prompt_tokens', 'Prompt tokens processed', **labels).labels(model_name)
        self.generated = Counter('vllm:generation_tokens', 'Tokens generated', **labels).labels(model_name)
        self.success = Counter('vllm:request_success', 'Requests finished', labelnames=['model_name', 'finished_reason'],
                               registry=self.registry)
        self.model_name = model_name

    def finished(self, prompt_tokens: int, choices: list[Choice]) -> None:
        self.prompt.inc(prompt_tokens)
        self.generated.inc(sum(len(c.token_ids) for c in choices))
        for choice in choices:
            self.success.labels(self.model_name, choice.finish_reason or 'abort').inc()

    def response(self, num_running: int) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        self.running.set(num_running)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class CompletionRun(Generation):
    """One /v1/completions request: text or token-id prompts, echo with prompt logprobs."""

    def __init__(self, *args, body, **kwargs):
        super().__init__(*args, **kwargs)
        self.body = body

    async def completion_response(self) -> dict:
        choices = [self.completion_choice(c.index, self._echo(c) + c.text, c.finish_reason, c.token_ids,
                                          c.logprobs, c.prompt_logprobs) for c in await self.collect()]
        return Completion(id=f'cmpl-{self.id}', object='text_completion', created=self.created,
                          model=self.model, choices=choices, usage=self.usage()).model_dump(warnings=False)

    async def completion_chunks(self) -> AsyncIterator[Completion]:
        started = set()
        async for index, delta in self.deltas():
            first = index not in started
            started.add(index)
            text = (self._echo(self.choices[index]) if first else '') + delta.text
            choice = self.completion_choice(index, text, delta.finish_reason, delta.token_ids, delta.logprobs,
                                            self.choices[index].prompt_logprobs if first else None)
            yield self.completion_chunk([choice])
        if self.body.include_usage:
            yield self.completion_chunk([], usage=self.usage())

    def completion_chunk(self, choices, usage=None) -> Completion:
        # The choices are built with model_construct: a stream chunk's finish_reason is null until the
        # end, which CompletionChoice does not allow (_sse dumps it with warnings=False).
        return Completion(id=f'cmpl-{self.id}', object='text_completion', created=self.created,
                          model=self.model, choices=choices, usage=usage)

    def completion_choice(self, index, text, finish_reason, token_ids, logprobs, prompt_logprobs) -> CompletionChoice:
        lp = None
        k = self.config.num_logprobs
        if k is not None and (logprobs or prompt_logprobs):
            prompt = self.prompts[index // self.n] if prompt_logprobs and self.body.echo else []
            ids = prompt + list(token_ids)
            entries = (prompt_logprobs or [])[:len(prompt)] + list(logprobs or [])
            tokens = [self.token(t) for t in ids]
            lp = CompletionLogprobs.model_construct(  # constructed: a prompt's first entry is null, as in vLLM's
                tokens=tokens,
                token_logprobs=[None if e is None else e[t] for t, e in zip(ids, entries)],
                top_logprobs=[None if e is None else {self.token(t): v for t, v in top(e, k)} for e in entries],
                text_offset=[sum(len(x) for x in tokens[:j]) for j in range(len(tokens))])
        return CompletionChoice.model_construct(index=index, text=text, finish_reason=finish(finish_reason),
                                                logprobs=lp)

    def _echo(self, choice: Choice) -> str:
        if not self.body.echo:
            return ''
        prompt = self.body.prompt
        text_prompts = [prompt] if isinstance(prompt, str) else prompt
        which = choice.index // self.n
        if isinstance(text_prompts[which], str):
            return text_prompts[which]
        return self.engine.hf_tokenizer.decode(self.prompts[which])


def _sse(chunks: AsyncIterator) -> StreamingResponse:
    """Server-sent events of the chunks (openai models), ending with [DONE] as OpenAI's API does; an error after
    the first byte ends the stream with an error event, as vLLM's server sends it."""
    async def events():
        try:
            async for chunk in chunks:
                yield f'data: {chunk.model_dump_json(exclude_none=True, warnings=False)}\n\n'
        except Exception as error:
            status = status_of(error) if isinstance(error, SwiftnbError) else 500
            yield f'data: {json.dumps(error_body(status, str(error)))}\n\n'
        yield 'data: [DONE]\n\n'
    return StreamingResponse(events(), media_type='text/event-stream')
