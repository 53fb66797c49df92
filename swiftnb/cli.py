"""The `swiftnb` command: the seed's `swift infer / deploy / export` lines with `swiftnb` for `swift`.

    swiftnb infer  [model flags] [generation flags] [--val_dataset FILE.jsonl]
    swiftnb deploy [model flags] [--lora_modules name=path ...] [--port P]
    swiftnb export --ckpt_dir LORA_DIR --merge_lora true [--output_dir DIR]
    swiftnb app-ui [model flags] [generation flags] [--host H] [--port P]

Model flags: --model_type T | --model_id_or_path P | --ckpt_dir C, --infer_backend vllm|pt, ...
ms-swift 4.x's spellings mean the same: --model P, --adapters C [NAME=PATH ...], --infer_backend transformers,
--vllm_max_model_len N (every engine flag also as --vllm_NAME), --max_new_tokens N.
"""
import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from swiftnb import settings
from swiftnb.engine.options import BACKENDS, VllmOptions, add_flags, add_model_flags, parse_bool
from swiftnb.errors import SwiftnbError, UsageError
from swiftnb.model_types import resolve_checkpoint
from swiftnb.server import options as server_options

DEFAULT_LORA_NAME = 'default-lora'  # the seed's name for the adapter given by --ckpt_dir
# get_vllm_engine's options that are flags (their help, defaults and types: engine/options.py)
ENGINE_FLAGS = ('enable_lora', 'max_lora_rank', 'tensor_parallel_size', 'pipeline_parallel_size', 'data_parallel_size',
                'ray_address', 'max_model_len', 'gpu_memory_utilization', 'max_num_seqs', 'enforce_eager')


