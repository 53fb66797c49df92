"""The seed's client helpers, on the official openai SDK (no hand-written HTTP or SSE).

`inference_client` and `inference_client_async` share one request builder; the
sync one uses `OpenAI`, the async one `AsyncOpenAI` and is awaited by the caller
(never `asyncio.run` here, so it works with top-level `await` in a cell).
"""
from typing import Optional

from openai import AsyncOpenAI, OpenAI

from swiftnb.errors import UsageError
from swiftnb.model_types import MODELS
from swiftnb.settings import XRequestConfig
from swiftnb.template import to_messages


def _base_url(host: str, port: int, url: Optional[str]) -> str:
    return url or f'http://{host}:{port}/v1'


def _is_chat(model_type: str, is_chat_request: Optional[bool]) -> bool:
    if is_chat_request is not None:
        return is_chat_request
    return MODELS[model_type].is_chat if model_type in MODELS else True


def build_request(model_type: str, query: str, history=None, system=None, request_config=None,
                  is_chat_request=None) -> tuple[bool, dict]:
    """(is_chat, keyword arguments for the SDK's create call): only the settings given are sent."""
    config = request_config or XRequestConfig()
    fields, extra = config.request_fields()
    is_chat = _is_chat(model_type, is_chat_request)
    kwargs = dict(model=model_type, **fields)
    if extra:
        kwargs['extra_body'] = extra
    if is_chat:
        kwargs['messages'] = to_messages(query, history, system)
    else:
        if history or system:
            raise UsageError('history and system need a chat model; this is a plain completion request')
        kwargs['prompt'] = query
        if kwargs.pop('logprobs', False):  # the completions API counts logprobs instead
            kwargs['logprobs'] = kwargs.pop('top_logprobs', None) or 0
        kwargs.pop('top_logprobs', None)
    return is_chat, kwargs


def _fill_delta(chunk):
    # The last chunk of a chat stream carries only finish_reason: OpenAI's API and vLLM's server
    # (with a tool parser) send `delta: {}`, whose content the SDK reads as None. The seed's
    # stream chunks always hold text, so its `print(chunk.choices[0].delta.content, end='')` works.
    for choice in getattr(chunk, 'choices', ()):
        delta = getattr(choice, 'delta', None)
        if delta is not None and delta.content is None and not delta.tool_calls:
            delta.content = ''
    return chunk


def _seed_stream(stream):
    with stream:
        for chunk in stream:
            yield _fill_delta(chunk)


async def _seed_stream_async(stream):
    async with stream:
        async for chunk in stream:
            yield _fill_delta(chunk)


def get_model_list_client(host: str = '127.0.0.1', port: int = 8000, api_key: str = 'EMPTY',
                          url: Optional[str] = None):
    """The server's /v1/models (`.data[i].id`)."""
    return OpenAI(api_key=api_key, base_url=_base_url(host, port, url)).models.list()


async def get_model_list_client_async(host: str = '127.0.0.1', port: int = 8000, api_key: str = 'EMPTY',
                                      url: Optional[str] = None):
    return await AsyncOpenAI(api_key=api_key, base_url=_base_url(host, port, url)).models.list()


def inference_client(model_type: str, query: str, history=None, system=None, *, request_config=None,
                     is_chat_request=None, host: str = '127.0.0.1', port: int = 8000, api_key: str = 'EMPTY',
                     url: Optional[str] = None):
    """One request; returns the SDK's ChatCompletion / Completion, or an iterator of its chunks when streaming."""
    is_chat, kwargs = build_request(model_type, query, history, system, request_config, is_chat_request)
    client = OpenAI(api_key=api_key, base_url=_base_url(host, port, url))
    response = (client.chat.completions if is_chat else client.completions).create(**kwargs)
    return _seed_stream(response) if kwargs.get('stream') else response


async def inference_client_async(model_type: str, query: str, history=None, system=None, *, request_config=None,
                                 is_chat_request=None, host: str = '127.0.0.1', port: int = 8000,
                                 api_key: str = 'EMPTY', url: Optional[str] = None):
    """`await`-able inference_client; a streaming call gives an async iterator for `async for`."""
    is_chat, kwargs = build_request(model_type, query, history, system, request_config, is_chat_request)
    client = AsyncOpenAI(api_key=api_key, base_url=_base_url(host, port, url))
    response = await (client.chat.completions if is_chat else client.completions).create(**kwargs)
    return _seed_stream_async(response) if kwargs.get('stream') else response
