"""`swiftnb app-ui`: the ChatWidget as a web page, no notebook in sight, served by Voila.

The model loads once, in this process, behind a swiftnb server on loopback. Voila
runs a one-cell notebook for each browser tab, whose ChatWidget talks to that server
through the client layer (the widget's URL mode). So a tab opens in a second, every
tab shares the one engine (and batches with the others), and the model never loads
in a tab's kernel.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

import nbformat

APP_NAME = 'swiftnb-chat'


def chat_notebook(url: str, model: Optional[str], system: Optional[str], settings: dict,
                  title: Optional[str] = None) -> nbformat.NotebookNode:
    """The notebook Voila shows: a ChatWidget on `url`, with the command line's settings; its heading names `title`
    (what the command serves: the checkpoint, the model), else the model the chat opens on."""
    arguments = ''.join(f', {name}={value!r}' for name, value in
                        dict(model=model, system=system, **settings).items() if value is not None)
    code = f'from swiftnb.widgets import ChatWidget\nChatWidget({url!r}{arguments})'
    heading = nbformat.v4.new_markdown_cell(f'## swiftnb chat: {title or model or "the base model"}')
    notebook = nbformat.v4.new_notebook(cells=[heading, nbformat.v4.new_code_cell(code)])
    notebook.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    return notebook


TEMPLATE_ROOT = Path(__file__).with_name('app_ui_template')  # holds voila/templates/swiftnb-app


def voila_command(notebook: Path, host: str, port: int) -> list[str]:
    return [sys.executable, '-m', 'voila', str(notebook), '--no-browser', f'--port={port}', f'--Voila.ip={host}',
            '--theme=light', '--show_tracebacks=False', '--template=swiftnb-app']


def voila_env() -> dict:
    """The environment Voila runs in: its template search path holds swiftnb's template (Voila's lab template less
    its CDN links) ahead of the user's."""
    paths = [str(TEMPLATE_ROOT), *filter(None, os.environ.get('JUPYTER_PATH', '').split(os.pathsep))]
    return {**os.environ, 'JUPYTER_PATH': os.pathsep.join(paths)}


def serve_app(url: str, model: Optional[str], system: Optional[str], settings: dict, host: str, port: int,
              stop: threading.Event, title: Optional[str] = None) -> int:
    """Run Voila on the chat notebook until `stop` is set (0) or Voila fails (1, its log on stderr)."""
    with tempfile.TemporaryDirectory(prefix='swiftnb-app-ui-') as folder:
        path = Path(folder) / f'{APP_NAME}.ipynb'
        nbformat.write(chat_notebook(url, model, system, settings, title), path)
        log_path = Path(folder) / 'voila.log'  # Voila's log lines would bury the one line that matters
        with open(log_path, 'w') as log:
            voila = subprocess.Popen(voila_command(path, host, port), stdout=log, stderr=subprocess.STDOUT,
                                     env=voila_env())
            try:
                page = f'http://{host}:{port}/'
                while not _listening(host, port):
                    if voila.poll() is not None or stop.wait(0.5):
                        break
                else:
                    print(f'swiftnb: app-ui at {page} (Ctrl-C stops)', flush=True)
                while voila.poll() is None and not stop.wait(0.5):
                    pass
                if voila.poll() is not None and not stop.is_set():
                    print(f'swiftnb: Voila stopped; its log:\n{log_path.read_text()[-3000:]}', file=sys.stderr)
                    return 1
                return 0
            finally:
                voila.terminate()
                try:
                    voila.wait(30)
                except subprocess.TimeoutExpired:
                    voila.kill()


def _listening(host: str, port: int) -> bool:
    """Whether Voila accepts connections (a GET of its page would start a kernel for nobody)."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False
