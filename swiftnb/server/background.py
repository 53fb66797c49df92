"""BackgroundServer: uvicorn serving the kernel's engine from the engine's own loop thread.

The cell that starts it returns at once and the kernel stays free. One server
per kernel: running the cell again stops the old one (freeing its port) first.
"""
import socket
import time
from typing import Optional, Union

import uvicorn

from swiftnb.engine.base import Engine
from swiftnb.model_types import get_default_template_type
from swiftnb.server.app import create_app
from swiftnb.template import Template, get_template

_live: dict = {'server': None}


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f'cannot serve on {host}:{port}: {e.strerror}; '
                               'stop what uses that port or pick another (port=0 picks a free one)') from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


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
            raise ValueError(f'lora module {item!r} must look like name=/path/to/adapter')
        pairs[name] = path
    return pairs


def default_template(engine: Engine) -> Template:
    return get_template(get_default_template_type(engine.model_type), engine.hf_tokenizer)


class BackgroundServer:
    def __init__(self, engine: Engine, template: Optional[Template] = None, host: str = '127.0.0.1',
                 port: int = 8000, api_key: Optional[str] = None, served_model_name: Optional[str] = None,
                 lora_modules=None):
        self.engine = engine
        for name, path in parse_lora_modules(lora_modules).items():
            if name not in engine.adapters:
                engine.add_lora(name, path)
        self._socket = _bind(host, port)
        self.host, self.port = host, self._socket.getsockname()[1]
        app = create_app(engine, template or default_template(engine), served_model_name, api_key)
        # log_config=None: leave the kernel's logging alone; uvicorn's access lines would flood a cell.
        config = uvicorn.Config(app, log_config=None, log_level='warning', access_log=False, lifespan='off',
                                timeout_graceful_shutdown=5)
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
        return not self._task.done()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and free the port; calling it again does nothing."""
        if self.running:
            self._server.should_exit = True
            try:
                self._task.result(timeout)
            except Exception:
                pass
        self._socket.close()

    def __repr__(self):
        return f'<BackgroundServer {self.url} ({"running" if self.running else "stopped"})>'


def serve(engine: Engine, host: str = '127.0.0.1', port: int = 8000, api_key: Optional[str] = None,
          served_model_name: Optional[str] = None, lora_modules=None,
          template: Optional[Template] = None) -> BackgroundServer:
    """Serve `engine` as an OpenAI-compatible endpoint in the background and return at once.

    Running it again replaces the kernel's previous server. `port=0` picks a free port.
    """
    if _live['server'] is not None:
        _live['server'].stop()
    _live['server'] = BackgroundServer(engine, template, host, port, api_key, served_model_name, lora_modules)
    return _live['server']