class _DefaultsShown(argparse.HelpFormatter):
    """--help shows each flag's default, where it has one and its help does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ''
        if action.default in (None, False, [], argparse.SUPPRESS) or 'default' in text or not text:
            return text
        return f'{text} (default: %(default)s)'


def _model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('model (default: the embedded tiny-chat)')
    add_model_flags(group)
    group.add_argument('--ckpt_dir', help='a LoRA checkpoint (its base model is loaded) or a merged/full one')
    group.add_argument('--adapters', nargs='+', default=[], metavar='CKPT|NAME=PATH',
                       help="ms-swift 4.x's: a LoRA checkpoint, as --ckpt_dir, and adapters served under their names")
    add_flags(group, VllmOptions, ENGINE_FLAGS)


def _read_adapters(args) -> None:
    """ms-swift 4.x's --adapters in the seed's terms: its one unnamed checkpoint is --ckpt_dir, its NAME=PATH entries
    become args.adapters, {name: path}, served by name."""
    unnamed = [entry for entry in args.adapters if '=' not in entry]
    if len(unnamed) + bool(args.ckpt_dir) > 1:
        raise UsageError('give one checkpoint (--ckpt_dir C or --adapters C); name the others: --adapters NAME=PATH')
    args.ckpt_dir = args.ckpt_dir or (unnamed[0] if unnamed else None)
    args.adapters = dict(entry.split('=', 1) for entry in args.adapters if '=' in entry)


def build_engine(args, extra_loras: Optional[dict] = None):
    """The engine the model flags describe, and {adapter name: path} to serve with it."""
    from swiftnb import get_pt_engine, get_vllm_engine
    model_type, model_path, loras = args.model_type, args.model_id_or_path, {**args.adapters, **(extra_loras or {})}
    if args.ckpt_dir:
        ckpt_type, ckpt_path, lora_path = resolve_checkpoint(args.ckpt_dir)
        model_type, model_path = model_type or ckpt_type, model_path or ckpt_path
        if lora_path:
            loras = {DEFAULT_LORA_NAME: lora_path, **loras}
    common = dict(model_id_or_path=model_path, enable_lora=args.enable_lora or bool(loras),
                  max_model_len=args.max_model_len)
    # at once: importing vLLM and checking its arguments take seconds before the engine's own progress line
    print(f'swiftnb: loading {model_path or model_type or "tiny-chat"} on {args.infer_backend}', file=sys.stderr,
          flush=True)
    if BACKENDS[args.infer_backend] == 'pt':
        return get_pt_engine(model_type, **common), loras
    served_name = getattr(args, 'served_model_name', None)  # deploy's: vLLM's metrics label the model by it
    flags = {name: getattr(args, name) for name in ENGINE_FLAGS if name not in common}
    engine = get_vllm_engine(model_type, **common, **flags, max_loras=max(1, len(loras)),
                             defaults_for='server' if args.command == 'deploy' else 'batch',
                             engine_kwargs={'served_model_name': served_name} if served_name else {})
    return engine, loras


def _generation_args(parser: argparse.ArgumentParser) -> None:
    settings.add_flags(parser)
    parser.add_argument('--system', help='system prompt')


def infer(args) -> int:
    from swiftnb import dataset_infer
    from swiftnb.terminal_chat import TerminalChat
    dataset = args.val_dataset or (_dataset_from_config(args.ckpt_dir) if args.load_dataset_config else None)
    rows = dataset_infer.read_rows(dataset, args.show_dataset_sample) if dataset else None  # checked first
    engine, loras = build_engine(args)
    try:
        template = engine.template
        config = settings.from_flags(args).apply(engine.generation_config)
        name = next(iter(loras), None)  # the checkpoint's adapter, else the first of --adapters
        lora = engine.add_lora(name, loras[name]) if name else None
        if rows is None:
            TerminalChat(engine, template, config, lora, args.system, args.stream).run()
            return 0
        if args.system:
            rows = [{**row, 'system': row['system'] or args.system} for row in rows]
        path = Path(args.result_path) if args.result_path else dataset_infer.default_result_path(args.ckpt_dir)
        dataset_infer.run(engine, template, rows, config, lora, path)
        print(f'swiftnb: {len(rows)} results written to {path}', flush=True)
        return 0
    finally:
        engine.shutdown()


def _dataset_from_config(ckpt_dir: Optional[str]) -> str:
    """The validation set the training run recorded (ms-swift's --load_dataset_config)."""
    from swiftnb.model_types import training_args
    val = training_args(ckpt_dir).get('val_dataset') if ckpt_dir else None
    val = val[0] if isinstance(val, list) and val else val
    if not val:
        raise UsageError(f'--load_dataset_config found no args.json or sft_args.json with a val_dataset for '
                         f'--ckpt_dir {ckpt_dir!r}; pass --val_dataset FILE.jsonl')
    return val


def export(args) -> int:
    """--merge_lora true: CKPT-merged; --quant_bits 4|8: a quantized folder (of the merge, when both are given)."""
    from swiftnb.export import merge_lora
    from swiftnb.quantization import quantize
    source = args.ckpt_dir or args.model
    if not source or (args.ckpt_dir and args.model):
        raise UsageError('export takes one source: --ckpt_dir CKPT (or --adapters CKPT), or --model MODEL')
    if not (args.merge_lora or args.quant_bits):
        raise UsageError('export merges (--merge_lora true) or quantizes (--quant_bits 4|8), or both')
    if args.merge_lora:
        source = merge_lora(source, None if args.quant_bits else args.output_dir)
        print(f'swiftnb: merged checkpoint written to {source}', flush=True)
    if args.quant_bits:
        quantize(source, args.quant_bits, args.quant_method, args.dataset, args.quant_n_samples, args.max_length,
                 args.output_dir)
    return 0


def _stop_on_signals() -> threading.Event:
    """Set by Ctrl-C or SIGTERM, so that the command can stop its server and engine in order."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def deploy(args) -> int:
    from swiftnb.server import BackgroundServer, background
    lora_modules = background.parse_lora_modules(args.lora_modules)
    background.check_port(args.host, args.port)
    engine, loras = build_engine(args, lora_modules)
    # /v1/load_lora_adapter takes adapters beside the ones it starts with (a run's other checkpoints), unless told
    lora_dirs = args.lora_dirs if args.lora_dirs is not None else sorted({str(Path(p).parent) for p in loras.values()})
    stop = _stop_on_signals()
    options = server_options.from_flags(args, lora_dirs=lora_dirs)
    server = BackgroundServer(engine, lora_modules=loras, **dataclasses.asdict(options))
    names = ', '.join(engine.model_names(server.served_model_name))
    print(f'swiftnb: serving {names} at {server.url} (Ctrl-C stops)', flush=True)
    stop.wait()
    print('swiftnb: stopping', flush=True)
    began = time.perf_counter()
    server.stop()
    served = time.perf_counter()
    engine.shutdown()
    ended = time.perf_counter()
    # where a stop's time went, for a supervisor's log (`docker stop` allows 10 s before it kills)
    print(f'swiftnb: stopped{f" ({server.cut_off} requests cut off)" if server.cut_off else ""} in '
          f'{ended - began:.1f} s: the server {served - began:.1f} s, the engine {ended - served:.1f} s', flush=True)
    # Everything is stopped and freed; what is left is the interpreter's native teardown of torch's and vLLM's
    # libraries (2.4 s measured), which would push a SIGTERM'd deploy past the 10 s a supervisor allows.
    sys.stderr.flush()
    os._exit(0)


def app_ui(args) -> int:
    """The engine behind a loopback server, and Voila serving a ChatWidget on it (see app_ui.py)."""
    try:
        import voila  # noqa: F401
        import swiftnb.widgets  # noqa: F401
    except ImportError as error:
        raise UsageError(f'app-ui needs the notebook extras ({error.name} is missing): '
                         "pip install 'swiftnb[notebook]'") from None
    from swiftnb.app_ui import serve_app
    from swiftnb.server import BackgroundServer
    engine, loras = build_engine(args)
    stop = _stop_on_signals()
    server = BackgroundServer(engine, host='127.0.0.1', port=0, lora_modules=loras)
    model = DEFAULT_LORA_NAME if DEFAULT_LORA_NAME in loras else None  # a LoRA --ckpt_dir opens on its adapter
    # the page names what it serves: the adapter, else the checkpoint's folder or the model
    title = model or (Path(args.ckpt_dir).name if args.ckpt_dir else engine.model_type)
    try:
        return serve_app(server.url, model, args.system, settings.from_flags(args).given(), args.host, args.port,
                         stop, title)
    finally:
        server.stop()
        engine.shutdown()
        print('swiftnb: stopped', flush=True)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='swiftnb', description='vLLM inference and deployment, notebook-first')
    commands = parser.add_subparsers(dest='command', required=True)

    help_format = dict(formatter_class=_DefaultsShown)
    inf = commands.add_parser('infer', help='chat in the terminal, or answer a dataset into a jsonl', **help_format)
    _model_args(inf)
    _generation_args(inf)
    inf.add_argument('--stream', type=parse_bool, default=True, help='show the answer as it is written (true/false)')
    inf.add_argument('--val_dataset',
                     help='a jsonl of {"query", "history"?, "system"?, "response"?} or {"messages"} rows')
    inf.add_argument('--load_dataset_config', type=parse_bool, default=False,
                     help="take --val_dataset from the checkpoint's args.json or sft_args.json")
    inf.add_argument('--show_dataset_sample', type=int, default=-1, help='rows to run (-1: all)')
    inf.add_argument('--result_path', help='default: CKPT_DIR/infer_result/TIME.jsonl')
    inf.set_defaults(run=infer)

    dep = commands.add_parser('deploy', help='serve a model as an OpenAI-compatible endpoint', **help_format)
    _model_args(dep)
    dep.add_argument('--lora_modules', nargs='*', default=[], metavar='NAME=PATH',
                     help='adapters to serve beside the model, each under its name')
    server_options.add_flags(dep)
    dep.set_defaults(run=deploy)

    exp = commands.add_parser('export', help='merge a LoRA checkpoint into a full one, quantize a model',
                              **help_format)
    exp.add_argument('--ckpt_dir', '--adapters', help='a training checkpoint: LoRA (merged) or full')
    exp.add_argument('--model', help='a model folder, type or hub id, to quantize')
    exp.add_argument('--merge_lora', type=parse_bool, default=False, help='merge the adapter into the base: true')
    exp.add_argument('--output_dir', help='default: CKPT_DIR-merged, or NAME-METHOD-intBITS beside the checkpoint')
    exp.add_argument('--quant_bits', type=int, default=0, help='quantize to 4 or 8 bits (llm-compressor)')
    exp.add_argument('--quant_method', help='4 bits: gptq (default) or awq; 8 bits: w8a8 (default), gptq or fp8')
    exp.add_argument('--dataset', nargs='+', metavar='FILE.jsonl',
                     help="calibration rows (the seed's or messages); default: the training's, or the demo's corpus")
    exp.add_argument('--quant_n_samples', type=int, default=256, help='calibration rows used')
    exp.add_argument('--max_length', type=int, default=2048, help='tokens of a calibration row used')
    exp.set_defaults(run=export)

    app = commands.add_parser('app-ui', help='the chat in a browser tab (a ChatWidget served by Voila)', **help_format)
    _model_args(app)
    _generation_args(app)
    app.add_argument('--host', default='127.0.0.1', help='address the page is served on')
    app.add_argument('--port', type=int, default=7860, help='port the page is served on')
    app.set_defaults(run=app_ui)
    return parser


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if isinstance(getattr(args, 'adapters', None), list):
            _read_adapters(args)
        return args.run(args)
    except SwiftnbError as error:  # the user's mistake: one line
        print(f'swiftnb: {error}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while the engine starts or stops: no traceback, and a second one ends it
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the engine's processes die with this one
        print('\nswiftnb: interrupted', file=sys.stderr, flush=True)
        return 130


if __name__ == '__main__':
    sys.exit(main())
