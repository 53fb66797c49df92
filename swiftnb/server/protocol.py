"""Request bodies of the pt backend's server, built on GenerationConfig (the one declaration of the
generation settings) with the fields of OpenAI's requests and vLLM's extras around them. Unknown
fields are ignored, as OpenAI clients send some, except vLLM's that the pt backend does not apply
(NOT_APPLIED): those are refused. Ranges are GenerationConfig's. Responses are the `openai` package's
own types.

Why not vLLM's own request models: the pt backend is for machines without vLLM and models vLLM does
not load, and its server imports no vLLM. tests/test_server.py reads vLLM's request models where vLLM is
installed and fails for any field of theirs that is neither applied here, refused here nor in IGNORED,
so a field vLLM adds is placed before it can be answered as if it had not been sent.
"""
import os
from typing import Any, ClassVar, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from swiftnb.errors import SettingsError
from swiftnb.settings import GenerationConfig
from swiftnb.tools import Tool, ToolChoice


class StreamOptions(BaseModel):
    include_usage: bool = False


# vLLM's request fields that the pt backend does not apply, each with the values that ask for nothing (vLLM's
# defaults, and null): given otherwise, the request is refused in one line naming the field, not answered as if
# the field had not been sent. Common to both routes, then each route's own.
NOT_APPLIED = {
    'logit_bias': (None, {}), 'min_tokens': (None, 0), 'min_p': (None, 0), 'use_beam_search': (None, False),
    'length_penalty': (None, 1), 'stop_token_ids': (None, []), 'bad_words': (None, []),
    'allowed_token_ids': (None,), 'logprob_token_ids': (None,), 'include_stop_str_in_output': (None, False),
    'skip_special_tokens': (None, True), 'spaces_between_special_tokens': (None, True),
    'truncate_prompt_tokens': (None,), 'truncation_side': (None,), 'watermarking': (None, False),
    'repetition_detection': (None,), 'thinking_token_budget': (None,), 'vllm_xargs': (None, {}),
    'priority': (None, 0),  # vLLM's server refuses it too unless started with the priority scheduling policy
    'return_tokens_as_token_ids': (None, False), 'return_token_ids': (None, False),
    'return_token_offsets': (None, False),
}
CHAT_NOT_APPLIED = {
    **NOT_APPLIED, 'echo': (None, False), 'add_generation_prompt': (None, True),
    'continue_final_message': (None, False), 'add_special_tokens': (None, False), 'documents': (None,),
    'chat_template': (None,), 'chat_template_kwargs': (None, {}), 'reasoning_effort': (None,),
    'return_prompt_text': (None, False),
}
COMPLETION_NOT_APPLIED = {**NOT_APPLIED, 'suffix': (None, ''), 'prompt_embeds': (None,),
                          'add_special_tokens': (None, True)}
# vLLM's request fields that change nothing in a pt answer: the request's id and session, prefix-cache and KV
# transfer keys, multimodal options (the pt server takes text only), reasoning output (no reasoning parser), how
# many tokens a stream's chunk holds (the text is the same), MoE routing
IGNORED = frozenset({'request_id', 'session_id', 'cache_salt', 'kv_transfer_params', 'ec_transfer_params',
                     'media_io_kwargs', 'mm_processor_kwargs', 'mm_payload', 'return_mm_kwargs', 'include_reasoning',
                     'stream_interval', 'routed_experts_prompt_start'})


class _Request(GenerationConfig):
    model_config = ConfigDict(extra='allow', validate_assignment=False)  # unknown fields kept to refuse NOT_APPLIED's
    not_applied: ClassVar[dict] = NOT_APPLIED

    model: Optional[str] = None  # none: the base model, as vLLM's server reads it
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None

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
        refuse_not_applied(self)
        return GenerationConfig(**self.settings()).apply(defaults)


def refuse_not_applied(body: BaseModel) -> None:
    """SettingsError for the first of vLLM's fields in `body` (kept among its extras) that the pt backend does not
    apply and that asks for something (`body.not_applied`)."""
    for name, value in body.model_extra.items():
        if value not in body.not_applied.get(name, (value,)):
            raise SettingsError(f'{name} is not applied by the pt backend; leave it out, or serve the model with vLLM '
                                'for it', name)


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
    not_applied: ClassVar[dict] = CHAT_NOT_APPLIED
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
    not_applied: ClassVar[dict] = COMPLETION_NOT_APPLIED
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
    model_config = ConfigDict(extra='allow')  # unknown fields kept to refuse not_applied's
    not_applied: ClassVar[dict] = {name: CHAT_NOT_APPLIED[name] for name in (
        'add_generation_prompt', 'continue_final_message', 'chat_template', 'chat_template_kwargs')}
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
