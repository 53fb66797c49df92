"""vLLM's logs: kept out of cells by default (test_readme runs the quickstart piped and finds none of them), let
through on request (show_vllm_logs(True); a start with them shown: test_settings_doors' `swiftnb infer`)."""
import os

import swiftnb


def test_show_vllm_logs_hands_vllms_processes_their_own_logging_and_back(monkeypatch):
    for name in ('VLLM_LOGGING_CONFIG_PATH', 'VLLM_LOGGING_LEVEL'):
        monkeypatch.delenv(name, raising=False)
    swiftnb.show_vllm_logs(False)
    try:
        quiet = os.environ['VLLM_LOGGING_CONFIG_PATH']  # every vLLM process reads it: its lines go to the log file
        assert str(swiftnb.logs.log_file()) in open(quiet).read()
        swiftnb.show_vllm_logs(True)
        assert 'VLLM_LOGGING_CONFIG_PATH' not in os.environ and os.environ['VLLM_LOGGING_LEVEL'] == 'INFO'
    finally:
        swiftnb.show_vllm_logs(False)  # as the rest of the session runs


def test_transformers_long_sequence_warning_is_dropped(capfd):
    """swiftnb's PromptTooLongError names a prompt that is too long; transformers' red warning before it goes."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(swiftnb.DEMO_MODEL_DIR)  # a fresh one: it warns once per tokenizer
    assert len(tokenizer('Hello! ' * 5000)['input_ids']) > tokenizer.model_max_length
    assert 'Token indices sequence length' not in capfd.readouterr().err
