"""vLLM's engine processes end in a fraction of a second instead of seconds.

At exit, CPython's finalization runs the cyclic garbage collector over every object still alive: 765,000 in a
process that has only imported vLLM's CPU worker (2.4 s from its last exit handler to its end on this machine's
cores). A worker that ran a model took 4 s to end, its EngineCore waited for it and was then killed by vLLM's own
5-second limit, so every engine's shutdown took 5.5 s (each replacement of an engine in a kernel, each `swiftnb
deploy` stopped). Those passes free nothing that outlives the process: its memory, files and sockets go back with
it, and vLLM closes its shared memory and queues itself before it exits. `gc.freeze()` as the last exit handler
moves the objects out of the collector's reach, so the passes find nothing to do (measured: an engine's shutdown
2.2 s instead of 5.5). The objects it leaves alive made nanobind (triton's bindings, which xgrammar brings) print
a hundred lines of 'leaked type' at the end; what the process writes after its exit handlers goes nowhere.

Run by vLLM in each of its processes, as die_with_parent is (pyproject.toml's `vllm.general_plugins`); only in the
processes vLLM starts: the user's own process (a kernel, a script) ends as CPython ends it.
"""
import atexit
import gc
import multiprocessing
import os
import sys


def freeze_at_exit() -> None:
    if multiprocessing.parent_process() is None:
        return  # the user's own process (vLLM loads plugins there too)
    atexit.register(_end_quietly)  # registered at the process's start: exit handlers run last-in first-out


def _end_quietly() -> None:
    gc.freeze()
    sys.stderr.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
