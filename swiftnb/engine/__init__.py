"""Engine construction: the seed's `get_vllm_engine`, `get_pt_engine`, and `get_engine` for either backend.

Each reuses the kernel's live engine when called again with the same arguments.
"""
from typing import Optional

from swiftnb.engine import registry
from swiftnb.engine.adapter_check import AdapterReport, diagnose
from swiftnb.engine.base import Choice, Delta, Engine, LoRARequest
from swiftnb.engine.options import BACKENDS, PtOptions, VllmOptions, make_options
from swiftnb.errors import UsageError
from swiftnb.model_types import resolve_model


def get_vllm_engine(model_type: Optional[str] = None, torch_dtype=None, *, model_id_or_path: Optional[str] = None,
                    **options) -> Engine:
    """A vLLM engine for a model type (default: the embedded 'tiny-chat') or a local path / hub id.

    Options (swiftnb.engine.options.VllmOptions): enable_lora, max_loras, max_lora_rank,
    tensor_parallel_size, pipeline_parallel_size, data_parallel_size, gpu_memory_utilization,
    max_model_len, max_num_seqs, enforce_eager, enable_sleep_mode (CUDA: engine.sleep() /
    engine.wake_up()), distributed_executor_backend ('mp', or 'ray' for a Ray cluster) and ray_address
    (the cluster: 'host:6379', 'ray://host:10001', 'auto'), defaults_for ('batch': vLLM picks the batch sizes
    max_num_seqs and max_num_batched_tokens left unset as for LLM.generate, and keeps no stats, as LLM; 'server':
    as `vllm serve` does, stats for /metrics on, which `swiftnb deploy` sets), and engine_kwargs for any other
    field of vLLM's AsyncEngineArgs. Called again with the same arguments it returns the live engine at once;
    with other arguments it shuts the live engine down first.
    """
    options = make_options(VllmOptions, 'get_vllm_engine', torch_dtype, options)
    model_type, model_dir = resolve_model(model_type, model_id_or_path)

    def check():
        from swiftnb.engine.vllm import engine_args
        return engine_args(model_dir, options)

    def build(args):
        from swiftnb.engine.vllm import VllmEngine
        return VllmEngine(model_type, model_dir, options, args)
    return registry.get_or_create(('vllm', model_type, model_dir, options), build, check)


def get_pt_engine(model_type: Optional[str] = None, torch_dtype=None, *, model_id_or_path: Optional[str] = None,
                  **options) -> Engine:
    """A transformers (+ peft) engine with the same interface as get_vllm_engine's: inference_vllm,
    inference_stream_vllm, their async twins, the server and the widgets take either.

    Options (swiftnb.engine.options.PtOptions): enable_lora, max_model_len, max_num_seqs, device
    ('cuda' when torch sees a GPU, else 'cpu'), model_kwargs (for `AutoModelForCausalLM.from_pretrained`).
    It batches requests continuously and mixes adapters in one batch. `torch_dtype`: the checkpoint's on
    a GPU, float32 on a CPU. A request gets the answer it gets alone in float32; in bf16/fp16 on a GPU
    the batch it shares can flip near-tie tokens (bench/RESULTS.md), so pass torch_dtype='float32' where
    an exact A/B comparison matters.
    """
    options = make_options(PtOptions, 'get_pt_engine', torch_dtype, options)
    model_type, model_dir = resolve_model(model_type, model_id_or_path)

    def build(_):
        from swiftnb.engine.pt import PtEngine
        return PtEngine(model_type, model_dir, options)
    return registry.get_or_create(('pt', model_type, model_dir, options), build)


_BUILDERS = {'vllm': get_vllm_engine, 'pt': get_pt_engine}


def get_engine(model_type: Optional[str] = None, torch_dtype=None, *, infer_backend: str = 'vllm', **kwargs) -> Engine:
    """get_vllm_engine or get_pt_engine, picked by `infer_backend` ('pt' is ms-swift 4.x's 'transformers'), with
    that function's keyword arguments."""
    if infer_backend not in BACKENDS:
        raise UsageError(f"infer_backend must be one of {', '.join(BACKENDS)}, got {infer_backend!r}")
    return _BUILDERS[BACKENDS[infer_backend]](model_type, torch_dtype, **kwargs)


def check_adapter(path: str, engine: Optional[Engine] = None) -> AdapterReport:
    """The LoRA doctor: everything about the adapter at `path` that would stop an engine loading it, or make its
    answers differ from what was trained, in one list, each with its fix. With `engine`, against that engine too:
    its max_lora_rank, its model's weight shapes and the base the adapter names. add_lora runs the same checks and
    refuses the adapter on the first problem that would stop it loading."""
    return diagnose(path) if engine is None else engine.diagnose_adapter(path)


__all__ = ['Choice', 'Delta', 'Engine', 'LoRARequest', 'check_adapter', 'get_engine', 'get_pt_engine',
           'get_vllm_engine']

