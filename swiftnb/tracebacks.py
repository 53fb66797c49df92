"""Short tracebacks in IPython for the mistakes swiftnb names itself.

A SwiftnbError's message says what went wrong and what to change; the frames inside swiftnb and vLLM that
led to it (40 to 160 lines) only hide that line. Imported in an IPython shell, swiftnb registers a custom
exception display (IPython's `set_custom_exc`) for SwiftnbError that keeps the user's own frames (the cell,
functions they wrote) and drops the frames from swiftnb's entry point down. Other exceptions, and swiftnb's
own bugs, keep IPython's full traceback; a shell that already has a custom display keeps it. The same display
serves a KeyboardInterrupt that stopped a call into swiftnb (the kernel's stop button): the cell's line and
"the stream was stopped ...", not the frames of the threads it was waiting on.
"""
import asyncio
import importlib.util
import sys
from pathlib import Path

from swiftnb.errors import SwiftnbError

# swiftnb's folder, and the widgets' (a folder of their own in an editable install)
_widgets = importlib.util.find_spec('swiftnb.widgets')
PACKAGES = tuple({str(Path(__file__).resolve().parent),
                  *([str(Path(_widgets.origin).resolve().parent)] if _widgets and _widgets.origin else [])})


def _short(shell, etype, value, tb, tb_offset=None):
    last_own = None
    step = tb
    while step is not None and not step.tb_frame.f_code.co_filename.startswith(PACKAGES):
        last_own, step = step, step.tb_next
    if last_own is not None:
        last_own.tb_next = None
    shell.showtraceback((etype, value, tb if last_own is not None else None), tb_offset=tb_offset)


def install() -> None:
    ipython = sys.modules.get('IPython')
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and not shell.custom_exceptions:
        shell.set_custom_exc((SwiftnbError, KeyboardInterrupt, asyncio.CancelledError), _short)
