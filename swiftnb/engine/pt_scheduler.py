"""Continuous batching for the pt backend: one thread steps every running request together.

Why our own loop and not transformers' `generate_batch` / `init_continuous_batching`:
that one packs all requests into a single row, so peft cannot give each request
its own adapter, and it has no per-request seed, penalties or stop strings; on
this CPU it was also slower than one request at a time (bench/RESULTS.md). Here
each request is a row of a left-padded batch (pt_batch.PaddedBatch): requests
that arrive are prefilled together and join the running rows at the next step;
every decode step is one forward pass for all rows, each with its own adapter
(pt_lora), sampling rule (pt_sampling) and text (pt_text).

Torch runs here, off the engine's event loop, so the loop stays free to stream
the answers to notebooks and HTTP clients while the model computes.
"""
import concurrent.futures
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from swiftnb.engine.base import Delta, LoRARequest
from swiftnb.engine.pt_batch import PaddedBatch
from swiftnb.engine.pt_lora import PeftAdapters
from swiftnb.engine.pt_sampling import Grammars, RowSampler, choose_tokens, processors, prompt_logprobs
from swiftnb.engine.pt_text import TextStream
from swiftnb.errors import EngineClosedError
from swiftnb.settings import GenerationConfig


@dataclass(eq=False)
class PtRequest:
    prompt_ids: list[int]
    config: GenerationConfig
    lora: Optional[LoRARequest]
    max_tokens: int
    outbox: object  # where its deltas go; the scheduler's `deliver` knows what to do with it
    aborted: bool = False
    done: bool = False  # no longer counted as running: finished, failed or aborted
    open_rows: int = 0
    prompt_logprobs: Optional[list] = None  # computed at prefill when the config asks for them


@dataclass(eq=False)
class Row:
    """One choice of one request."""
    request: PtRequest
    index: int
    adapter: str
    sampler: RowSampler
    text: TextStream
    tokens: list[int] = field(default_factory=list)  # prompt and answer


