"""README's quickstart cell runs as written and prints what the README says it prints."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / 'README.md'


def quickstart():
    section = README.read_text().split('## Quickstart', 1)[1].split('\n## ', 1)[0]
    code, shown = re.search(r'```python\n(.*?)```\s*```\n(.*?)```', section, re.S).groups()
    return code, shown


def test_quickstart_cell_prints_what_the_readme_shows(tmp_path):
    code, shown = quickstart()
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == shown
    assert done.stderr == ''
