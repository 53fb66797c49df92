"""Keep vLLM's log noise out of cell output, unless asked for.

vLLM logs from the kernel process and from its engine processes (engine core, workers); those
processes (and C++ code in them) also write straight to file descriptors 1 and 2, which ipykernel
forwards into the cell. So while quiet (the default) swiftnb hands vLLM a logging config
(VLLM_LOGGING_CONFIG_PATH, read by every vLLM process) that writes its log lines at INFO to a log
file, which `log_file()` names, and points the descriptors that a new engine's processes inherit at
the same file. The start's stages that the progress line shows (engine/progress.py) are read from it.
`show_vllm_logs(True)` lets it all through again for engines created afterwards.
"""
import contextlib
import json
import logging
import logging.config
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
    config = os.environ.get('VLLM_LOGGING_CONFIG_PATH', '')
    ours = config.startswith(str(Path(tempfile.gettempdir()) / 'swiftnb-vllm-'))
    if _state['show']:
        os.environ['VLLM_LOGGING_LEVEL'] = 'INFO'
        if ours:
            del os.environ['VLLM_LOGGING_CONFIG_PATH']
    elif ours or not config:  # a config of the user's own stays
        path = _write_logging_config()
        os.environ['VLLM_LOGGING_CONFIG_PATH'] = str(path)
        logging.config.dictConfig(json.loads(path.read_text()))  # now: vLLM logs while it imports, before it
        # reads the config ('Triton is installed, but doesn't include CPU backend' on CPU)
    os.environ.setdefault('VLLM_NO_USAGE_STATS', '1')  # no network here, and none wanted
    # vLLM's CPU backend reserves this many GiB for the KV cache; its default (4) is a lot for a notebook.
    os.environ.setdefault('VLLM_CPU_KVCACHE_SPACE', '2')


def _write_logging_config() -> Path:
    """vLLM's loggers, in every vLLM process, to log_file() at INFO (and nowhere else)."""
    path = log_file().with_suffix('.logging.json')
    config = {'version': 1, 'disable_existing_loggers': False,
              'formatters': {'vllm': {'format': '(%(processName)s pid=%(process)d) %(levelname)s %(asctime)s '
                                                '[%(filename)s:%(lineno)d] %(message)s',
                                      'datefmt': '%m-%d %H:%M:%S'}},
              'handlers': {'vllm': {'class': 'logging.FileHandler', 'filename': str(log_file()),
                                    'formatter': 'vllm', 'level': 'INFO'}},
              'loggers': {'vllm': {'handlers': ['vllm'], 'level': 'INFO', 'propagate': False}}}
    path.write_text(json.dumps(config))
    return path


def showing() -> bool:
    return _state['show']


class _DropLongSequenceWarning(logging.Filter):
    """transformers warns in red when a text tokenises past the tokenizer's model_max_length; swiftnb's
    PromptTooLongError (or the answer's own limit) says it better, in one line, right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith('Token indices sequence length is longer')


logging.getLogger('transformers.tokenization_utils_base').addFilter(_DropLongSequenceWarning())


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
