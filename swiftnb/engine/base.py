"""The Engine interface shared by the backends, and the types that cross it.

A request's stream is a sequence of `Delta`s (what one step added to one of its `n` choices);
`Choice` accumulates them into a whole answer.
"""
import abc
import asyncio
import contextlib
import itertools
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Optional

from swiftnb.engine.adapter_check import AdapterReport, diagnose
from swiftnb.engine.loop import EngineLoop
from swiftnb.engine.progress import shown
from swiftnb.model_types import MODELS, default_tool_parser, get_default_template_type
from swiftnb.errors import (AdapterError, EngineAsleepError, EngineClosedError, PromptTooLongError, SettingsError,
                            UnknownModelError, UsageError)
from swiftnb.settings import GenerationConfig
from swiftnb.template import Template, get_template


@dataclass(frozen=True)
class LoRARequest:
    """A LoRA adapter for one call, as in the seed: `LoRARequest('default-lora', 1, path)`."""
    lora_name: str
    lora_int_id: int
    lora_path: str

    def __post_init__(self):
        if not self.lora_name:
            raise AdapterError('LoRARequest needs a name')
        if self.lora_int_id < 1:
            raise AdapterError(f'LoRARequest id must be >= 1, got {self.lora_int_id}')


@dataclass
class Delta:
    """What one step of a request added to one of its `n` choices."""
    index: int
    text: str
    token_ids: list[int]
    finish_reason: Optional[str] = None  # 'stop' | 'length' | 'abort' once finished
    logprobs: Optional[list] = None  # per new token: [{token_id: logprob, ...}, ...]
    prompt_logprobs: Optional[list] = None  # on the first delta, when asked: [None, {token_id: logprob}, ...]


@dataclass
class Choice:
    """One of a request's answers, accumulated from its deltas."""
    index: int = 0
    text: str = ''
    token_ids: list[int] = field(default_factory=list)
    finish_reason: Optional[str] = None
    logprobs: list = field(default_factory=list)
    prompt_logprobs: Optional[list] = None

    def add(self, delta: Delta) -> None:
        self.text += delta.text
        self.token_ids += delta.token_ids
        self.finish_reason = delta.finish_reason or self.finish_reason
        if delta.logprobs:
            self.logprobs += delta.logprobs
        if delta.prompt_logprobs is not None:
            self.prompt_logprobs = delta.prompt_logprobs


BACKEND_NAMES = {'vllm': 'vLLM', 'pt': 'pt'}


