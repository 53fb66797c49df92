"""Engine construction: the seed's `get_vllm_engine`, `get_pt_engine`, and `get_engine` for either backend.

Each reuses the kernel's live engine when called again with the same arguments.
"""
import inspect
from typing import Optional

from swiftnb.engine import registry
from swiftnb.engine.base import Delta, Engine, LoRARequest
from swiftnb.model_types import resolve_model


def _dtype_name(torch_dtype) -> str:
    if torch_dtype is None:
        return 'auto'
    return str(torch_dtype).replace('torch.', '')  # torch.float16 -> 'float16'; strings pass through


def get_vllm_engine(model_type: Optional[str] = None, torch_dtype=None, *, model_id_or_path: Optional[str] = None,
                    enable_lora: bool = False, max_loras: int = 1, max_lora_rank: int = 16,
                    tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                    gpu_memory_utilization: float = 0.9, max_model_len: Optional[int] = None,
                    max_num_seqs: int = 256, enforce_eager: bool = False,
                    engine_kwargs: Optional[dict] = None) -> Engine:
    """A vLLM engine for a model type (default: the embedded 'tiny-chat') or a local path / hub id.

    Called again with the same arguments it returns the live engine at once; with other
    arguments it shuts the live engine down first. `engine_kwargs` go to vLLM's AsyncEngineArgs
    (e.g. `distributed_executor_backend='ray'`).
    """
    model_type, model_dir = resolve_model(model_type, model_id_or_path)
    options = dict(dtype=_dtype_name(torch_dtype), enable_lora=enable_lora, max_loras=max_loras,
                   max_lora_rank=max_lora_rank, tensor_parallel_size=tensor_parallel_size,
                   pipeline_parallel_size=pipeline_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
                   max_model_len=max_model_len, max_num_seqs=max_num_seqs, enforce_eager=enforce_eager,
                   engine_kwargs=dict(engine_kwargs or {}))
    key = ('vllm', model_type, model_dir, repr(sorted(options.items())))

    def build():
        from swiftnb.engine.vllm import VllmEngine
        return VllmEngine(model_type, model_dir, **options)
    return registry.get_or_create(key, build)


def get_pt_engine(model_type: Optional[str] = None, torch_dtype=None, *, model_id_or_path: Optional[str] = None,
                  enable_lora: bool = False, max_model_len: Optional[int] = None, max_num_seqs: int = 64,
                  device: Optional[str] = None, model_kwargs: Optional[dict] = None) -> Engine:
    """A transformers (+ peft) engine with the same interface as get_vllm_engine's: inference_vllm,
    inference_stream_vllm, their async twins, the server and the widgets take either.

    It batches requests continuously and mixes adapters in one batch. `device`: 'cuda' when torch sees
    a GPU, else 'cpu'; `torch_dtype`: the checkpoint's on a GPU, float32 on a CPU; `model_kwargs` go
    to `AutoModelForCausalLM.from_pretrained`. A request gets the answer it gets alone in float32;
    in bf16/fp16 on a GPU the batch it shares can flip near-tie tokens (bench/RESULTS.md), so pass
    torch_dtype='float32' where an exact A/B comparison matters.
    """
    model_type, model_dir = resolve_model(model_type, model_id_or_path)
    options = dict(dtype=_dtype_name(torch_dtype), enable_lora=enable_lora, max_model_len=max_model_len,
                   max_num_seqs=max_num_seqs, device=device, model_kwargs=dict(model_kwargs or {}))
    key = ('pt', model_type, model_dir, repr(sorted(options.items())))

    def build():
        from swiftnb.engine.pt import PtEngine
        return PtEngine(model_type, model_dir, **options)
    return registry.get_or_create(key, build)


_BUILDERS = {'vllm': get_vllm_engine, 'pt': get_pt_engine}


def get_engine(model_type: Optional[str] = None, torch_dtype=None, *, infer_backend: str = 'vllm', **kwargs) -> Engine:
    """get_vllm_engine or get_pt_engine, picked by `infer_backend`, with that function's keyword arguments."""
    if infer_backend not in _BUILDERS:
        raise ValueError(f"infer_backend must be 'vllm' or 'pt', got {infer_backend!r}")
    build = _BUILDERS[infer_backend]
    unknown = sorted(set(kwargs) - set(inspect.signature(build).parameters))
    if unknown:
        raise TypeError(f"the {infer_backend} backend does not take {', '.join(unknown)}")
    return build(model_type, torch_dtype, **kwargs)


__all__ = ['Delta', 'Engine', 'LoRARequest', 'get_engine', 'get_pt_engine', 'get_vllm_engine']
