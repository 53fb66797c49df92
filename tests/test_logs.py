"""vLLM's logs: kept out of the output by default, let through by show_vllm_logs()."""
import subprocess
import sys

SCRIPT = """
import swiftnb
{switch}
engine = swiftnb.get_vllm_engine(max_model_len=512)
print('log file:', swiftnb.logs.log_file().exists())
"""


def run(switch: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, '-c', SCRIPT.format(switch=switch)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_quiet_by_default_and_loud_on_request():
    quiet = run('')
    assert quiet.stdout == 'log file: True\n' and quiet.stderr == ''
    loud = run('swiftnb.show_vllm_logs(True)')
    assert 'INFO' in loud.stdout + loud.stderr
