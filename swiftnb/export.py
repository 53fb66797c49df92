"""`swiftnb export --merge_lora true`: a LoRA checkpoint merged into a full model directory.

peft does the merge (merge_and_unload); this module finds the base model the
adapter names, checks everything before it writes, and writes the result
(weights, config, tokenizer, generation config) into a temporary folder that
is renamed into place only when complete, so a failure leaves nothing behind.
"""
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from swiftnb.errors import ExportError
from swiftnb.model_types import copy_training_records, resolve_checkpoint, resolve_model


def merged_dir_for(ckpt_dir: str) -> Path:
    """Where the seed puts a merged checkpoint: beside it, with '-merged' added."""
    path = Path(ckpt_dir).expanduser().resolve()
    return path.with_name(path.name + '-merged')


def merge_lora(ckpt_dir: str, output_dir: Optional[str] = None, base_dir: Optional[str] = None) -> Path:
    """Merge the LoRA adapter at `ckpt_dir` into its base model (the one its config names, or the model folder
    `base_dir`); the path of the full checkpoint."""
    model_type, base_path, lora_path = resolve_checkpoint(ckpt_dir)
    if lora_path is None:
        raise ExportError(f'{ckpt_dir!r} is not a LoRA checkpoint (no adapter_config.json); '
                          'a full checkpoint needs no merge')
    output = Path(output_dir).expanduser().resolve() if output_dir else merged_dir_for(ckpt_dir)
    if output.exists():
        raise ExportError(f'{output} already exists; remove it or pass another --output_dir')
    if base_dir is None:
        _, base_dir = resolve_model(model_type, base_path)  # a missing base fails here, before any writing
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{output.name}-', dir=output.parent))
    try:
        _write_merged(base_dir, lora_path, staging)
        publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def publish(folder: Path, output: Path) -> None:
    """A finished folder renamed into place, readable as any model folder is (by a server's user, a container, a
    colleague): mkdtemp makes it private and safetensors writes its files 0600."""
    folder.chmod(0o755)
    for file in folder.rglob('*'):
        file.chmod(0o755 if file.is_dir() else 0o644)
    folder.rename(output)


def _write_merged(base_dir: str, lora_path: str, folder: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from swiftnb import logs
    dtype = getattr(AutoConfig.from_pretrained(base_dir), 'dtype', None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with logs.quiet_loading():  # merged in float32, saved in the base's own dtype: one rounding, not two
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    try:
        merged = PeftModel.from_pretrained(base, lora_path).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise ExportError(f'could not apply the adapter at {lora_path} to {base_dir}: {error}') from error
    with logs.quiet_loading():
        merged.to(dtype).save_pretrained(folder)
    tokenizer_dir = lora_path if (Path(lora_path) / 'tokenizer_config.json').is_file() else base_dir
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    try:
        GenerationConfig.from_pretrained(base_dir).save_pretrained(folder)
    except OSError:  # the base has no generation_config.json: neither will the merge
        pass
    copy_training_records(lora_path, folder)
