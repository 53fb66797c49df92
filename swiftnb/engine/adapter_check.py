"""A peft LoRA adapter checked completely before an engine takes it: its config, its weights and their shapes
against the base model's, read from the safetensors headers (no tensor is loaded).

An adapter vLLM accepts by its config alone and then fails to load kills its engine core, and with it every
request, base ones included; so what vLLM's loader would trip over is said here. `diagnose()` lists every
problem at once, each with its fix (the doctor, `swiftnb.check_adapter`); an engine refuses an adapter on the
first problem that would stop it loading, as one AdapterError (Engine._read_adapter).
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

WEIGHT_FILES = ('adapter_model.safetensors', 'adapter_model.bin')
EMBEDDINGS = ('embed_tokens', 'lm_head', 'wte', 'word_embeddings', 'embed_in', 'embed_out')  # input/output embeddings


@dataclass(frozen=True)
class Finding:
    message: str  # what is wrong; what to do about it
    blocking: bool = True  # False: it loads, but its answers can differ from what it was trained to give


class AdapterReport(list):
    """The doctor's findings for one adapter (a list of Finding); empty when nothing is wrong."""

    def __init__(self, path, findings=(), config: Optional[dict] = None):
        super().__init__(findings)
        self.path, self.config = str(path), config

    @property
    def ok(self) -> bool:
        """Whether an engine can load it (findings that are not blocking may remain)."""
        return not any(f.blocking for f in self)

    def __str__(self):
        if not self:
            return f'adapter at {self.path}: no problems found'
        return '\n'.join([f'adapter at {self.path}:'] + [f'  {"error" if f.blocking else "warning"}: {f.message}'
                                                         for f in self])

    __repr__ = __str__


def diagnose(path: str, max_lora_rank: Optional[int] = None, base_dir: Optional[str] = None,
             base_names: tuple = (), vllm_embeddings: Optional[set] = None) -> AdapterReport:
    """Every problem of the adapter at `path` for an engine of `max_lora_rank` on the model at `base_dir`, known by
    `base_names` (its model type, hub id, folder name). `vllm_embeddings`: for a vLLM engine, the embedding modules
    its model takes LoRA on (most take it on their linear layers only); vLLM also refuses some peft features that
    transformers + peft serve. None: not for vLLM."""
    vllm = vllm_embeddings is not None
    findings: list[Finding] = []
    where = f'adapter at {str(path)!r}'
    config = _config(Path(path), where, findings)
    if config is not None:
        _check_config(config, where, max_lora_rank, base_names, vllm, findings)
        shapes = _adapter_shapes(Path(path), where, findings)
        base = _base_shapes(Path(base_dir)) if base_dir and shapes else {}
        rank = config.get('r') if isinstance(config.get('r'), int) else None
        _check_targets(shapes, base, base_dir, vllm_embeddings, where, findings)
        if base:
            _check_dtypes(Path(path) / WEIGHT_FILES[0], sorted(Path(base_dir).glob('*.safetensors')), where,
                          findings)
        for name, shape in shapes.items():
            problem = _tensor_problem(name, shape, rank, bool(config.get('rank_pattern')), base, where)
            if problem:
                findings.append(Finding(problem))
                break  # one tensor says it; the others would repeat it
    return AdapterReport(path, findings, config)


def _config(path: Path, where: str, findings: list) -> Optional[dict]:
    config_file = path / 'adapter_config.json'
    if not config_file.is_file():
        merged = ' (it holds a whole model: load it with model_id_or_path)' if (path / 'config.json').is_file() else ''
        findings.append(Finding(f'no LoRA adapter at {str(path)!r} (adapter_config.json not found){merged}'))
        return None
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        findings.append(Finding(f'{where}: adapter_config.json is not JSON ({error})'))
        return None
    if not isinstance(config, dict):
        findings.append(Finding(f'{where}: adapter_config.json must hold an object, got {type(config).__name__}'))
        return None
    return config


