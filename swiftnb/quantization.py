"""Quantized checkpoints that vLLM serves: `swiftnb export --quant_bits 4|8` and `swiftnb.quantize(...)`.

    path = quantize('output/v0-.../checkpoint-100', bits=4)     # a LoRA checkpoint: merged, then quantized
    engine = get_vllm_engine(model_id_or_path=str(path))

llm-compressor, vLLM's own quantization library, does the work (GPTQ, AWQ, SmoothQuant and FP8 recipes, written as
compressed-tensors folders that vLLM detects). It pins transformers and compressed-tensors apart from vLLM (its FAQ
keeps it in an environment of its own), so swiftnb makes that environment once, with this environment's torch and
QUANT_PINS (about a minute, shown as it goes; `make setup` makes it ahead), and runs quantize_worker.py there. The
calibration rows are rendered here, with the model's chat template; the worker's stages, its layer progress and its
root-cause error come back to the cell or the command. The result is written into a hidden folder beside the
output and renamed into place when complete: a failure leaves nothing at the output path.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Optional, Sequence, Union

from swiftnb.errors import ExportError

QUANT_PINS = ('llmcompressor==0.14.0.1',)
# bits -> {method: llm-compressor's scheme}; the first method of each is the default (ms-swift's defaults: GPTQ
# W4A16, group size 128, symmetric, which vLLM's CPU and GPU backends load; W8A8 int8 with SmoothQuant)
METHODS = {4: {'gptq': 'W4A16', 'awq': 'W4A16'}, 8: {'w8a8': 'W8A8', 'gptq': 'W8A16', 'fp8': 'FP8_DYNAMIC'}}
CALIBRATED = {'gptq', 'awq', 'w8a8'}  # fp8 (dynamic per-token activations) rounds the weights: no data needed
WORKER = Path(__file__).with_name('quantize_worker.py')
DEMO_STRIDE = 12  # the demo model's calibration rows: every 12th conversation of its corpus (39)


def quantize(model: Union[str, Path], bits: int = 4, method: Optional[str] = None,
             dataset: Union[str, Sequence[str], None] = None, n_samples: int = 256, max_length: int = 2048,
             output_dir: Optional[str] = None) -> Path:
    """Quantize a model folder, hub id or training checkpoint (a LoRA one is merged first) to `bits` with `method`
    (4: 'gptq' or 'awq'; 8: 'w8a8', 'gptq' or 'fp8'); calibrated on `dataset` (.jsonl files of the seed's rows or
    of messages), else on the checkpoint's recorded dataset, else on the demo model's own corpus. Returns the folder
    (default: beside a checkpoint, else in the current folder: NAME-METHOD-int4)."""
    from swiftnb.export import merge_lora, publish
    from swiftnb.model_types import MODELS, copy_training_records, resolve_checkpoint, resolve_model, training_args
    method = _check_method(bits, method)
    given = Path(model).expanduser()
    lora = given.is_dir() and (given / 'adapter_config.json').is_file()
    if lora:
        source, model_type = given.resolve(), resolve_checkpoint(str(given))[0]
    else:
        # a model type from swiftnb's table, a folder (its name is the type) or a hub id
        model_type, folder = (resolve_model(str(model), None) if str(model) in MODELS
                              else resolve_model(None, str(model)))
        source = Path(folder)
    model_type = training_args(source).get('model_type') or model_type  # a merged checkpoint: its training's type
    name = source.name
    # beside a checkpoint or model folder the user named (as merge writes CKPT-merged); else (a hub id, the demo
    # model inside the package) in the current folder, as ms-swift does
    parent = source.parent if given.is_dir() and not _is_package_asset(source) else Path.cwd()
    output = Path(output_dir).expanduser() if output_dir else parent / f'{name}-{method}-int{bits}'
    output = output.resolve()
    if output.exists():
        raise ExportError(f'{output} already exists; remove it or pass another --output_dir')
    if not lora:
        _check_not_quantized(source)
    texts = _calibration_texts(source, model_type, dataset, n_samples) if method in CALIBRATED else []
    python = quant_env()
    started = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{output.name}-', dir=output.parent))
    try:
        full = merge_lora(str(source), str(staging / 'merged')) if lora else source  # gone with the staging folder
        before = _size(full)
        quantized = staging / 'quantized'
        _run_worker(python, {'model': str(full), 'output': str(quantized), 'scheme': METHODS[bits][method],
                             'method': 'gptq' if method == 'w8a8' else method, 'smoothquant': method == 'w8a8',
                             'texts': texts, 'max_length': max_length}, name)
        copy_training_records(source, quantized)
        publish(quantized, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f'swiftnb: {name} quantized to {bits} bits ({method}: {METHODS[bits][method]}) in '
          f'{time.perf_counter() - started:.1f} s, {_mb(before)} -> {_mb(_size(output))}: {output}', flush=True)
    return output


def _check_method(bits: int, method: Optional[str]) -> str:
    if bits not in METHODS:
        raise ExportError(f'--quant_bits must be 4 or 8, got {bits}')
    method = (method or next(iter(METHODS[bits]))).lower()
    if method not in METHODS[bits]:
        other = next(b for b in METHODS if method in METHODS[b]) if any(method in m for m in METHODS.values()) \
            else None
        hint = f'{method} quantizes to {other} bits; ' if other else ''
        raise ExportError(f'--quant_method {method} does not take {bits} bits: {hint}for {bits} bits pick '
                          f'{" or ".join(METHODS[bits])}')
    return method


def _is_package_asset(path: Path) -> bool:
    """The demo model ships inside the package: its quantized copies go to the current folder, not there."""
    return Path(__file__).parent in path.resolve().parents


def _check_not_quantized(folder: Path) -> None:
    from swiftnb.model_types import quantization_config
    quantization = quantization_config(folder)
    if quantization:
        kind = quantization.get('quant_method', 'quantized')
        raise ExportError(f'{folder} is already quantized ({kind}); quantize the full model it was made from')


def _calibration_texts(folder: Path, model_type: Optional[str], dataset, n_samples: int) -> list[str]:
    """Up to n_samples conversations, each rendered as the model reads it (its template) with the answer after."""
    from transformers import AutoTokenizer
    from swiftnb.model_types import get_default_template_type
    from swiftnb.template import get_template
    files = [dataset] if isinstance(dataset, (str, Path)) else list(dataset or []) or _recorded_dataset(folder)
    rows = [row for file in files for row in _rows(file)] if files else _demo_rows(model_type, folder)
    if not rows:
        raise ExportError(f'--dataset {", ".join(map(str, files))}: no rows; give a .jsonl of {{"query", "response"}} '
                          'or {"messages"} rows')
    tokenizer_dir = folder if (folder / 'tokenizer_config.json').is_file() else None
    if tokenizer_dir is None:  # a LoRA checkpoint without its tokenizer: its base model's
        from swiftnb.model_types import resolve_checkpoint, resolve_model
        tokenizer_dir = resolve_model(*resolve_checkpoint(str(folder))[:2])[1]
    template = get_template(get_default_template_type(model_type or ''), AutoTokenizer.from_pretrained(tokenizer_dir))
    texts = []
    for messages in rows[:n_samples]:
        answer = messages[-1]['content'] if messages[-1]['role'] == 'assistant' else ''
        texts.append(template.render(messages[:-1] if answer else messages) + answer)
    return texts


def _rows(file) -> list[list[dict]]:
    """A .jsonl file's rows (dataset_infer's reader and rules) as messages, the answer last."""
    from swiftnb.dataset_infer import read_rows
    from swiftnb.template import to_messages
    return [to_messages(row['query'], row['history'], row['system']) +
            ([{'role': 'assistant', 'content': row['label']}] if row['label'] else [])
            for row in read_rows(str(Path(file).expanduser()))]


def _recorded_dataset(folder: Path) -> list[str]:
    """The local dataset files the training recorded."""
    from swiftnb.model_types import training_args
    args = training_args(folder)
    return [f for key in ('dataset', 'val_dataset') for f in _as_list(args.get(key)) if Path(f).is_file()]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value] if value else []


def _demo_rows(model_type: Optional[str], folder: Path) -> list[list[dict]]:
    """The demo corpus, for the demo model and what was made from it (a merged adapter: its word tokenizer)."""
    from swiftnb.model_types import DEFAULT_MODEL_TYPE, DEMO_MODEL_DIR
    if model_type != DEFAULT_MODEL_TYPE and _vocabulary(folder) != _vocabulary(DEMO_MODEL_DIR):
        raise ExportError('quantizing needs calibration rows like the ones the model will see: give --dataset '
                          'FILE.jsonl (the seed\'s {"query", "response"} rows, or {"messages"})')
    from swiftnb.assets.corpus import base_conversations
    from swiftnb.template import to_messages
    rows = []
    for conversation in base_conversations()[::DEMO_STRIDE]:  # a sample of every kind, quantized in seconds
        *history, (query, response) = conversation
        rows.append(to_messages(query, history) + [{'role': 'assistant', 'content': response}])
    return rows


def _vocabulary(folder: Path) -> Optional[dict]:
    tokenizer = folder / 'tokenizer.json'
    return json.loads(tokenizer.read_text()).get('model', {}).get('vocab') if tokenizer.is_file() else None


def quant_env() -> Path:
    """The python of llm-compressor's environment, made on first use: $SWIFTNB_QUANT_ENV, else a folder under
    ~/.cache/swiftnb named by the pins and this environment's torch."""
    pins = (f'torch=={version("torch")}', *QUANT_PINS)
    tag = hashlib.sha256(' '.join(pins).encode()).hexdigest()[:10]
    env = Path(os.environ.get('SWIFTNB_QUANT_ENV') or Path.home() / '.cache' / 'swiftnb' / f'quantize-{tag}')
    python = env / 'bin' / 'python'
    if (env / '.ready').is_file():
        return python
    print(f"swiftnb: making llm-compressor's environment in {env} (once, about a minute): {' '.join(pins)}",
          file=sys.stderr, flush=True)
    shutil.rmtree(env, ignore_errors=True)  # what a killed attempt left
    try:
        _show([sys.executable, '-m', 'venv', str(env)])
        _show([str(python), '-m', 'pip', 'install', '--disable-pip-version-check', *pins])
    except BaseException:
        shutil.rmtree(env, ignore_errors=True)
        raise
    (env / '.ready').write_text(' '.join(pins))
    return python