class Engine(abc.ABC):
    """One loaded model on one EngineLoop. Backends implement `stream`, the adapter calls, `_close`."""
    backend: str
    model_type: str
    model_dir: str
    hf_tokenizer: object
    generation_config: GenerationConfig
    max_model_len: int
    enable_lora: bool = False
    start_times: dict  # how long the start took: {'seconds': s, 'stages': {stage: s}} (what its progress line said)

    def __init__(self, model_type: str, model_dir: str, loop: EngineLoop):
        self.model_type, self.model_dir, self.loop = model_type, model_dir, loop
        # vLLM's name for the format this model writes tool calls in (for tool_choice 'auto'); settable.
        self.tool_parser: Optional[str] = default_tool_parser(model_type)
        self._closed_because: Optional[str] = None
        self.asleep: Optional[int] = None  # the sleep level while asleep (engine.sleep), else None
        self.adapters: dict[str, LoRARequest] = {}  # adapters served by name (the server's `model` field)
        self._adapter_reports: dict[LoRARequest, AdapterReport] = {}  # adapters checked: the doctor's findings
        self._loaded: set[LoRARequest] = set()  # adapters the backend has loaded (load_lora)
        self._loading = asyncio.Lock()
        # vLLM caches adapters by id, so an id is never reused; registered ones start far above the
        # small ids people pick by hand in LoRARequest('name', 1, path).
        self._lora_ids = itertools.count(1 << 20)
        self._template: Optional[Template] = None

    @property
    def template(self) -> Template:
        """The chat template every door of swiftnb encodes with (the server, `swiftnb infer`, %%chat, the widgets,
        check_parity, divergence): the seed's rule, `get_template(get_default_template_type(model_type), tokenizer)`
        (the model type's template where swiftnb's table knows it, else the tokenizer's own), made on first use; set
        it to another Template to change it at every door."""
        if self._template is None:
            self._template = get_template(get_default_template_type(self.model_type), self.hf_tokenizer)
        return self._template

    @template.setter
    def template(self, template: Template) -> None:
        if not isinstance(template, Template):
            raise UsageError(f'engine.template takes a Template (swiftnb.get_template(...)), '
                             f'not {type(template).__name__}')
        self._template = template

    @abc.abstractmethod
    def stream(self, prompt_ids: list[int], config: GenerationConfig, lora: Optional[LoRARequest] = None,
               request_id: Optional[str] = None, final_only: bool = False) -> AsyncIterator[Delta]:
        """Yield Deltas for one request; runs on the engine loop. Closing it aborts the request.
        `final_only`: the caller wants only whole answers, so a backend may send each choice once, when it
        finishes, instead of a delta per step (vLLM's FINAL_ONLY, as LLM.generate asks; the pt backend streams)."""

    @abc.abstractmethod
    async def _load_lora(self, lora: LoRARequest) -> None:
        """Load the adapter with the backend's own loading code (vLLM's worker, peft), so that what it cannot load
        is an AdapterError here and never meets a request; runs on the engine loop, once per LoRARequest."""

    @property
    @abc.abstractmethod
    def num_running(self) -> int:
        """Requests in the engine that have not finished."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Free the model and any child process."""

    def _read_adapter(self, lora: LoRARequest) -> dict:
        """Check that this engine takes adapters and that `lora` is one (the first problem that would stop it
        loading is an AdapterError); its peft config. The files are read once per LoRARequest (the pt backend asks
        on every request; a backend loads an adapter once too)."""
        if not self.enable_lora:
            raise AdapterError(f'adapter {lora.lora_name!r} was requested, but this engine was built without '
                               'LoRA support; create it with enable_lora=True')
        if lora not in self._adapter_reports:
            self._adapter_reports[lora] = self.diagnose_adapter(lora.lora_path)
        blocking = [finding for finding in self._adapter_reports[lora] if finding.blocking]
        if blocking:
            raise AdapterError(blocking[0].message)
        return self._adapter_reports[lora].config

    async def load_lora(self, lora: Optional[LoRARequest]) -> None:
        """Take an adapter (None: the base model), once: the doctor's checks (adapter_check.py), then the backend
        loads it with its own code. The rule is not a list of cases: an adapter is accepted only after the code
        that will serve it has loaded it, and what that code raises is an AdapterError with its reason."""
        if lora is None or lora in self._loaded:
            return
        self._read_adapter(lora)
        async with self._loading:  # one load at a time: a second request for the same adapter waits for the first
            if lora not in self._loaded:
                await self._load_lora(lora)
                self._loaded.add(lora)

    def check_lora(self, lora: Optional[LoRARequest]) -> None:
        """load_lora from sync code; on the engine loop only for an adapter already taken (await load_lora there)."""
        if lora is not None and lora not in self._loaded:
            self.loop.run(self.load_lora(lora))

    async def add_lora_async(self, name: str, path: str) -> LoRARequest:
        """add_lora for the engine loop (the server's /v1/load_lora_adapter)."""
        if name in self.adapters or name == self.model_type:
            raise AdapterError(f'the name {name!r} is taken; remove that adapter first or pick another name')
        lora = LoRARequest(name, next(self._lora_ids), str(path))
        await self.load_lora(lora)
        self.adapters[name] = lora
        return lora

    def add_lora(self, name: str, path: str) -> LoRARequest:
        """Register an adapter under a name, for the server and widgets, loaded now: what would stop it loading is
        an AdapterError, what would make its answers differ a warning."""
        lora = self.loop.run(self.add_lora_async(name, path))
        for finding in self._adapter_reports[lora]:
            warnings.warn(finding.message, stacklevel=2)  # only findings that do not block are left here
        return lora

    def diagnose_adapter(self, path: str) -> AdapterReport:
        """swiftnb.check_adapter(path, engine): every problem of the adapter for this engine, each with its fix."""
        info = MODELS.get(self.model_type)
        names = (self.model_type, self.model_dir, info.hub_id if info else None)
        return diagnose(path, getattr(self, 'max_lora_rank', None), self.model_dir, names, self.lora_embeddings())

    def lora_embeddings(self) -> Optional[set]:
        """The embedding modules a vLLM engine's model takes LoRA on; None where any module is (peft)."""
        return None

    def remove_lora(self, name: str) -> None:
        if name not in self.adapters:  # the base model's name too: it is not an adapter
            raise UnknownModelError(f'no adapter named {name!r}; this engine serves the adapters '
                                    f'{", ".join(self.adapters) or "(none)"}')
        self._loaded.discard(self.adapters.pop(name))

    def model_names(self, base_name: Optional[str] = None) -> list[str]:
        """The base model's name, then every adapter's."""
        return [base_name or self.model_type, *self.adapters]

    def adapter(self, name: Optional[str], base_name: Optional[str] = None) -> Optional[LoRARequest]:
        """The adapter served under `name`; None for the base model (its name, or None)."""
        if name is None or name == (base_name or self.model_type):
            return None
        if name not in self.adapters:
            raise UnknownModelError(f'no model or adapter named {name!r}; this engine serves '
                                    f'{", ".join(self.model_names(base_name))}')
        return self.adapters[name]

    @contextlib.contextmanager
    def adapter_for_call(self, adapter, purpose: str):
        """`adapter` as a LoRARequest for one call (check_parity, divergence): a LoRARequest, a name this engine
        serves, or an adapter folder, added as '<purpose>-<folder name>' and removed again when the call ends."""
        if isinstance(adapter, LoRARequest) or adapter in self.adapters:
            yield adapter if isinstance(adapter, LoRARequest) else self.adapters[adapter]
            return
        if not Path(adapter).is_dir():
            served = ', '.join(self.adapters) or 'none'
            raise UsageError(f'{adapter!r} is neither an adapter this engine serves ({served}) nor a folder; pass a '
                             'name, a LoRARequest or the adapter folder')
        lora = self.add_lora(f'{purpose}-{Path(adapter).name}', adapter)
        try:
            yield lora
        finally:
            self.remove_lora(lora.lora_name)

    @property
    def label(self) -> str:
        """'vLLM engine for tiny-chat': how progress lines and messages name this engine."""
        return f'{BACKEND_NAMES.get(self.backend, self.backend)} engine for {self.model_type}'

    @property
    def closed(self) -> bool:
        """Shut down, or dead (a backend whose engine process died: `closed_because` says so)."""
        return self.closed_because is not None

    @property
    def closed_because(self) -> Optional[str]:
        return self._closed_because or self._died_because()

    def _died_because(self) -> Optional[str]:
        """Why the engine stopped working without being shut down; None while it works."""
        return None

    def check_open(self) -> None:
        if self.closed:
            raise EngineClosedError(f'this engine cannot answer: {self.closed_because}; create a new one')
        if self.asleep:
            raise EngineAsleepError(f'the {self.label} is asleep (level {self.asleep}); wake it with '
                                    'engine.wake_up() or %swiftnb wake')

    def sleep(self, level: int = 1) -> None:
        """Free the accelerator's memory and keep the engine (vLLM's sleep mode); `wake_up()` brings it back."""
        raise UsageError(f'the {self.label} has no sleep mode (vLLM engines on CUDA have it); '
                         'shutdown() frees its memory')

    def wake_up(self) -> None:
        """Take the memory back after `sleep()`; requests are answered again."""
        self.sleep()  # says that this backend has no sleep mode

    def check_prompt(self, prompt_ids: list[int], which: str = 'the prompt') -> None:
        """The checks a request passes before it streams: the engine is open, the prompt fits."""
        self.check_open()
        if not prompt_ids:
            raise UsageError(f'{which} is empty; give at least one token')
        if len(prompt_ids) >= self.max_model_len:
            raise PromptTooLongError(len(prompt_ids), self.max_model_len, which)

    def max_tokens(self, prompt_ids: list[int], config: GenerationConfig) -> int:
        """The tokens this request may generate: what it asks, capped to the room the context has left,
        as vLLM's server does (which refuses more than max_model_len outright)."""
        if config.max_tokens is not None and config.max_tokens > self.max_model_len:
            raise SettingsError(f'max_tokens={config.max_tokens} cannot be greater than max_model_len='
                                f'{self.max_model_len}; ask for fewer tokens', 'max_tokens')
        room = self.max_model_len - len(prompt_ids)
        return room if config.max_tokens is None else max(1, min(config.max_tokens, room))

    def admit(self, prompt_ids: list[int], config: GenerationConfig, which: str = 'the prompt') -> int:
        """The checks every request passes (the server's before its first byte, the backends' again as they take
        it) with its settings complete; the tokens it may generate."""
        self.check_prompt(prompt_ids, which)
        if config.n > 1 and config.greedy:  # vLLM's rule: greedy answers would be n copies of one
            raise SettingsError(f'n must be 1 when answers are greedy, got {config.n}; '
                                'give a temperature above 0 for different answers')
        return self.max_tokens(prompt_ids, config)

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    def shutdown(self, because: str = 'it was shut down') -> None:
        """Free the model; calling it again does nothing. `because` goes into the error of later calls."""
        if self._closed_because is not None:
            return
        self._closed_because = self.loop.stopped_because = self._died_because() or because
        with shown(self.label, 'shutting down', 'shut down'):
            self._close()

    @property
    def layout(self) -> Optional[str]:
        """How the model is spread over processes and devices, where it is: 'tensor parallel 2' ...; None for one."""
        return None

    def requests_per_replica(self) -> dict[int, int]:
        """{replica: requests it finished} where the engine has replicas (vLLM's data parallel); {} otherwise."""
        return {}

    def __repr__(self):
        state = 'closed' if self.closed else f'asleep, level {self.asleep}' if self.asleep else 'live'
        layout = f', {self.layout}' if self.layout else ''
        return f'<{type(self).__name__} {self.model_type} ({self.backend}, {state}{layout}) at {self.model_dir}>'
