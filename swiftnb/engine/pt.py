"""The pt backend: a transformers model (with peft adapters) behind the same Engine interface as vLLM.

For models or adapters vLLM cannot serve, and machines where vLLM does not
install. Requests are batched continuously by pt_scheduler on a thread of their
own; this class loads the model and bridges each request's deltas to the
engine loop, where inference_vllm, the server and the widgets read them.
"""
import asyncio
import gc
from typing import AsyncIterator, Optional

from swiftnb import logs
from swiftnb.engine import pt_attention
from swiftnb.engine.base import Delta, Engine, LoRARequest
from swiftnb.engine.loop import EngineLoop
from swiftnb.engine.options import PtOptions
from swiftnb.engine.progress import ProgressLine
from swiftnb.engine.pt_lora import PeftAdapters
from swiftnb.engine.pt_sampling import Grammars
from swiftnb.engine.pt_scheduler import BatchScheduler, PtRequest
from swiftnb.settings import GenerationConfig


def _device(device):
    import torch
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(device)


def _dtype(dtype: str, device):
    """'auto': the checkpoint's dtype on a GPU, float32 on a CPU.

    Why float32 on a CPU: there, bfloat16 rounding once let the batch a request shared change its
    answer (1 of 108 sampled answers in the mixed-adapter check), float32 never did, and it was as
    fast for the demo model (bench/RESULTS.md).
    """
    import torch
    if dtype != 'auto':
        return getattr(torch, dtype)
    return 'auto' if device.type == 'cuda' else torch.float32


def _eos_token_ids(model, tokenizer) -> set[int]:
    """What ends an answer, as vLLM counts it: the generation config's EOS ids and the tokenizer's."""
    ids = getattr(model.generation_config, 'eos_token_id', None)
    ids = set([ids] if isinstance(ids, int) else ids or [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class PtEngine(Engine):
    backend = 'pt'

    def __init__(self, model_type: str, model_dir: str, options: PtOptions = PtOptions()):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        super().__init__(model_type, model_dir, EngineLoop())
        self.options = options
        self.enable_lora = options.enable_lora
        self.device = _device(options.device)
        progress = ProgressLine(self.label)
        try:
            progress.stage('loading weights')
            self.hf_tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model_kwargs = dict(options.model_kwargs)
            if self.device.type == 'cpu':
                model_kwargs.setdefault('attn_implementation', pt_attention.register())
            with logs.quiet_loading():
                model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=_dtype(options.dtype, self.device),
                                                             **model_kwargs)
        except BaseException:
            progress.failed()
            self.loop.stop()
            raise
        progress.stage(f'moving to {self.device.type}')
        model.to(self.device).eval()
        self.max_model_len = min(filter(None, [options.max_model_len,
                                               getattr(model.config, 'max_position_embeddings', None)]), default=4096)
        self.generation_config = GenerationConfig.from_model(model_dir)
        pad_token_id = self.hf_tokenizer.pad_token_id
        self._scheduler = BatchScheduler(
            PeftAdapters(model), self.hf_tokenizer, Grammars(self.hf_tokenizer, model.config.vocab_size),
            _eos_token_ids(model, self.hf_tokenizer), pad_token_id if pad_token_id is not None else 0,
            options.max_num_seqs, self.device, self._deliver)
        self.start_times = progress.done()

    @property
    def model(self):
        """The transformers model (a peft PeftModel once an adapter has been used)."""
        return self._scheduler.adapters.model

    @property
    def num_running(self) -> int:
        return 0 if self.closed else self._scheduler.num_requests

    async def _load_lora(self, lora: LoRARequest) -> None:
        scheduler = self._scheduler
        await asyncio.wrap_future(scheduler.call(lambda: scheduler.adapters.load_checked(lora)))

    def remove_lora(self, name: str) -> None:
        lora = self.adapters.get(name)
        super().remove_lora(name)
        self._scheduler.unload(lora)  # its weights are freed once no running request uses them

    def _deliver(self, outputs: list) -> None:
        """From the batch thread: hand each request its step's deltas (or its error) on the engine loop."""
        def put():
            for request, item in outputs:
                request.outbox.put_nowait(item)
        self.loop.asyncio_loop.call_soon_threadsafe(put)

    async def stream(self, prompt_ids: list[int], config: GenerationConfig, lora: Optional[LoRARequest] = None,
                     request_id: Optional[str] = None, final_only: bool = False) -> AsyncIterator[Delta]:
        max_tokens = self.admit(prompt_ids, config)
        await self.load_lora(lora)
        request = PtRequest(list(prompt_ids), config, lora, max_tokens, asyncio.Queue())
        self._scheduler.submit(request)
        open_choices = config.n
        try:
            while open_choices:
                item = await request.outbox.get()
                if isinstance(item, BaseException):
                    open_choices = 0
                    raise item
                for delta in item:
                    open_choices -= delta.finish_reason is not None
                    yield delta
        finally:
            if open_choices:
                self._scheduler.abort(request)

    def _close(self) -> None:
        self._scheduler.stop()
        self.loop.stop()
        device = self.device
        del self._scheduler
        gc.collect()
        if device.type == 'cuda':
            import torch
            # cuBLAS keeps a workspace (32 MiB on an H100) per thread that used it, in torch's allocator;
            # the batch thread's outlives the thread unless cleared. torch has only this private call for it
            # (its own test suite and CUDA-graph trees use it); the next matmul simply allocates a new one.
            torch._C._cuda_clearCublasWorkspaces()
            torch.cuda.empty_cache()
