"""Request bodies the server accepts. Responses reuse the `openai` package's own types.

Only the fields the routes use are declared; unknown fields are ignored, as
OpenAI clients send some. Ranges are checked once, by GenerationConfig.
"""
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict

from swiftnb.config import GenerationConfig


class _Request(BaseModel):
    model_config = ConfigDict(extra='ignore')

    model: str
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    repetition_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    n: int = 1
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    user: Optional[str] = None
    ignore_eos: Optional[bool] = None  # vLLM's extra, used by its serving benchmark

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.get('include_usage'))

    def generation_config(self, defaults: GenerationConfig, logprobs: Optional[int]) -> GenerationConfig:
        """The engine's defaults with what this request sets (raises ValueError on a bad value)."""
        fields = dict(max_new_tokens=self.requested_max_tokens, temperature=self.temperature, top_p=self.top_p,
                      top_k=self.top_k, repetition_penalty=self.repetition_penalty,
                      presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                      n=self.n, stop=self.stop, seed=self.seed, logprobs=logprobs, ignore_eos=self.ignore_eos)
        return defaults.merged(**fields)

    @property
    def requested_max_tokens(self) -> Optional[int]:
        return self.max_tokens


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra='ignore')
    role: Literal['system', 'user', 'assistant', 'developer', 'tool']
    content: Union[str, list[dict[str, Any]], None] = ''


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage]
    max_completion_tokens: Optional[int] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = None

    @property
    def requested_max_tokens(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def num_logprobs(self) -> Optional[int]:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Request):
    prompt: Union[str, list[str]]
    logprobs: Optional[int] = None
    echo: bool = False

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class LoadLoRARequest(BaseModel):
    lora_name: str
    lora_path: str


class UnloadLoRARequest(BaseModel):
    lora_name: str
