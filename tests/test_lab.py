"""`make lab` as whoever runs it (CI runs as root, where Jupyter refuses to start without --allow-root), with no
browser installed for it: the server starts and answers /api."""
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from browser import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_make_lab_starts_jupyterlab():
    port = free_port()
    lab = subprocess.Popen(['make', '-C', str(ROOT), 'lab', f'LAB_ARGS=--no-browser --port={port} '
                            '--ServerApp.ip=127.0.0.1 --IdentityProvider.token='],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, answer = time.time() + 300, None
        while time.time() < deadline and lab.poll() is None:
            try:
                answer = httpx.get(f'http://127.0.0.1:{port}/api', timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(1)
        assert answer is not None and answer.status_code == 200, lab.stdout.read() if lab.poll() is not None else ''
        assert 'version' in answer.json()
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(30)
