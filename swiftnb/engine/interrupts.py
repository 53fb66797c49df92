"""A kernel interrupt stops the cell, not the engine.

Jupyter interrupts a kernel by sending SIGINT to its whole process group (JupyterLab's stop button, and
ipykernel's own `interrupt_mode: message` does the same), a terminal's Ctrl-C reaches the whole foreground
group, and vLLM's engine core and its workers are in that group: they treat SIGINT as "shut down"
(measured: one interrupt during a stream, then EngineDeadError on every later call). So the thread that starts
an engine's processes blocks SIGINT first; a blocked signal mask is inherited across fork and exec, so the
engine core, its tp/pp/dp workers and whatever they start never receive it, while the kernel's main thread
still does. Python's own multiprocessing resource tracker and Ray's process launcher start their children
the same way (`signal.pthread_sigmask(SIG_BLOCK, {SIGINT})` around the spawn). The processes still stop on
SIGTERM (a shutdown) and die with their parent (die_with_parent.py).

What the interrupt does reach is the cell's wait on the engine loop (loop.py): that call cancels its task, which
aborts its requests in the engine, waits until the abort has run, and raises a KeyboardInterrupt that says so
(a cell that awaits gets ipykernel's CancelledError, with the same words).
"""
import contextlib
import signal
import sys
import threading

import psutil

from swiftnb.engine.forkserver import server_pid

# How long a call waits, after an interrupt, for its task to have aborted its requests (vLLM's abort is one
# message to its engine core; the pt backend drops the rows before its next step).
ABORT_WAIT_S = 5.0


def shield_children_of_this_thread() -> None:
    """Every process started from this thread from now on (and every process those start) ignores SIGINT."""
    # multiprocessing's resource tracker starts with the first process multiprocessing spawns, and it unblocks
    # SIGINT in the starting thread afterwards (CPython's resource_tracker.py blocks, spawns, unblocks): it
    # starts first, so that vLLM's spawn finds it running and leaves this thread's mask alone.
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def stopped(what: str) -> str:
    """What an interrupted cell's KeyboardInterrupt (or an awaiting cell's CancelledError) says."""
    return f'{what} was stopped and its requests aborted; the engine is ready'


@contextlib.contextmanager
def noted():
    """Within: an interrupt sets the Event this yields instead of raising KeyboardInterrupt wherever the main thread
    happens to be (in an engine start: its progress display, which runs ipykernel's code), so the caller stops at the
    one place where it can end what it started. Outside the main thread no interrupt arrives anyway."""
    event = threading.Event()
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is None:  # not the main thread, or a handler set from C that could not be put back
        yield event
        return
    signal.signal(signal.SIGINT, lambda *_: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


def children() -> set:
    """This process's descendants now (psutil.Process objects)."""
    return set(psutil.Process().children(recursive=True))


def end_started_since(before: set, timeout: float = 2.0) -> None:
    """Stop the processes this process started since `before` was taken (an engine start that was interrupted):
    SIGTERM (vLLM's engine core then stops its workers), SIGKILL for what is left after `timeout`.
    multiprocessing's resource tracker and forkserver serve the whole process, not one engine: they stay."""
    started = [p for p in children() - before
               if p.pid != server_pid() and 'resource_tracker' not in ' '.join(_cmdline(p))]
    for process in started:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(started, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _cmdline(process) -> list:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def wake_the_kernel_on_interrupt() -> None:
    """In an ipykernel, let an interrupt wake the kernel's event loop, so that an awaiting cell stops at once.

    ipykernel (7.4) stops a cell that awaits by cancelling it from its SIGINT handler, with tornado's add_callback,
    which on the loop's own thread is a plain call_soon: nothing wakes the loop, and the cell stopped only when
    something else did (measured: `await asyncio.sleep(5)` interrupted after 1 s ended 4 s later; an awaited
    inference_vllm_async batch ran to its end). asyncio wakes its own loop for signals by having Python write each
    signal into the loop's self-pipe (`signal.set_wakeup_fd`, as loop.add_signal_handler does); this points the
    wakeup at the kernel loop's self-pipe, where no other wakeup fd is set. The loop reads the byte and finds no
    handler of its own for it (asyncio's _process_self_data), then runs the cancellation."""
    ipython = sys.modules.get('IPython')
    shell = ipython.get_ipython() if ipython is not None else None
    kernel = getattr(shell, 'kernel', None)
    loop = getattr(getattr(kernel, 'io_loop', None), 'asyncio_loop', None)
    self_pipe = getattr(loop, '_csock', None)  # asyncio's selector loops (unix): the write end of their self-pipe
    if self_pipe is None or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.set_wakeup_fd(self_pipe.fileno(), warn_on_full_buffer=False)
    if previous != -1:  # someone's already: theirs stays
        signal.set_wakeup_fd(previous)
