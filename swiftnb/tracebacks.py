"""Short tracebacks in IPython for the mistakes swiftnb names itself.

A SwiftnbError's message says what went wrong and what to change; the frames inside swiftnb and vLLM that
led to it (40 to 160 lines) only hide that line. Imported in an IPython shell, swiftnb registers a custom
exception display (IPython's `set_custom_exc`) for SwiftnbError that keeps the user's own frames (the cell,
functions they wrote) and drops the frames from swiftnb's entry point down. Other exceptions, and swiftnb's
own bugs, keep IPython's full traceback; a shell that already has a custom display keeps it.
"""
import sys
from pathlib import Path

from swiftnb.errors import SwiftnbError

PACKAGE = str(Path(__file__).resolve().parent)


def _short(shell, etype, value, tb, tb_offset=None):
    last_own = None
    step = tb
    while step is not None and not step.tb_frame.f_code.co_filename.startswith(PACKAGE):
        last_own, step = step, step.tb_next
    if last_own is not None:
        last_own.tb_next = None
    shell.showtraceback((etype, value, tb if last_own is not None else None), tb_offset=tb_offset)


def install() -> None:
    ipython = sys.modules.get('IPython')
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and not shell.custom_exceptions:
        shell.set_custom_exc((SwiftnbError,), _short)