def _show(command: list) -> None:
    """Run a set-up step, its progress lines shown (in a cell too, where a child's own output goes nowhere)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in process.stdout:
        tail = (tail + [line.rstrip()])[-20:]
        if line.startswith(('Collecting', 'Installing', 'Successfully')):
            print(f'swiftnb:   {line.rstrip()}', file=sys.stderr, flush=True)
    if process.wait():
        raise ExportError(f"making llm-compressor's environment failed ({' '.join(command[:4])}): "
                          f"{next((l for l in reversed(tail) if 'ERROR' in l), tail[-1] if tail else '')}")


def _run_worker(python: Path, request: dict, name: str) -> None:
    """quantize_worker.py in llm-compressor's environment: its stages as lines, its layers as a progress bar, its
    root cause as the error."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / 'request.json'
        path.write_text(json.dumps(request))
        log = Path(folder) / 'worker.log'
        process = subprocess.Popen([str(python), str(WORKER), str(path)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        bar = {}
        reader = threading.Thread(target=_follow_layers, args=(process.stderr, log, bar, name), daemon=True)
        reader.start()
        error = None
        try:
            for line in process.stdout:
                message = json.loads(line) if line.startswith('{') else {}
                if 'stage' in message:
                    print(f'swiftnb: {name}: {message["stage"]}', file=sys.stderr, flush=True)
                error = message.get('error', error)
            code = process.wait()
        except BaseException:  # an interrupt: the worker goes too, and the staging folder with it
            process.kill()
            process.wait()
            raise
        finally:
            reader.join(10)
            if bar.get('bar') is not None:
                bar['bar'].close()
        if code != 0:
            killed = f'its process was killed ({signal.Signals(-code).name})' if code < 0 else None
            cause = error or killed or _last_line(log) or f'its process ended with {code}'
            raise ExportError(f'llm-compressor could not quantize {name}: {cause}{_fix(cause, request["output"])}')


def _fix(cause: str, output: str) -> str:
    """What to do, for the causes that have one answer."""
    if 'No space left on device' in cause:
        return f'; free space in {Path(output).parent.parent} or pass an --output_dir on another disk'
    if 'SIGKILL' in cause:
        return '; the system kills a process that runs out of memory so: close other programs and quantize again'
    return ''


_LAYER = re.compile(r'\((\d+)/(\d+)\): Propagating')


def _follow_layers(stream, log: Path, bar: dict, name: str) -> None:
    """llm-compressor's log into `log`; its per-layer passes ('(i/N): Propagating', once per recipe step that
    calibrates) as a tqdm bar each."""
    from tqdm.auto import tqdm
    with open(log, 'w') as out:
        for chunk in iter(lambda: stream.read(4096), ''):
            out.write(chunk)
            for done, total in _LAYER.findall(chunk):
                done, total = int(done), int(total)
                if bar.get('bar') is None or done < bar['bar'].n:  # a step's first layer: a new pass
                    if bar.get('bar') is not None:
                        bar['bar'].close()
                    bar['passes'] = bar.get('passes', 0) + 1
                    bar['bar'] = tqdm(total=total, desc=f'{name}: pass {bar["passes"]}', unit='layer')
                if done > bar['bar'].n:
                    bar['bar'].update(done - bar['bar'].n)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return lines[-1].strip() if lines else ''


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob('*') if f.is_file())


def _mb(size: int) -> str:
    return f'{size / 2**20:.1f} MB'


if __name__ == '__main__':  # `python -m swiftnb.quantization`: make llm-compressor's environment now (make setup)
    print(quant_env())
