"""README's quickstart cell runs as written and prints what the README says it prints."""
import re
import subprocess
import sys
from pathlib import Path

from conftest import user_env

README = Path(__file__).resolve().parents[1] / 'README.md'


def quickstart():
    section = README.read_text().split('## Quickstart', 1)[1].split('\n## ', 1)[0]
    code, shown = re.search(r'```python\n(.*?)```\s*```\n(.*?)```', section, re.S).groups()
    return code, shown


# What a start and a stop say where output is piped (progress.py): a plain line a stage, nothing of vLLM's log.
PROGRESS = re.compile(r'vLLM engine for tiny-chat: (\S.* \(\d+ s\)|(ready|shut down) in \d+\.\d s( \(.+\))?)')


def test_quickstart_cell_prints_what_the_readme_shows_and_its_start_says_its_stages(tmp_path):
    """As written, piped: the README's output on stdout; on stderr the engine's stages, one plain line each (a
    container's log or CI sees a start progress), and none of vLLM's own log lines (they go to its log file)."""
    code, shown = quickstart()
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=user_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == shown
    lines = done.stderr.splitlines()
    assert all(PROGRESS.fullmatch(line) for line in lines), done.stderr
    # each stage as it is reached (while the start points fd 2 at vLLM's log), then the final line
    stages = [re.fullmatch(r'.*?: (.*) \(\d+ s\)', line) for line in lines]
    stages = [stage[1] if stage else line for stage, line in zip(stages, lines)]
    assert stages[:3] == ['spawning the engine process', 'starting the engine process', 'loading weights'], lines
    assert 'compiling (torch.compile) and warming up' in stages, lines  # as a user's start: vLLM compiles
    assert 'ready in' in stages[stages.index('finishing') + 1], lines
