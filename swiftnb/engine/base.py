"""The Engine interface shared by the backends, and the types that cross it."""
import abc
import itertools
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Optional

from swiftnb.config import GenerationConfig
from swiftnb.engine.loop import EngineLoop


class SwiftnbError(Exception):
    """Base of the errors swiftnb raises on purpose (the server maps them to HTTP status codes)."""


class PromptTooLongError(SwiftnbError, ValueError):
    def __init__(self, num_tokens: int, limit: int, which: str = 'the prompt', limit_name: str = 'max_model_len'):
        super().__init__(f'{which} has {num_tokens} tokens, but {limit_name} is {limit}; '
                         f'shorten it or raise {limit_name}')
        self.num_tokens, self.limit = num_tokens, limit


class AdapterError(SwiftnbError, ValueError):
    """A LoRA adapter that is missing, unknown or does not fit the engine."""


class EngineClosedError(SwiftnbError, RuntimeError):
    pass


@dataclass(frozen=True)
class LoRARequest:
    """A LoRA adapter for one call, as in the seed: `LoRARequest('default-lora', 1, path)`."""
    lora_name: str
    lora_int_id: int
    lora_path: str

    def __post_init__(self):
        if not self.lora_name:
            raise ValueError('LoRARequest needs a name')
        if self.lora_int_id < 1:
            raise ValueError(f'LoRARequest id must be >= 1, got {self.lora_int_id}')


def check_adapter(path: str, max_lora_rank: Optional[int] = None) -> dict:
    """Read a peft adapter's config, with a clear error for what a backend would reject less clearly."""
    config_file = Path(path) / 'adapter_config.json'
    if not config_file.is_file():
        raise AdapterError(f'no LoRA adapter at {path!r} (adapter_config.json not found)')
    config = json.loads(config_file.read_text())
    rank = config.get('r', 0)
    if max_lora_rank is not None and rank > max_lora_rank:
        raise AdapterError(f'adapter at {path!r} has rank {rank}, above this engine\'s max_lora_rank '
                           f'{max_lora_rank}; create the engine with max_lora_rank={rank} or more')
    return config


@dataclass
class Delta:
    """What one step of a request added to one of its `n` choices."""
    index: int
    text: str
    token_ids: list[int]
    finish_reason: Optional[str] = None  # 'stop' | 'length' | 'abort' once finished
    logprobs: Optional[list] = None  # per new token: [{token_id: logprob, ...}, ...]


@dataclass
class Completion:
    """A finished choice, accumulated from its deltas."""
    index: int = 0
    text: str = ''
    token_ids: list[int] = field(default_factory=list)
    finish_reason: Optional[str] = None
    logprobs: list = field(default_factory=list)

    def add(self, delta: Delta) -> None:
        self.text += delta.text
        self.token_ids += delta.token_ids
        self.finish_reason = delta.finish_reason or self.finish_reason
        if delta.logprobs:
            self.logprobs += delta.logprobs


class Engine(abc.ABC):
    """One loaded model on one EngineLoop. Backends implement `stream`, the adapter calls, `_close`."""
    backend: str
    model_type: str
    model_dir: str
    hf_tokenizer: object
    generation_config: GenerationConfig
    max_model_len: int
    enable_lora: bool = False

    def __init__(self, loop: EngineLoop):
        self.loop = loop
        self.closed = False
        self.adapters: dict[str, LoRARequest] = {}  # adapters served by name (the server's `model` field)
        # vLLM caches adapters by id, so an id is never reused; registered ones start far above the
        # small ids people pick by hand in LoRARequest('name', 1, path).
        self._lora_ids = itertools.count(1 << 20)

    @abc.abstractmethod
    def stream(self, prompt_ids: list[int], config: GenerationConfig, lora: Optional[LoRARequest] = None,
               request_id: Optional[str] = None) -> AsyncIterator[Delta]:
        """Yield Deltas for one request; runs on the engine loop. Closing it aborts the request."""

    @abc.abstractmethod
    def check_lora(self, lora: Optional[LoRARequest]) -> None:
        """Raise AdapterError now if this engine cannot serve the adapter (None: the base model)."""

    @property
    @abc.abstractmethod
    def num_running(self) -> int:
        """Requests in the engine that have not finished."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Free the model and any child process."""

    def _read_adapter(self, lora: LoRARequest, max_lora_rank: Optional[int] = None) -> dict:
        """Check that this engine takes adapters and that `lora` is one; its peft config."""
        if not self.enable_lora:
            raise AdapterError(f'adapter {lora.lora_name!r} was requested, but this engine was built without '
                               'LoRA support; create it with enable_lora=True')
        return check_adapter(lora.lora_path, max_lora_rank)

    def add_lora(self, name: str, path: str) -> LoRARequest:
        """Register an adapter under a name, for the server and widgets; checked now, loaded on first use."""
        if name in self.adapters:
            raise AdapterError(f'an adapter named {name!r} is already loaded; remove it first')
        lora = LoRARequest(name, next(self._lora_ids), str(path))
        self.check_lora(lora)
        self.adapters[name] = lora
        return lora

    def remove_lora(self, name: str) -> None:
        if self.adapters.pop(name, None) is None:
            raise AdapterError(f'no adapter named {name!r}; loaded: {", ".join(self.adapters) or "none"}')

    def check_prompt(self, prompt_ids: list[int], which: str = 'the prompt') -> None:
        if len(prompt_ids) >= self.max_model_len:
            raise PromptTooLongError(len(prompt_ids), self.max_model_len, which)

    def fit_max_tokens(self, prompt_ids: list[int], max_new_tokens: int) -> int:
        """Cap the answer to what the context has room for."""
        return max(1, min(max_new_tokens, self.max_model_len - len(prompt_ids)))

    def admit(self, prompt_ids: list[int], config: GenerationConfig) -> int:
        """The checks every request passes before a backend takes it; the tokens it may generate."""
        if self.closed:
            raise EngineClosedError('this engine was shut down; create a new one')
        self.check_prompt(prompt_ids)
        return self.fit_max_tokens(prompt_ids, config.max_new_tokens)

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    def shutdown(self) -> None:
        """Free the model; calling it again does nothing."""
        if self.closed:
            return
        self.closed = True
        self._close()

    def __repr__(self):
        state = 'closed' if self.closed else 'live'
        return f'<{type(self).__name__} {self.model_type} ({self.backend}, {state}) at {self.model_dir}>'