def _check_config(config: dict, where: str, max_lora_rank: Optional[int], base_names: tuple, vllm: bool,
                  findings: list):
    rank = config.get('r')
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        findings.append(Finding(f"{where}: adapter_config.json's r must be a whole number >= 1, got {rank!r}"))
    elif max_lora_rank is not None and rank > max_lora_rank:
        findings.append(Finding(f"{where} has rank {rank}, above this engine's max_lora_rank {max_lora_rank}; "
                                f'create the engine with max_lora_rank={_vllm_rank(rank)} or more'))
    if 'lora_alpha' not in config:  # the scale of every update: peft would assume 8, vLLM refuses to guess
        findings.append(Finding(f"{where}: adapter_config.json has no lora_alpha, the scale its updates were "
                                'trained with; add it (peft saves it with every adapter)'))
    refusal = _vllm_refusal(config) if vllm else None
    if refusal:
        findings.append(Finding(f'{where}: vLLM refuses it: {refusal} Merge it into the model (swiftnb export '
                                '--merge_lora true) and load that, or use the pt backend'))
    saved = config.get('modules_to_save') or []
    saved = saved if isinstance(saved, list) else [saved]
    if saved and not (refusal and 'modules_to_save' in refusal):  # else vLLM's refusal names them
        findings.append(Finding(
            f'{where} trained whole copies of {", ".join(map(str, saved))} (modules_to_save); vLLM applies LoRA '
            'weights and at most one classification head, so its answers can differ from what was trained: merge '
            'the adapter into the model (swiftnb export --merge_lora true) and load that, or use the pt backend',
            blocking=False))
    base = config.get('base_model_name_or_path')
    if base and base_names and _last(base) not in {_last(name) for name in base_names if name}:
        findings.append(Finding(
            f'{where} was trained on {base}, and this engine runs {base_names[0]}; its weights fit, but its answers '
            f'are only what was trained on its own base: load {base} (get_vllm_engine(model_id_or_path=...)), or go on '
            'if the two are the same model under another name', blocking=False))


def _vllm_refusal(config: dict) -> Optional[str]:
    """What this vLLM's own check of a peft config (PEFTHelper.validate_legal, run when it loads an adapter) says
    it does not support: DoRA, LoRA bias, PiSSA-style inits, aLoRA, layer replication and, in newer versions,
    modules_to_save. The rank is left to _check_config, which names the max_lora_rank that fixes it."""
    from types import SimpleNamespace
    from vllm.lora.peft_helper import PEFTHelper
    try:
        helper = PEFTHelper.from_dict(config)
    except Exception:  # a config too broken for it: _check_config says what is wrong
        return None
    try:
        helper.validate_legal(SimpleNamespace(max_lora_rank=float('inf')))
    except Exception as error:  # ValueError for what it refuses; a field of the wrong type fails it otherwise
        return str(error).strip()
    return None


def _last(name: str) -> str:
    """'Qwen/Qwen2-7B-Instruct' and '/models/qwen2-7b-instruct/' -> 'qwen2-7b-instruct'."""
    return str(name).rstrip('/').rsplit('/', 1)[-1].lower()


