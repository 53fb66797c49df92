"""Engine options, one dataclass per backend (nano-vllm's `Config`): declared once, checked where made.

`get_vllm_engine(**options)` and `get_pt_engine(**options)` fill them by field name; the registry
tells two engines apart by them (equal options: the same engine), and the backends read them.
The `swiftnb` command's and the magics' engine flags are made from the same fields (add_flags).
"""
import argparse
import math
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Optional

from swiftnb.errors import UsageError


def dtype_name(torch_dtype) -> str:
    """'auto' for None; torch.float16 -> 'float16'; strings pass through."""
    return 'auto' if torch_dtype is None else str(torch_dtype).replace('torch.', '')


def option(default, help: str):
    """A field with its flag's help: the CLI and the magics make their flags from it (add_flags)."""
    return field(default=default, metadata={'help': help})


@dataclass(frozen=True)
class VllmOptions:
    """What get_vllm_engine takes beyond the model; all but ray_address and engine_kwargs are vLLM's
    AsyncEngineArgs fields."""
    dtype: str = 'auto'
    enable_lora: bool = option(False, 'serve LoRA adapters: true or false (default: false)')
    max_loras: int = 1
    max_lora_rank: int = option(16, 'the largest adapter rank the engine takes')
    tensor_parallel_size: int = option(1, 'devices each layer is split over')
    pipeline_parallel_size: int = option(1, 'devices the layers are spread over')
    # replicas of the model, each with its own engine core; requests spread over them
    data_parallel_size: int = option(1, 'replicas of the model')
    gpu_memory_utilization: float = option(0.9, "the share of the GPU's memory vLLM takes")
    max_model_len: Optional[int] = option(None, "the context length (default: the model's)")
    max_num_seqs: Optional[int] = option(None, "the most requests in one batch (default: vLLM's for the device and "
                                                "for `defaults_for`)")
    enforce_eager: bool = option(False, 'no CUDA graphs nor compilation: a faster start, slower steps')
    enable_sleep_mode: bool = False  # engine.sleep() / wake_up() free the GPU and take it back (CUDA only)
    distributed_executor_backend: Optional[str] = None  # 'mp': the ranks on this machine; 'ray': on a Ray cluster
    # swiftnb's: a Ray cluster ('host:6379', 'ray://host:10001', 'auto'; None: no cluster unless the backend is 'ray',
    # then RAY_ADDRESS, the cluster `ray start` last started here, or a new local one). With it, the backend defaults
    # to 'ray'; with 'mp' the ranks run on this machine and their devices are held in the cluster's books.
    ray_address: Optional[str] = option(None, "a Ray cluster for the ranks ('HEAD:6379', 'auto'; needs swiftnb[ray])")
    # swiftnb's: whose defaults vLLM gives max_num_seqs and max_num_batched_tokens where they are not set: 'batch'
    # LLM's (on an H100/H200 1024 sequences and 16384 tokens a step), 'server' `vllm serve`'s (1024, 8192).
    # AsyncLLM alone takes neither (128 and 2048): behind vLLM's server at 256 streams and LLM.generate in batches.
    # It also picks vLLM's stats (disable_log_stats, where engine_kwargs does not set it): off for 'batch', as in LLM,
    # on for 'server', as in `vllm serve`; they are /metrics' engine figures, and about 40% of the front end's work
    # in a batch (a Prometheus histogram observed per token: bench/RESULTS.md), which a fast card waits for.
    defaults_for: str = 'batch'
    engine_kwargs: dict = field(default_factory=dict)  # any other AsyncEngineArgs field, e.g. enable_prefix_caching

    def __post_init__(self):
        if self.defaults_for not in ('batch', 'server'):
            raise UsageError(f"defaults_for must be 'batch' (LLM's) or 'server' (vllm serve's), "
                             f'got {self.defaults_for!r}')
        if self.ray_address is not None and self.distributed_executor_backend is None:
            object.__setattr__(self, 'distributed_executor_backend', 'ray')  # equal options for equal engines

    def parallel_sizes(self) -> dict:
        """{'tensor parallel': n, 'pipeline parallel': n, 'data parallel': n}, as vLLM gets them."""
        args = self.engine_args()
        return {kind: args.get(f'{kind.split()[0]}_parallel_size', 1)
                for kind in ('tensor parallel', 'pipeline parallel', 'data parallel')}

    def ranks(self) -> int:
        """The processes that hold a part or a copy of the model: the product of the parallel sizes."""
        return math.prod(self.parallel_sizes().values())

    def world_size(self) -> int:
        """The ranks of one replica (vLLM's world size): tensor x pipeline parallel."""
        sizes = self.parallel_sizes()
        return sizes['tensor parallel'] * sizes['pipeline parallel']

    def uses_ray(self) -> bool:
        """Whether vLLM's Ray executor runs the ranks (the backend given here or in engine_kwargs)."""
        return self.engine_args().get('distributed_executor_backend') == 'ray'

    def engine_args(self) -> dict:
        """Keyword arguments for vLLM's AsyncEngineArgs (model aside)."""
        args = asdict(self)
        extra = args.pop('engine_kwargs')
        del args['ray_address']  # vLLM's engine process finds the cluster through RAY_ADDRESS (ray_cluster.py)
        del args['defaults_for']  # vLLM's usage context, given to the engine beside its arguments (vllm.py)
        return {'disable_log_stats': self.defaults_for == 'batch', **args, **extra}