class BatchScheduler:
    def __init__(self, adapters: PeftAdapters, tokenizer, grammars: Grammars, eos_token_ids: set[int],
                 pad_token_id: int, max_num_seqs: int, device: torch.device,
                 deliver: Callable[[list[tuple[PtRequest, object]]], None]):
        self.adapters, self.tokenizer, self.grammars = adapters, tokenizer, grammars
        self.eos_token_ids = eos_token_ids
        self.pad_token_id, self.max_num_seqs, self.device = pad_token_id, max_num_seqs, device
        self._deliver = deliver  # takes [(request, list of Deltas or an exception)] once per step
        self._inbox: deque[PtRequest] = deque()
        self._calls: deque[tuple[Callable[[], object], concurrent.futures.Future]] = deque()
        self._unload: list[LoRARequest] = []
        self._rows: list[Row] = []
        self._batch = PaddedBatch()
        self._cond = threading.Condition()
        self._stopping = False
        self._num_requests = 0
        self._thread = threading.Thread(target=self._main, name='swiftnb-pt-batch', daemon=True)
        self._thread.start()

    # -- called from any thread --

    def submit(self, request: PtRequest) -> None:
        with self._cond:
            if self._stopping:
                raise EngineClosedError('this engine was shut down; create a new one')
            self._inbox.append(request)
            self._num_requests += 1
            self._cond.notify()

    def abort(self, request: PtRequest) -> None:
        """No longer running from now on (as vLLM's abort); the batch thread drops its rows before the next step."""
        request.aborted = True
        self._count_done([request])
        with self._cond:
            self._cond.notify()

    def unload(self, lora: LoRARequest) -> None:
        with self._cond:
            self._unload.append(lora)
            self._cond.notify()

    def call(self, function: Callable[[], object]) -> concurrent.futures.Future:
        """Run `function` on the batch thread between two steps (where the model may change: an adapter loads)."""
        future = concurrent.futures.Future()
        with self._cond:
            if self._stopping:
                raise EngineClosedError('this engine was shut down; create a new one')
            self._calls.append((function, future))
            self._cond.notify()
        return future

    @property
    def num_requests(self) -> int:
        return self._num_requests

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    # -- the batch thread --

    def _main(self) -> None:
        with torch.inference_mode():
            while self._next_step():
                pass
        closed = EngineClosedError('the engine was shut down')
        self._fail(self._drop(lambda row: True) + list(self._inbox), closed)
        self._inbox.clear()
        for _, future in self._calls:
            future.set_exception(closed)

    def _next_step(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._inbox or self._rows or self._unload or self._calls)
            if self._stopping:
                return False
            new, calls = self._admit(), list(self._calls)
            self._calls.clear()
        for function, future in calls:
            try:
                future.set_result(function())
            except Exception as error:
                future.set_exception(error)
        self._drop(lambda row: row.request.aborted)  # counted done when aborted
        self._unload_idle()
        try:
            if new:
                self._prefill(new)
            if self._rows:
                self._decode()
        except Exception as error:  # e.g. out of memory in a decode step: fail what ran, keep serving
            self._fail(self._drop(lambda row: True), error)
        return True

    def _admit(self) -> list[PtRequest]:
        room, new = self.max_num_seqs - len(self._rows), []
        while self._inbox and (self._inbox[0].config.n <= room or not (self._rows or new)):
            request = self._inbox.popleft()
            if request.aborted:
                continue
            room -= request.config.n
            new.append(request)
        return new

    def _unload_idle(self) -> None:
        if not self._unload:  # the usual case, on every step
            return
        used = {row.request.lora for row in self._rows}
        waiting = [lora for lora in self._unload if lora in used]
        for lora in self._unload:
            if lora not in used:
                self.adapters.unload(lora)
        self._unload = waiting

    def _rows_of(self, request: PtRequest) -> list[Row]:
        adapter = self.adapters.name(request.lora)
        config, prompt = request.config, request.prompt_ids
        grammar = self.grammars.compile(config.structured) if config.structured else None
        stops = [config.stop] if isinstance(config.stop, str) else config.stop or []
        request.open_rows = config.n
        return [Row(request, i, adapter,
                    RowSampler(processors(config, len(prompt), grammar), config.greedy,
                               None if config.seed is None else config.seed + i, config.num_logprobs, self.device),
                    TextStream(self.tokenizer, prompt, stops), list(prompt))
                for i in range(config.n)]

    def _prefill(self, requests: list[PtRequest]) -> None:
        rows, failed = [], []
        for request in requests:
            try:
                rows += self._rows_of(request)
            except Exception as error:  # an adapter that does not load fails its own request only
                failed.append((request, error))
        self._post_errors(failed)
        if not rows:
            return
        length = max(len(row.tokens) for row in rows)
        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, length - len(row.tokens):] = torch.tensor(row.tokens)
            mask[i, length - len(row.tokens):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        scored = [i for i, row in enumerate(rows) if row.index == 0 and row.request.config.prompt_logprobs is not None]
        try:
            out = self._forward(rows, ids, mask, positions, cache=None, logits_to_keep=0 if scored else 1)
        except Exception as error:  # e.g. prompts too big for memory: the running rows go on
            self._fail(list({row.request: None for row in rows}), error)
            return
        for i in scored:
            request = rows[i].request
            length = len(request.prompt_ids)
            request.prompt_logprobs = prompt_logprobs(out.logits[i, -length:], request.prompt_ids,
                                                      request.config.prompt_logprobs)
        self._batch.join(out.past_key_values, mask)
        self._rows += rows
        self._advance(rows, out.logits[:, -1], first_row=len(self._rows) - len(rows))

    def _decode(self) -> None:
        ids = torch.tensor([[row.tokens[-1]] for row in self._rows], device=self.device)
        positions = torch.tensor([[len(row.tokens) - 1] for row in self._rows], device=self.device)
        mask = self._batch.grow()
        out = self._forward(self._rows, ids, mask, positions, cache=self._batch.cache)
        self._advance(self._rows, out.logits[:, -1], first_row=0)

    def _forward(self, rows, ids, mask, positions, cache, logits_to_keep=1):
        # With no cache given (a prefill) the model starts a DynamicCache of its own.
        return self.adapters.forward([row.adapter for row in rows], input_ids=ids, attention_mask=mask,
                                     position_ids=positions, past_key_values=cache, use_cache=True,
                                     logits_to_keep=logits_to_keep)

    def _advance(self, rows: list[Row], logits: torch.Tensor, first_row: int) -> None:
        """Choose each row's next token, send what it adds, and retire the rows that finished."""
        tokens = choose_tokens(logits, [row.sampler for row in rows],
                               lambda i: torch.tensor([rows[i].tokens], device=self.device))
        outputs: dict[PtRequest, list[Delta]] = {}
        finished = set()
        for i, (row, token) in enumerate(zip(rows, tokens)):
            reason = self._append(row, token)
            logprobs = row.sampler.logprobs(logits[i:i + 1], token)
            first = len(row.tokens) == len(row.request.prompt_ids) + 1
            outputs.setdefault(row.request, []).append(
                Delta(row.index, row.text.delta(reason is not None), [token], reason,
                      None if logprobs is None else [logprobs],
                      row.request.prompt_logprobs if first and row.index == 0 else None))
            if reason is not None:
                finished.add(first_row + i)
        self._deliver(list(outputs.items()))
        if finished:
            self._retire(finished)

    def _append(self, row: Row, token: int) -> Optional[str]:
        """Add a token to the row; the finish reason if it ended the row."""
        row.tokens.append(token)
        config = row.request.config
        if row.text.add(token):
            return 'stop'
        if token in self.eos_token_ids and not config.ignore_eos:
            return 'stop'
        if len(row.tokens) - len(row.request.prompt_ids) >= row.request.max_tokens:
            return 'length'
        return None

    def _retire(self, finished: set[int]) -> None:
        for i in finished:
            request = self._rows[i].request
            request.open_rows -= 1
            if not request.open_rows:
                self._count_done([request])
        self._keep([i for i in range(len(self._rows)) if i not in finished])

    def _keep(self, indices: list[int]) -> None:
        self._rows = [self._rows[i] for i in indices]
        self._batch.keep(indices)

    def _drop(self, condition) -> list[PtRequest]:
        """Take the rows that meet the condition out of the batch; the requests they belonged to."""
        dropped = {row.request for row in self._rows if condition(row)}
        if dropped:
            self._keep([i for i, row in enumerate(self._rows) if row.request not in dropped])
        return list(dropped)

    def _fail(self, requests: list[PtRequest], error: BaseException) -> None:
        self._post_errors([(request, error) for request in requests])

    def _post_errors(self, failed: list[tuple[PtRequest, BaseException]]) -> None:
        if failed:
            self._count_done([request for request, _ in failed])
            self._deliver(failed)

    def _count_done(self, requests: list[PtRequest]) -> None:
        """These requests no longer run; each counts once (an aborted one may finish in the step it was aborted in)."""
        with self._cond:  # submit() counts up and abort() down from other threads
            for request in requests:
                if not request.done:
                    request.done = True
                    self._num_requests -= 1
