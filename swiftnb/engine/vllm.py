"""The vLLM backend: an AsyncLLM that lives on the EngineLoop thread."""
import contextlib
import gc
import sys
from typing import AsyncIterator, Optional

from swiftnb import logs
from swiftnb.config import GenerationConfig, hf_generation_config, to_vllm
from swiftnb.engine.adapter_gate import AdapterGate
from swiftnb.engine.base import Delta, Engine, LoRARequest
from swiftnb.engine.loop import EngineLoop


class VllmEngine(Engine):
    backend = 'vllm'

    def __init__(self, model_type: str, model_dir: str, *, dtype: str = 'auto', enable_lora: bool = False,
                 max_loras: int = 1, max_lora_rank: int = 16, tensor_parallel_size: int = 1,
                 pipeline_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: Optional[int] = None, max_num_seqs: int = 256, enforce_eager: bool = False,
                 engine_kwargs: Optional[dict] = None):
        super().__init__(EngineLoop())
        self.model_type, self.model_dir = model_type, model_dir
        self.enable_lora, self.max_lora_rank = enable_lora, max_lora_rank
        self._vllm_loras: dict[LoRARequest, object] = {}  # checked adapters -> vLLM's request for them
        logs.prepare_vllm_env()
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        args = AsyncEngineArgs(
            model=model_dir, dtype=dtype, enable_lora=enable_lora, max_loras=max_loras, max_lora_rank=max_lora_rank,
            tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
            max_num_seqs=max_num_seqs, enforce_eager=enforce_eager, disable_log_stats=True,
            **(engine_kwargs or {}))
        try:
            self.llm = self.loop.run(self._start(args))
        except BaseException:
            self.loop.stop()
            raise
        self.hf_tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.max_model_len = self.llm.model_config.max_model_len
        self.generation_config = GenerationConfig.from_hf(hf_generation_config(model_dir))
        from vllm.platforms import current_platform
        # See adapter_gate.py: vLLM's CPU backend mixes up adapters of requests batched together.
        self._gate = AdapterGate() if current_platform.is_cpu() else None

    @staticmethod
    async def _start(args):
        from vllm.v1.engine.async_llm import AsyncLLM
        with logs.quiet_fds(), _children_skip_main():
            return AsyncLLM.from_engine_args(args)

    @property
    def num_running(self) -> int:
        return 0 if self.closed else self.llm.get_num_unfinished_requests()

    def check_lora(self, lora: Optional[LoRARequest]) -> None:
        self._vllm_lora(lora)

    def _vllm_lora(self, lora: Optional[LoRARequest]):
        if lora is None:
            return None
        if lora not in self._vllm_loras:  # check an adapter (and read its config file) once, not per request
            self._read_adapter(lora, self.max_lora_rank)
            from vllm.lora.request import LoRARequest as VllmLoRARequest
            self._vllm_loras[lora] = VllmLoRARequest(lora.lora_name, lora.lora_int_id, lora.lora_path)
        return self._vllm_loras[lora]

    async def stream(self, prompt_ids: list[int], config: GenerationConfig, lora: Optional[LoRARequest] = None,
                     request_id: Optional[str] = None) -> AsyncIterator[Delta]:
        params = to_vllm(config, self.admit(prompt_ids, config))
        vllm_lora = self._vllm_lora(lora)
        # vLLM tells adapters apart by their id, so the gate groups requests by id too.
        gate = self._gate.hold(lora.lora_int_id if lora else None) if self._gate else contextlib.nullcontext()
        async with gate:
            generator = self.llm.generate({'prompt_token_ids': prompt_ids}, params, request_id or self.new_request_id(),
                                          lora_request=vllm_lora)
            try:
                async for out in generator:
                    for choice in out.outputs:
                        yield Delta(choice.index, choice.text, list(choice.token_ids), choice.finish_reason,
                                    _logprobs(choice.logprobs))
            finally:
                await generator.aclose()  # aborts the request in vLLM if it has not finished

    def _close(self) -> None:
        async def stop():
            # Stop vLLM's output handler before its engine core, or it logs the core's exit as an error.
            if self.llm.output_handler is not None:
                self.llm.output_handler.cancel()
            self.llm.shutdown()
        try:
            self.loop.run(stop())
        finally:
            self.loop.stop()
            del self.llm
            gc.collect()


@contextlib.contextmanager
def _children_skip_main():
    """Start vLLM's child processes without re-running the user's script in them.

    vLLM's CPU backend starts its engine core with multiprocessing's 'spawn', which runs the
    main script again in the child unless it is guarded by `if __name__ == '__main__':`. The
    seed's scripts are not guarded, and the child needs nothing from them, so the script's path
    is hidden while the engine starts (multiprocessing re-runs only a main that has a __file__).
    """
    main = sys.modules.get('__main__')
    path = getattr(main, '__file__', None)
    if path is None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _logprobs(step_logprobs) -> Optional[list]:
    if step_logprobs is None:
        return None
    return [{token_id: lp.logprob for token_id, lp in entry.items()} for entry in step_logprobs]
