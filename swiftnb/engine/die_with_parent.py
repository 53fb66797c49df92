"""vLLM's engine processes die with the process that started them.

After `kill -9` of a kernel or of `swiftnb deploy`, vLLM's EngineCore kept running (75 s and more, holding
2.3 GB on CPU; on CUDA it would hold the GPU), and with it its workers and multiprocessing's resource
tracker; `vllm serve` leaves the same orphans. vLLM runs every `vllm.general_plugins` entry point in each of
its processes (EngineCore.__init__, each worker); swiftnb's (pyproject.toml) asks Linux to SIGKILL such a
process when its parent dies (PR_SET_PDEATHSIG). The workers already leave when their EngineCore does (vLLM's
death pipe), and the resource tracker when the last of them has.
"""
import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


_armed_in = None  # the process that has asked (a forked child inherits the value and asks again)


def die_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if _armed_in == os.getpid() or parent is None or not sys.platform.startswith('linux'):
        return  # asked already (forkserver.py), the user's own process (vLLM loads plugins there too), or no prctl
    die_with(parent.pid)


def die_with(parent_pid: int) -> None:
    """SIGKILL this process when its parent, `parent_pid`, dies (at once if it has died already)."""
    global _armed_in
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _armed_in = os.getpid()
    if os.getppid() != parent_pid:  # the parent died before the line above
        os.kill(os.getpid(), signal.SIGKILL)
