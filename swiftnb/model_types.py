"""Model types: a short name -> where the weights live, which template, chat or plain generation."""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from swiftnb.errors import ModelNotFoundError, UsageError

ASSETS = Path(__file__).resolve().parent / 'assets'
DEMO_MODEL_DIR = ASSETS / 'tiny-chat'
DEMO_ADAPTERS = {name: ASSETS / 'adapters' / name for name in ('kakarot', 'pirate')}


@dataclass(frozen=True)
class ModelInfo:
    model_type: str
    hub_id: str
    template_type: str
    is_chat: bool = True
    tool_parser: Optional[str] = None  # vLLM's tool parser for the format its chat template asks for


MODELS = {m.model_type: m for m in [
    ModelInfo('tiny-chat', str(DEMO_MODEL_DIR), 'chatml', tool_parser='hermes'),
    ModelInfo('qwen-7b-chat', 'Qwen/Qwen-7B-Chat', 'qwen'),
    ModelInfo('qwen-7b', 'Qwen/Qwen-7B', 'default-generation', is_chat=False),
    ModelInfo('yi-6b-chat', '01-ai/Yi-6B-Chat', 'yi'),
    ModelInfo('qwen1half-7b-chat-int4', 'Qwen/Qwen1.5-7B-Chat-GPTQ-Int4', 'qwen'),
    ModelInfo('qwen2-72b-instruct', 'Qwen/Qwen2-72B-Instruct', 'qwen', tool_parser='hermes'),
    ModelInfo('llama2-7b-chat', 'meta-llama/Llama-2-7b-chat-hf', 'llama'),
    ModelInfo('llama3-8b-instruct', 'meta-llama/Meta-Llama-3-8B-Instruct', 'llama3', tool_parser='llama3_json'),
]}
DEFAULT_MODEL_TYPE = 'tiny-chat'


class ModelType:
    """The seed's constants: `ModelType.qwen_7b_chat == 'qwen-7b-chat'`."""
    tiny_chat = 'tiny-chat'
    qwen_7b_chat = 'qwen-7b-chat'
    qwen_7b = 'qwen-7b'
    yi_6b_chat = 'yi-6b-chat'
    qwen1half_7b_chat_int4 = 'qwen1half-7b-chat-int4'
    qwen2_72b_instruct = 'qwen2-72b-instruct'
    llama2_7b_chat = 'llama2-7b-chat'
    llama3_8b_instruct = 'llama3-8b-instruct'

    @classmethod
    def get_model_name_list(cls) -> list[str]:
        return list(MODELS)


def get_model_info(model_type: str) -> ModelInfo:
    try:
        return MODELS[model_type]
    except KeyError:
        raise UsageError(f'unknown model_type {model_type!r}; known types: {", ".join(MODELS)}. '
                         'For another model pass model_id_or_path=') from None


def get_default_template_type(model_type: str) -> str:
    """The template a model type uses; for a model outside the table, 'auto' (its tokenizer's template)."""
    return MODELS[model_type].template_type if model_type in MODELS else 'auto'


def default_tool_parser(model_type: str) -> Optional[str]:
    """vLLM's tool parser for a model type's tool-call format; None where the table does not know it."""
    return MODELS[model_type].tool_parser if model_type in MODELS else None


def resolve_model(model_type: Optional[str] = None, model_id_or_path: Optional[str] = None) -> tuple[str, str]:
    """(model_type, local directory) for a model type and/or a local path or hub id."""
    if model_type is None and model_id_or_path is None:
        model_type = DEFAULT_MODEL_TYPE
    source = model_id_or_path or get_model_info(model_type).hub_id
    if model_type is None:
        model_type = _type_of(source)
    elif model_type not in MODELS:
        get_model_info(model_type)  # raises with the list of known types
    return model_type, _local_dir(source)


def _type_of(source: str) -> str:
    for info in MODELS.values():
        if source == info.hub_id:
            return info.model_type
    return Path(source).name if os.path.isdir(source) else source.rstrip('/').split('/')[-1]


