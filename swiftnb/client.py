"""The seed's client helpers, on the official openai SDK (no hand-written HTTP or SSE).

`inference_client` and `inference_client_async` share one request builder; the
sync one uses `OpenAI`, the async one `AsyncOpenAI` and is awaited by the caller
(never `asyncio.run` here, so it works with top-level `await` in a cell).
"""
from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

from openai import AsyncOpenAI, OpenAI

from swiftnb.model_types import MODELS


@dataclass
class XRequestConfig:
    """The seed's request settings: `XRequestConfig(stream=True, seed=42)`."""
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    repetition_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    n: int = 1
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = None
    stream: bool = False
    logprobs: bool = False
    top_logprobs: Optional[int] = None
    ignore_eos: Optional[bool] = None  # vLLM's extra: generate max_tokens whatever the model says


# Fields the OpenAI API does not define; the SDK sends them through extra_body (vLLM reads them too).
_EXTRA = ('top_k', 'repetition_penalty', 'ignore_eos')


def _base_url(host: str, port: int, url: Optional[str]) -> str:
    return url or f'http://{host}:{port}/v1'


def _is_chat(model_type: str, is_chat_request: Optional[bool]) -> bool:
    if is_chat_request is not None:
        return is_chat_request
    return MODELS[model_type].is_chat if model_type in MODELS else True


def _messages(query: str, history: Optional[Sequence], system: Optional[str]) -> list[dict]:
    messages = [] if system is None else [{'role': 'system', 'content': system}]
    for q, r in history or ():
        messages += [{'role': 'user', 'content': q}, {'role': 'assistant', 'content': r}]
    return messages + [{'role': 'user', 'content': query}]


def build_request(model_type: str, query: str, history=None, system=None, request_config=None,
                  is_chat_request=None) -> tuple[bool, dict]:
    """(is_chat, keyword arguments for the SDK's create call)."""
    config = {k: v for k, v in asdict(request_config or XRequestConfig()).items() if v is not None}
    extra = {k: config.pop(k) for k in _EXTRA if k in config}
    is_chat = _is_chat(model_type, is_chat_request)
    kwargs = dict(model=model_type, **config)
    if extra:
        kwargs['extra_body'] = extra
    if is_chat:
        kwargs['messages'] = _messages(query, history, system)
        if not kwargs.get('logprobs'):
            kwargs.pop('logprobs', None)
    else:
        if history or system:
            raise ValueError('history and system need a chat model; this is a plain completion request')
        kwargs['prompt'] = query
        kwargs['logprobs'] = kwargs.pop('top_logprobs', None) if kwargs.pop('logprobs', False) else None
    return is_chat, {k: v for k, v in kwargs.items() if v is not None}


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
    """One request; returns the SDK's ChatCompletion / Completion, or its Stream when streaming."""
    is_chat, kwargs = build_request(model_type, query, history, system, request_config, is_chat_request)
    client = OpenAI(api_key=api_key, base_url=_base_url(host, port, url))
    return (client.chat.completions if is_chat else client.completions).create(**kwargs)


async def inference_client_async(model_type: str, query: str, history=None, system=None, *, request_config=None,
                                 is_chat_request=None, host: str = '127.0.0.1', port: int = 8000,
                                 api_key: str = 'EMPTY', url: Optional[str] = None):
    """`await`-able inference_client; a streaming call gives an AsyncStream for `async for`."""
    is_chat, kwargs = build_request(model_type, query, history, system, request_config, is_chat_request)
    client = AsyncOpenAI(api_key=api_key, base_url=_base_url(host, port, url))
    return await (client.chat.completions if is_chat else client.completions).create(**kwargs)