@dataclass(frozen=True)
class PtOptions:
    """What get_pt_engine takes beyond the model."""
    dtype: str = 'auto'
    enable_lora: bool = False
    max_model_len: Optional[int] = None
    max_num_seqs: int = 64
    device: Optional[str] = None  # 'cuda' when torch sees a GPU, else 'cpu'
    model_kwargs: dict = field(default_factory=dict)  # for AutoModelForCausalLM.from_pretrained


def parse_bool(text: str) -> bool:
    """A flag's true/false (the seed writes `--merge_lora true`)."""
    if text.lower() in ('true', '1', 'yes'):
        return True
    if text.lower() in ('false', '0', 'no'):
        return False
    raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


BACKENDS = {'vllm': 'vllm', 'pt': 'pt', 'transformers': 'pt'}  # ms-swift 4.x calls the pt backend 'transformers'


def add_model_flags(parser) -> None:
    """The flags that pick the model and the backend, for the `swiftnb` command and `%swiftnb engine`: the seed's
    (2.x) spellings and ms-swift 4.x's (--model, --infer_backend transformers)."""
    parser.add_argument('--model_type', help="a model type from swiftnb's table (its hub id, template and kind)")
    parser.add_argument('--model_id_or_path', '--model',
                        help='a model folder or hub id (with --model_type: its weights)')
    parser.add_argument('--infer_backend', choices=list(BACKENDS), default='vllm',
                        help='vllm, or pt (ms-swift 4.x: transformers) for what vLLM cannot load')


def add_flags(parser, cls, names) -> None:
    """`--name` flags for these fields of `cls`, with their defaults, types and help, each also spelt `--vllm_name`
    (ms-swift's: the seed's --vllm_enable_lora, 4.x's --vllm_max_model_len ...); a true/false field takes `--flag`,
    `--flag true` or `--flag false`."""
    hints, declared = typing.get_type_hints(cls), {f.name: f for f in fields(cls)}
    for name in names:
        declaration, kind = declared[name], hints[name]
        kind = next(k for k in typing.get_args(kind) if k is not type(None)) if typing.get_args(kind) else kind
        default = None if declaration.default is MISSING else declaration.default
        flags = (f'--{name}', f'--vllm_{name}')
        if kind is bool:
            parser.add_argument(*flags, dest=name, type=parse_bool, nargs='?', const=True, default=default,
                                metavar='true|false', help=declaration.metadata.get('help'))
        else:
            parser.add_argument(*flags, dest=name, type=kind, default=default, help=declaration.metadata.get('help'))


def make_options(cls, caller: str, torch_dtype, kwargs: dict):
    """`cls` filled from keyword arguments, with one clear error for a name it does not have."""
    names = [f.name for f in fields(cls) if f.name != 'dtype']
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise UsageError(f'{caller} does not take {", ".join(unknown)}; it takes model_type, torch_dtype, '
                         f'model_id_or_path, {", ".join(names)}')
    for name in ('engine_kwargs', 'model_kwargs'):
        if name in kwargs:
            kwargs = {**kwargs, name: dict(kwargs[name] or {})}
    return cls(dtype=dtype_name(torch_dtype), **kwargs)
