"""Keep vLLM's log noise out of cell output, unless asked for.

vLLM logs from the kernel process and from its engine-core child process; the
child (and C++ code in it) writes straight to file descriptors 1 and 2, which
ipykernel forwards into the cell. So while quiet (the default) swiftnb sets
vLLM's log level to ERROR and points the descriptors that a new engine's child
inherits at a log file, which `log_file()` names. `show_vllm_logs(True)` turns
it all back on for engines created afterwards.
"""
import contextlib
import logging
import os
import tempfile
from pathlib import Path

_state = {'show': os.environ.get('SWIFTNB_VLLM_LOGS', '0') == '1'}


def show_vllm_logs(show: bool = True) -> None:
    """Let vLLM's logs through (True) or keep them in log_file() (False)."""
    _state['show'] = show
    prepare_vllm_env()


def log_file() -> Path:
    return Path(tempfile.gettempdir()) / f'swiftnb-vllm-{os.getpid()}.log'


def prepare_vllm_env() -> None:
    """Environment that vLLM reads at import and its child processes inherit."""
    os.environ['VLLM_LOGGING_LEVEL'] = 'INFO' if _state['show'] else 'ERROR'
    # Also before vLLM configures its logging: some modules log while vllm is still importing.
    logging.getLogger('vllm').setLevel(logging.INFO if _state['show'] else logging.ERROR)
    os.environ.setdefault('VLLM_NO_USAGE_STATS', '1')  # no network here, and none wanted
    # vLLM's CPU backend reserves this many GiB for the KV cache; its default (4) is a lot for a notebook.
    os.environ.setdefault('VLLM_CPU_KVCACHE_SPACE', '2')


@contextlib.contextmanager
def quiet_fds():
    """While quiet, send fds 1 and 2 (and so every child started meanwhile) to log_file()."""
    if _state['show']:
        yield
        return
    saved = [os.dup(1), os.dup(2)]
    with open(log_file(), 'ab') as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@contextlib.contextmanager
def quiet_loading():
    """While quiet, no 'Loading weights' progress bar from transformers (the pt backend's model load)."""
    from transformers.utils import logging as hf_logging
    was_enabled = hf_logging.is_progress_bar_enabled()
    if _state['show'] or not was_enabled:
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
