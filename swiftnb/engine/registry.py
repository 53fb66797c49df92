"""One live engine per kernel: re-running a cell reuses it; other arguments replace it.

A notebook user re-runs the cell that loads the model all the time; loading a
second copy would double the memory (or fail on a GPU). So engines are kept
here by their arguments: the same arguments give the live engine back at once,
other arguments shut the live one down (freeing its memory and child process)
before the new one loads. At interpreter exit the live engine is shut down.
"""
import atexit
import threading
from typing import Any, Callable, Optional

from swiftnb.engine.base import Engine

_lock = threading.Lock()
_live: dict = {'key': None, 'engine': None}


def get_or_create(key: tuple, factory: Callable[[Any], Engine], check: Callable[[], Any] = lambda: None) -> Engine:
    """The live engine if it was made with `key`; else `check()` (a mistake in the new arguments raises
    here, while the live engine still works), then the live engine shut down, then `factory(checked)`."""
    with _lock:
        engine: Optional[Engine] = _live['engine']
        if engine is not None and not engine.closed and _live['key'] == key:
            return engine
        checked = check()
        _shutdown_live('get_vllm_engine or get_pt_engine was called with other arguments, which replaced it')
        engine = factory(checked)
        _live.update(key=key, engine=engine)
        # atexit runs hooks last-in first-out; vLLM's own exit hooks (registered while the engine
        # was built) would otherwise kill its engine core before we shut the engine down in order.
        atexit.unregister(_at_exit)
        atexit.register(_at_exit)
        return engine


def live_engine() -> Optional[Engine]:
    engine = _live['engine']
    return None if engine is None or engine.closed else engine


def _shutdown_live(because: str) -> None:
    engine, _live['engine'], _live['key'] = _live['engine'], None, None
    if engine is not None:
        engine.shutdown(because)


def _at_exit() -> None:
    with _lock:
        _shutdown_live('the interpreter exited')