def _vllm_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM takes that holds `rank` (vLLM allows a fixed set of values)."""
    try:
        import typing
        from vllm.config.lora import MaxLoRARanks
        return min((r for r in typing.get_args(MaxLoRARanks) if r >= rank), default=rank)
    except ImportError:
        return rank


def _adapter_shapes(path: Path, where: str, findings: list) -> dict[str, tuple]:
    weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        findings.append(Finding(f'{where} has no weights ({" or ".join(WEIGHT_FILES)} not found)'))
        return {}
    try:
        shapes = _shapes(weights)
    except Exception as error:  # safetensors/torch say why a file is not a checkpoint
        findings.append(Finding(f'{where}: {weights.name} is not readable ({str(error).splitlines()[0]})'))
        return {}
    if not any('lora_A' in name for name in shapes):
        findings.append(Finding(f'{where}: {weights.name} holds no LoRA tensors (no lora_A weights)'))
        return {}
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


def _check_targets(shapes: dict, base: dict, base_dir, vllm_embeddings: Optional[set], where: str, findings: list):
    """The modules the adapter's weights adapt: each must be in the model, and on vLLM a linear layer or one of
    the embeddings its model class takes LoRA on (vLLM's loader refuses the rest: "expected target modules in ...")."""
    targets = sorted({name.removeprefix('base_model.model.').split('.lora_')[0] for name in shapes if '.lora_' in name})
    # a module's tensors: 'weight', or a quantized folder's 'weight_packed', 'weight_scale', ...
    modules = {name.rsplit('.', 1)[0] for name in base}
    missing = [m for m in targets if base and m not in modules and not m.endswith('lm_head')]  # lm_head: tied
    if missing:
        named = ', '.join(missing[:3]) + ' ...' * (len(missing) > 3)
        findings.append(Finding(f'{where} adapts {named}, which the model at {base_dir} does not have: it was trained '
                                'for another model'))
    if vllm_embeddings is not None:
        embeddings = sorted({m.rsplit('.', 1)[-1] for m in targets if m.rsplit('.', 1)[-1] in EMBEDDINGS}
                            - set(vllm_embeddings))
        if embeddings:
            findings.append(Finding(
                f'{where} adapts {", ".join(embeddings)}, and vLLM takes LoRA on this model\'s linear layers only: '
                'merge it into the model (swiftnb export --merge_lora true) and load that, or use the pt backend'))


def _check_dtypes(weights: Path, base_files: list, where: str, findings: list):
    """An adapter stored in one half precision for a model stored in the other: the engine casts the adapter to
    the model's, and float16 and bfloat16 round differently, so its answers can differ from what was trained
    (a float32 adapter is what bf16/fp16 mixed-precision training saves, and is no sign of that)."""
    mine, theirs = _half_dtype([weights]), _half_dtype(base_files)
    if mine and theirs and mine != theirs:
        findings.append(Finding(f'{where} is stored in {mine}, and the model in {theirs}: the engine casts the adapter '
                                f'to {theirs}, so its answers can differ slightly from what was trained; create the '
                                f"engine with dtype='{mine}' if it was trained in {mine}", blocking=False))


def _half_dtype(files: list) -> Optional[str]:
    """'float16' or 'bfloat16' where every tensor in the safetensors files is stored so; else None."""
    names = {'F16': 'float16', 'BF16': 'bfloat16'}
    stored = set()
    for file in files:
        if file.suffix != '.safetensors' or not file.is_file():
            return None
        from safetensors import safe_open
        with safe_open(str(file), 'pt') as f:
            stored |= {f.get_slice(name).get_dtype() for name in f.keys()}
    return names.get(stored.pop()) if len(stored) == 1 else None


def _tensor_problem(name: str, shape: tuple, rank: Optional[int], ranks_vary: bool, base: dict,
                    where: str) -> Optional[str]:
    part = 'lora_A' if '.lora_A.' in name else 'lora_B' if '.lora_B.' in name else None
    if part is None:
        return None  # modules_to_save and the like: vLLM reads them by their own rules
    if len(shape) != 2:
        return f'{where}: {name} has shape {list(shape)}; a LoRA weight is a matrix'
    if rank is not None and not ranks_vary and shape[0 if part == 'lora_A' else 1] != rank:
        return f'{where}: {name} has shape {list(shape)}, which does not match r={rank} in adapter_config.json'
    # peft saves 'base_model.model.<base weight name without .weight>.lora_A.weight'
    module = name.removeprefix('base_model.model.').split(f'.{part}.')[0]
    base_shape = base.get(f'{module}.weight')
    if base_shape is None or len(base_shape) != 2:
        return None
    expected, got = (base_shape[1], shape[1]) if part == 'lora_A' else (base_shape[0], shape[0])
    if expected != got:
        return f'{where} was not trained for this model: {name} has shape {list(shape)}, {module} has shape ' \
               f'{list(base_shape)}'
    return None
