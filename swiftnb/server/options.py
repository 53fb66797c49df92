"""ServerOptions: what a server is started with besides its engine, declared once.

`serve(engine, **options)`, `BackgroundServer` and `swiftnb deploy`'s flags (`add_flags`) all come from
these fields; the defaults are the notebook's (loopback, no key, adapters from any path).
"""
import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional

from swiftnb.errors import AdapterError, UsageError


@dataclass(frozen=True)
class ServerOptions:
    host: str = field(default='127.0.0.1', metadata={'help': 'address to bind (loopback by default)'})
    port: int = field(default=8000, metadata={'help': 'port (0 picks a free one)'})
    api_key: Optional[str] = field(default=None, metadata={
        'help': 'every route but /health needs Authorization: Bearer KEY'})
    served_model_name: Optional[str] = field(default=None, metadata={
        'help': "the base model's name in requests (default: the model type)"})
    tool_call_parser: Optional[str] = field(default=None, metadata={
        'help': "vLLM's name for the model's tool-call format, e.g. hermes"})
    lora_dirs: Optional[tuple[str, ...]] = field(default=None, metadata={
        'help': '/v1/load_lora_adapter takes adapters under these directories only (default for serve(): any; '
                'for swiftnb deploy: the directories of the adapters it starts with)'})
    allowed_origins: tuple[str, ...] = field(default=(), metadata={
        'help': 'origins a browser page may call the server from (CORS, as vLLM\'s --allowed-origins; '
                'default: none)'})
    show_model_paths: bool = field(default=False, metadata={
        'help': "/v1/models shows the model's and adapters' paths (as vllm serve does); default: names only"})
    max_request_bytes: Optional[int] = field(default=None, metadata={
        'help': 'larger request bodies get 413 before they are read (default: 64 bytes per token of the '
                'context, 8 MiB at least)'})

    def __post_init__(self):
        if self.api_key is not None and not self.api_key.strip():
            raise UsageError('api_key is empty: pass a key, or None for a server without one')
        if self.lora_dirs is not None:
            object.__setattr__(self, 'lora_dirs', tuple(os.path.realpath(d) for d in self.lora_dirs))
        object.__setattr__(self, 'allowed_origins', tuple(self.allowed_origins))

    def check_lora_path(self, path: str) -> None:
        """Refuse an adapter path outside `lora_dirs` before anything looks at it (a caller learns nothing of
        what exists elsewhere on the machine)."""
        if self.lora_dirs is None:
            return
        real = os.path.realpath(path)
        if not any(os.path.commonpath([real, allowed]) == allowed for allowed in self.lora_dirs):
            raise AdapterError(f'lora_path {path!r} is outside the directories this server loads adapters from '
                               f'({", ".join(self.lora_dirs) or "none"}); start it with --lora_dirs DIR to '
                               'allow another')


def add_flags(parser: argparse.ArgumentParser) -> None:
    """`--name` flags for the fields (the CLI's `swiftnb deploy`)."""
    group = parser.add_argument_group('server')
    for option in dataclasses.fields(ServerOptions):
        kind, flag = option.type, f'--{option.name}'
        if 'tuple' in str(kind):
            group.add_argument(flag, nargs='*', default=None, help=option.metadata['help'])
        elif kind is bool:
            group.add_argument(flag, action='store_true', help=option.metadata['help'])
        else:
            parse = int if 'int' in str(kind) else str
            group.add_argument(flag, type=parse, default=option.default, help=option.metadata['help'])


def from_flags(args: argparse.Namespace, **overrides) -> ServerOptions:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServerOptions)}
    given = {name: value for name, value in given.items() if value is not None}
    return ServerOptions(**{**given, **overrides})
