"""BackgroundServer: uvicorn serving the kernel's engine from the engine's own loop thread.

The cell that starts it returns at once and the kernel stays free. The app is vLLM's own OpenAI
server for a vLLM engine (vllm_app.py) and swiftnb's for a pt engine (pt_app.py). One server per
kernel: running the cell again stops the old one (freeing its port) first; `live_server()` is it.
"""
import socket
import time
from typing import Optional, Union

import uvicorn

from swiftnb.engine.base import Engine
from swiftnb.errors import PortError, UsageError
from swiftnb.server.auth import ApiKeyMiddleware
from swiftnb.server.guard import RequestGuard, default_max_request_bytes
from swiftnb.server.options import ServerOptions

_live: dict = {'server': None}


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise PortError(f'cannot serve on {host}:{port}: {e.strerror}; stop what uses that port or pick another '
                        '(port=0 picks a free one)') from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def check_port(host: str, port: int) -> None:
    """PortError now if the server could not listen there (before an engine loads for a minute to find out)."""
    _bind(host, port).close()


def parse_lora_modules(lora_modules: Union[None, dict, list, tuple]) -> dict:
    """{'name': path} from a dict or from the CLI's ['name=path', ...]."""
    if not lora_modules:
        return {}
    if isinstance(lora_modules, dict):
        return dict(lora_modules)
    pairs = {}
    for item in lora_modules:
        name, sep, path = item.partition('=')
        if not sep or not name or not path:
            raise UsageError(f'lora module {item!r} must look like name=/path/to/adapter')
        pairs[name] = path
    return pairs


async def _build_app(engine: Engine, options: ServerOptions, served_model_name: str):
    if engine.backend == 'vllm':
        from swiftnb.server.vllm_app import build_vllm_app
        return await build_vllm_app(engine, options, served_model_name)
    from swiftnb.server.pt_app import create_pt_app
    return create_pt_app(engine, options, served_model_name)


class BackgroundServer:
    def __init__(self, engine: Engine, lora_modules=None, **options):
        """`options`: ServerOptions' fields (host, port, api_key, served_model_name, tool_call_parser, lora_dirs,
        allowed_origins, show_model_paths, max_request_bytes); `lora_modules`: adapters to serve, {name: path} or
        ['name=path']. Chat requests are rendered with `engine.template` as it is when the server starts."""
        self.engine = engine
        self.options = options = ServerOptions(**options)
        self.cut_off = 0  # requests that stop() ended before they finished
        for name, path in parse_lora_modules(lora_modules).items():
            if name not in engine.adapters:
                engine.add_lora(name, path)
        self.served_model_name = options.served_model_name or engine.model_type
        app = engine.loop.run(_build_app(engine, options, self.served_model_name))
        self._guard = app = RequestGuard(app, engine, options.max_request_bytes
                                         or default_max_request_bytes(engine.max_model_len), self.served_model_name)
        if options.api_key:
            app = ApiKeyMiddleware(app, options.api_key, options.allowed_origins)
        self._socket = _bind(options.host, options.port)
        self.host, self.port = options.host, self._socket.getsockname()[1]
        # log_config=None: leave the kernel's logging alone; uvicorn's access lines would flood a cell.
        config = uvicorn.Config(app, log_config=None, log_level='warning', access_log=False, lifespan='off',
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._task = engine.loop.submit(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not self._task.done():
            time.sleep(0.01)
        if self._task.done():
            self._socket.close()
            self._task.result()  # raises why it did not start
            raise RuntimeError('the server stopped as it started')

    @property
    def url(self) -> str:
        """The OpenAI base URL, e.g. http://127.0.0.1:8000/v1."""
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'http://{host}:{self.port}/v1'

    @property
    def running(self) -> bool:
        return not self._task.done() and self.engine.loop.running  # a shut-down engine's loop took it down

    def stop(self, grace: float = 3.0) -> None:
        """Stop taking requests, give the running ones `grace` seconds, end the rest (a stream with an error
        event and [DONE]; `cut_off` says how many), free the port. Calling it again does nothing."""
        if self.running:
            try:
                self.cut_off = self.engine.loop.run(self._guard.drain(grace))
            finally:
                self._server.should_exit = True
                try:
                    self._task.result(5)
                except Exception:
                    pass
        self._socket.close()

    def __repr__(self):
        return f'<BackgroundServer {self.url} ({"running" if self.running else "stopped"})>'


def serve(engine: Engine, lora_modules=None, **options) -> BackgroundServer:
    """Serve `engine` as an OpenAI-compatible endpoint in the background and return at once.

    `options` are ServerOptions' fields (server/options.py): host='127.0.0.1', port=8000 (0 picks a free one),
    api_key, served_model_name, tool_call_parser, lora_dirs, allowed_origins, show_model_paths, max_request_bytes.
    Running it again replaces the kernel's previous server.
    """
    stop_live_server()
    _live['server'] = BackgroundServer(engine, lora_modules, **options)
    return _live['server']


def live_server() -> Optional[BackgroundServer]:
    """The kernel's server, if one is running."""
    server = _live['server']
    return server if server is not None and server.running else None


def stop_live_server() -> bool:
    """Stop the kernel's server; whether one was running."""
    server, _live['server'] = _live['server'], None
    if server is None or not server.running:
        return False
    server.stop()
    return True
