"""A web server of the Jupyter family in a child process, and Debian's chromium driven by Playwright.

Playwright's own browser download is not possible here, so it drives /usr/bin/chromium; the flags keep
Chromium from reaching for the network, which this machine's sandbox refuses.
"""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

CHROMIUM = os.environ.get('SWIFTNB_CHROMIUM', '/usr/bin/chromium')
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-sync',
                 '--disable-background-networking', '--disable-component-update']


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def web_server(args: list[str], ready_url: str, log_path, env=None, seconds: float = 120):
    """Run `python -m ARGS` until `ready_url` answers 200; stop it (and its kernels) afterwards."""
    with open(log_path, 'w') as log:
        proc = subprocess.Popen([sys.executable, '-m', *args], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            deadline = time.time() + seconds
            while not _answers(ready_url):
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f'{args[0]} did not start; its log: {log_path}')
                time.sleep(0.5)
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 900):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': width, 'height': height})
            page.set_default_timeout(120_000)
            yield page
        finally:
            browser.close()


def text_without_deletions(page, selector: str) -> str:
    """An element's text, less the words a diff view strikes out (<del>): what its variant answered."""
    return page.eval_on_selector(selector, """el => { const copy = el.cloneNode(true);
        copy.querySelectorAll('del').forEach(d => d.remove()); return copy.textContent; }""")
