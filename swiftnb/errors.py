"""Every error swiftnb raises on purpose, in one tree (httpx's `_exceptions.py` is the model).

    SwiftnbError                      base: `except SwiftnbError` catches all of them
    ├── UsageError (ValueError)       the caller's mistake; the message says what to change
    │   ├── SettingsError             a generation setting out of range or of the wrong type
    │   ├── PromptTooLongError        a prompt (or prompt + answer) longer than the context
    │   ├── AdapterError              a LoRA adapter that is missing, malformed or does not fit
    │   │   └── UnknownModelError     a model or adapter name the engine does not serve
    │   ├── ModelNotFoundError        (also a FileNotFoundError) no model at that path or hub id
    │   ├── DatasetError              a bad line in a dataset file
    │   ├── ExportError               a checkpoint that cannot be merged or quantized
    │   └── PortError                 (also an OSError) the server cannot listen on that host and port
    ├── EngineStartError (RuntimeError)   vLLM's engine did not start (its root cause and log in the message)
    ├── EngineClosedError (RuntimeError)  the engine was shut down or died (the message says why)
    ├── EngineAsleepError (RuntimeError)  the engine is asleep (engine.sleep()); engine.wake_up() brings it back
    └── VllmMovedError (RuntimeError)     this vLLM lacks an internal swiftnb reaches into (engine/vllm_compat.py)

The doors show them the same way: the server maps the classes to HTTP status codes in one
table (server/errors.py), the magics, the CLI and the widgets print `str(error)`: one line.
"""


class SwiftnbError(Exception):
    """Base of the errors swiftnb raises on purpose."""


class UsageError(SwiftnbError, ValueError):
    """A mistake in what the caller passed: an argument, a flag, a request field."""


class SettingsError(UsageError):
    """A generation setting that is out of range or of the wrong type."""

    def __init__(self, message: str, param=None):
        super().__init__(message)
        self.param = param


class PromptTooLongError(UsageError):
    def __init__(self, num_tokens: int, limit: int, which: str = 'the prompt', limit_name: str = 'max_model_len'):
        super().__init__(f'{which} has {num_tokens} tokens, but {limit_name} is {limit}; '
                         f'shorten it or raise {limit_name}')
        self.num_tokens, self.limit = num_tokens, limit


class AdapterError(UsageError):
    """A LoRA adapter that is missing, malformed or does not fit the engine."""


class UnknownModelError(AdapterError):
    """A model or adapter name that the engine does not serve."""


class ModelNotFoundError(UsageError, FileNotFoundError):
    """No model at that path, and none to download."""


class DatasetError(UsageError):
    pass


class ExportError(UsageError):
    pass


class PortError(UsageError, OSError):
    """The server cannot listen on that host and port (taken, or not this machine's)."""


class EngineStartError(SwiftnbError, RuntimeError):
    pass


class EngineClosedError(SwiftnbError, RuntimeError):
    pass


class EngineAsleepError(SwiftnbError, RuntimeError):
    """The engine was put to sleep (its GPU memory freed); it answers again after `engine.wake_up()`."""


class VllmMovedError(SwiftnbError, RuntimeError):
    """The installed vLLM has no longer (or not yet) a thing swiftnb reaches into: said at once, not a default that
    silently stops applying."""
