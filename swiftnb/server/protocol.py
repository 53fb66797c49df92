"""Request bodies of the pt backend's server, built on GenerationConfig (the one declaration of the
generation settings) with the fields of OpenAI's requests and vLLM's extras around them. Unknown
fields are ignored, as OpenAI clients send some; ranges are GenerationConfig's. Responses are the
`openai` package's own types.
"""
import os
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from swiftnb.settings import GenerationConfig
from swiftnb.tools import Tool, ToolChoice


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Request(GenerationConfig):
    model_config = ConfigDict(extra='ignore', validate_assignment=False)

    model: Optional[str] = None  # none: the base model, as vLLM's server reads it
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    # vLLM's extras the pt backend does not apply: refused when given, rather than answered as if they were
    logit_bias: Optional[dict[str, float]] = None
    min_tokens: Optional[int] = None

    @field_validator('model')
    @classmethod
    def _model_text(cls, model):
        return model if model is None else encodable(model)

    @field_validator('stop')
    @classmethod
    def _max_stop_strings(cls, stop):
        # vLLM's server's limit (vllm.envs.VLLM_MAX_STOP_STRINGS, OpenAI's 4 unless set), read as vLLM reads it: the pt
        # server does not import vLLM, which may not be installed
        limit = int(os.environ.get('VLLM_MAX_STOP_STRINGS', '4'))
        if isinstance(stop, list) and len(stop) > limit:
            raise ValueError(f'at most {limit} stop strings (VLLM_MAX_STOP_STRINGS), got {len(stop)}')
        return stop  # one with a lone surrogate never comes here: the request guard refuses it (guard.py)

    @field_validator('logit_bias', 'min_tokens')
    @classmethod
    def _not_applied(cls, value, info):
        if value:
            raise ValueError(f'{info.field_name} is not applied by the pt backend; serve the model with vLLM for it')
        return value

    @model_validator(mode='after')
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError('stream_options: only with stream=true')
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def settings(self) -> dict:
        """The generation settings this request gives (GenerationConfig's names and meanings)."""
        return self.given()

    def generation(self, defaults: GenerationConfig) -> GenerationConfig:
        return GenerationConfig(**self.settings()).apply(defaults)


def encodable(text: str) -> str:
    """Text the tokenizer can take: a lone surrogate (JSON allows "\\ud800") is not UTF-8."""
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        raise ValueError('not valid UTF-8 text (it holds a lone surrogate)') from None
    return text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra='allow')  # tool_calls, tool_call_id, name: for the chat template
    role: str  # as vLLM's server: any role, which the chat template renders (or refuses)
    content: Union[str, list[dict[str, Any]], None] = ''

    @model_validator(mode='after')
    def _content_or_tool_calls(self):
        if self.content is None and not (self.role == 'assistant' and getattr(self, 'tool_calls', None)):
            raise ValueError('content: null only for an assistant message with tool_calls; send text')
        return self

    @field_validator('content')
    @classmethod
    def _text_only(cls, content):
        for part in [content] if isinstance(content, str) else content or []:
            if isinstance(part, dict) and part.get('type', 'text') != 'text':
                raise ValueError(f"{part.get('type')!r} content needs a multimodal model; this model takes text")
            encodable(part if isinstance(part, str) else str(part.get('text', '')))
        return content


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    tools: Optional[list[Tool]] = None
    tool_choice: Optional[ToolChoice] = None
    parallel_tool_calls: Optional[bool] = None

    def settings(self) -> dict:
        given = self.given()
        if self.max_completion_tokens is not None:
            given['max_tokens'] = self.max_completion_tokens
        return given


class CompletionRequest(_Request):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    logprobs: Optional[int] = Field(None, ge=0, le=20)  # the completions API counts them
    echo: bool = False

    @field_validator('prompt')
    @classmethod
    def _text(cls, prompt):
        for text in [prompt] if isinstance(prompt, str) else prompt:
            if isinstance(text, str):
                encodable(text)
        return prompt

    def settings(self) -> dict:
        given = self.given()
        given.pop('logprobs', None)
        if self.logprobs is not None:
            given.update(logprobs=True, top_logprobs=self.logprobs)
            if self.echo and self.prompt_logprobs is None:  # as vLLM: echo scores the prompt too
                given['prompt_logprobs'] = self.logprobs
        return given


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize body: a prompt, or chat messages rendered by the chat template."""
    model_config = ConfigDict(extra='ignore')
    model: Optional[str] = None
    prompt: Optional[str] = None
    messages: Optional[list[ChatMessage]] = Field(None, min_length=1)
    tools: Optional[list[Tool]] = None
    add_special_tokens: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra='ignore')
    model: Optional[str] = None
    tokens: list[int]
