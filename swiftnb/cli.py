"""The `swiftnb` command: the seed's `swift deploy ...` lines with `swiftnb` in place of `swift`.

    swiftnb deploy [--model_type T | --model_id_or_path P | --ckpt_dir C] [--lora_modules name=path ...]

(`infer`, `app-ui` and `export` are not built yet: they say so.)
"""
import argparse
import signal
import sys
import threading
from typing import Optional

from swiftnb.model_types import resolve_checkpoint

DEFAULT_LORA_NAME = 'default-lora'  # the seed's name for the adapter given by --ckpt_dir


def _bool(text: str) -> bool:
    if text.lower() in ('true', '1', 'yes'):
        return True
    if text.lower() in ('false', '0', 'no'):
        return False
    raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


def _model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('model (default: the embedded tiny-chat)')
    group.add_argument('--model_type')
    group.add_argument('--model_id_or_path')
    group.add_argument('--ckpt_dir', help='a LoRA checkpoint (its base model is loaded) or a merged/full one')
    group.add_argument('--infer_backend', choices=['vllm', 'pt'], default='vllm')
    group.add_argument('--vllm_enable_lora', type=_bool, default=False)
    group.add_argument('--max_lora_rank', type=int, default=16)
    group.add_argument('--tensor_parallel_size', type=int, default=1)
    group.add_argument('--max_model_len', type=int)
    group.add_argument('--gpu_memory_utilization', type=float, default=0.9)


def build_engine(args, extra_loras: Optional[dict] = None):
    """The engine the model flags describe, and {adapter name: path} to serve with it."""
    from swiftnb import get_pt_engine, get_vllm_engine
    model_type, model_path, loras = args.model_type, args.model_id_or_path, dict(extra_loras or {})
    if args.ckpt_dir:
        ckpt_type, ckpt_path, lora_path = resolve_checkpoint(args.ckpt_dir)
        model_type, model_path = model_type or ckpt_type, model_path or ckpt_path
        if lora_path:
            loras = {DEFAULT_LORA_NAME: lora_path, **loras}
    common = dict(model_id_or_path=model_path, enable_lora=args.vllm_enable_lora or bool(loras),
                  max_model_len=args.max_model_len)
    if args.infer_backend == 'pt':
        return get_pt_engine(model_type, **common), loras
    engine = get_vllm_engine(model_type, **common, max_loras=max(1, len(loras)), max_lora_rank=args.max_lora_rank,
                             tensor_parallel_size=args.tensor_parallel_size,
                             gpu_memory_utilization=args.gpu_memory_utilization)
    return engine, loras


def deploy(args) -> int:
    from swiftnb.server import BackgroundServer, background
    lora_modules = background.parse_lora_modules(args.lora_modules)
    engine, loras = build_engine(args, lora_modules)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = BackgroundServer(engine, host=args.host, port=args.port, api_key=args.api_key,
                              served_model_name=args.served_model_name, lora_modules=loras)
    names = ', '.join([args.served_model_name or engine.model_type, *engine.adapters])
    print(f'swiftnb: serving {names} at {server.url} (Ctrl-C stops)', flush=True)
    stop.wait()
    server.stop()
    engine.shutdown()
    print('swiftnb: stopped', flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='swiftnb', description='vLLM inference and deployment, notebook-first')
    commands = parser.add_subparsers(dest='command', required=True)
    dep = commands.add_parser('deploy', help='serve a model as an OpenAI-compatible endpoint')
    _model_args(dep)
    dep.add_argument('--lora_modules', nargs='*', default=[], metavar='NAME=PATH')
    dep.add_argument('--host', default='127.0.0.1')
    dep.add_argument('--port', type=int, default=8000)
    dep.add_argument('--api_key')
    dep.add_argument('--served_model_name')
    for name in ('infer', 'app-ui', 'export'):
        commands.add_parser(name, help='not built yet', add_help=False)
    args, unknown = parser.parse_known_args(argv)
    if args.command != 'deploy':
        print(f'swiftnb: `{args.command}` is not built yet; `swiftnb deploy` is', file=sys.stderr)
        return 2
    if unknown:
        parser.error(f'unrecognized arguments: {" ".join(unknown)}')
    return deploy(args)


if __name__ == '__main__':
    sys.exit(main())
