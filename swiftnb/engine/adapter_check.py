"""A peft LoRA adapter checked completely before an engine takes it: its config, its weights and their shapes
against the base model's, read from the safetensors headers (no tensor is loaded).

An adapter vLLM accepts by its config alone and then fails to load kills its engine core, and with it every
request, base ones included; so what vLLM's loader would trip over is said here, as one AdapterError.
"""
import json
from pathlib import Path
from typing import Optional

from swiftnb.errors import AdapterError

WEIGHT_FILES = ('adapter_model.safetensors', 'adapter_model.bin')


def check_adapter(path: str, max_lora_rank: Optional[int] = None, base_dir: Optional[str] = None) -> dict:
    """The adapter's peft config, once config and weights hold together (and fit the base at `base_dir`)."""
    where = f'adapter at {str(path)!r}'
    config_file = Path(path) / 'adapter_config.json'
    if not config_file.is_file():
        raise AdapterError(f'no LoRA adapter at {str(path)!r} (adapter_config.json not found)')
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdapterError(f'{where}: adapter_config.json is not JSON ({error})') from None
    if not isinstance(config, dict):
        raise AdapterError(f'{where}: adapter_config.json must hold an object, got {type(config).__name__}')
    rank = config.get('r')
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise AdapterError(f"{where}: adapter_config.json's r must be a whole number >= 1, got {rank!r}")
    if max_lora_rank is not None and rank > max_lora_rank:
        raise AdapterError(f"{where} has rank {rank}, above this engine's max_lora_rank "
                           f'{max_lora_rank}; create the engine with max_lora_rank={rank} or more')
    shapes = _adapter_shapes(Path(path), where)
    base = _base_shapes(Path(base_dir)) if base_dir else {}
    ranks_vary = bool(config.get('rank_pattern'))
    for name, shape in shapes.items():
        _check_tensor(name, shape, rank, ranks_vary, base, where)
    return config


def _adapter_shapes(path: Path, where: str) -> dict[str, tuple]:
    weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise AdapterError(f'{where} has no weights ({" or ".join(WEIGHT_FILES)} not found)')
    try:
        shapes = _shapes(weights)
    except Exception as error:  # safetensors/torch say why a file is not a checkpoint
        raise AdapterError(f'{where}: {weights.name} is not readable ({str(error).splitlines()[0]})') from None
    if not any('lora_A' in name for name in shapes):
        raise AdapterError(f'{where}: {weights.name} holds no LoRA tensors (no lora_A weights)')
    return shapes


def _shapes(file: Path) -> dict[str, tuple]:
    if file.suffix == '.safetensors':
        from safetensors import safe_open
        with safe_open(str(file), 'pt') as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    import torch
    return {name: tuple(t.shape) for name, t in torch.load(file, map_location='meta', weights_only=True).items()}


def _base_shapes(model_dir: Path) -> dict[str, tuple]:
    shapes = {}
    for file in sorted(model_dir.glob('*.safetensors')):
        shapes.update(_shapes(file))
    return shapes


def _check_tensor(name: str, shape: tuple, rank: int, ranks_vary: bool, base: dict, where: str) -> None:
    part = 'lora_A' if '.lora_A.' in name else 'lora_B' if '.lora_B.' in name else None
    if part is None:
        return  # modules_to_save and the like: vLLM reads them by their own rules
    if len(shape) != 2:
        raise AdapterError(f'{where}: {name} has shape {list(shape)}; a LoRA weight is a matrix')
    if not ranks_vary and shape[0 if part == 'lora_A' else 1] != rank:
        raise AdapterError(f'{where}: {name} has shape {list(shape)}, which does not match r={rank} '
                           'in adapter_config.json')
    # peft saves 'base_model.model.<base weight name without .weight>.lora_A.weight'
    module = name.removeprefix('base_model.model.').split(f'.{part}.')[0]
    base_shape = base.get(f'{module}.weight')
    if base_shape is None or len(base_shape) != 2:
        return
    expected, got = (base_shape[1], shape[1]) if part == 'lora_A' else (base_shape[0], shape[0])
    if expected != got:
        raise AdapterError(f'{where} was not trained for this model: {name} has shape {list(shape)}, '
                           f'{module} has shape {list(base_shape)}')