def _local_dir(source: str) -> str:
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.is_absolute() or source.startswith('.'):
        raise ModelNotFoundError(f'model directory {source!r} does not exist')
    return _download(source)


def _download(hub_id: str) -> str:
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(hub_id, local_files_only=True)
    except Exception:
        pass
    try:
        return snapshot_download(hub_id, etag_timeout=5)
    except Exception as e:
        raise ModelNotFoundError(
            f'model {hub_id!r} is not on disk and could not be downloaded from the hub '
            f'({type(e).__name__}). Download it elsewhere and pass model_id_or_path="/path/to/model", '
            'or leave the model out to use the embedded demo model tiny-chat.') from None


def resolve_checkpoint(ckpt_dir: str) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(model_type, model_id_or_path, lora_path) for a training checkpoint.

    A LoRA checkpoint (adapter_config.json) loads its base model, named in the adapter's config, and
    the adapter; a merged or full checkpoint loads as a model directory.
    """
    import json
    path = Path(ckpt_dir).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(f'checkpoint directory {ckpt_dir!r} does not exist')
    adapter_config = path / 'adapter_config.json'
    if not adapter_config.is_file():
        return None, str(path.resolve()), None
    base = json.loads(adapter_config.read_text()).get('base_model_name_or_path')
    if not base:
        raise ModelNotFoundError(f'the LoRA checkpoint {ckpt_dir!r} does not name its base model '
                                 '(base_model_name_or_path in adapter_config.json)')
    if base in MODELS:
        return base, None, str(path.resolve())
    return None, base, str(path.resolve())


def run_checkpoints(run_dir: str) -> dict[str, str]:
    """{'checkpoint-100': its path, ...}: the LoRA checkpoints of a fine-tuning run, in step order.

    ms-swift writes them in output/<model_type>/v<N>-<time>/checkpoint-<step> (the run folder is v<N>-<time>),
    transformers' Trainer (and peft with it) in <output_dir>/checkpoint-<step>; a folder counts when it holds
    adapter_config.json (ms-swift's checkpoint-<step>-merged folders are whole models, not adapters).
    """
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise UsageError(f'no run folder at {str(run_dir)!r}')
    found = [p for p in path.glob('checkpoint-*') if (p / 'adapter_config.json').is_file()]
    if not found:
        raise UsageError(f'no LoRA checkpoints in {str(run_dir)!r} (checkpoint-*/adapter_config.json); pass the '
                         "run's folder, e.g. output/qwen-7b-chat/v0-20240101-120000")

    def step(folder: Path) -> tuple:
        number = folder.name.removeprefix('checkpoint-')
        return (0, int(number), '') if number.isdigit() else (1, 0, number)
    return {p.name: str(p.resolve()) for p in sorted(found, key=step)}


def quantization_config(model_dir) -> dict:
    """A model folder's quantization_config (config.json); {} for a full model."""
    import json
    config = Path(model_dir) / 'config.json'
    return (json.loads(config.read_text()).get('quantization_config') or {}) if config.is_file() else {}


TRAINING_RECORDS = ('args.json', 'sft_args.json')  # ms-swift's record of a training run: 3.x/4.x's, 2.x's


def training_args(checkpoint) -> dict:
    """ms-swift's record of a training run, beside the checkpoint or in the run folder above it; {} where there is
    none."""
    import json
    for folder in (Path(checkpoint), Path(checkpoint).parent):
        for name in TRAINING_RECORDS:
            if (folder / name).is_file():
                return json.loads((folder / name).read_text())
    return {}


def copy_training_records(checkpoint, folder) -> None:
    """The training's records beside `checkpoint` into a folder made from it (merged, quantized): what
    --load_dataset_config and a later export read."""
    import shutil
    for name in TRAINING_RECORDS:
        if (Path(checkpoint) / name).is_file():
            shutil.copy(Path(checkpoint) / name, folder)
