"""What `make setup` must leave: vLLM, and transformers' model modules importable on this torch."""
import importlib
import importlib.util

import torch


def test_transformers_model_modules_import():
    importlib.import_module('transformers.models.qwen2.modeling_qwen2')
    import vllm  # noqa: F401


def test_no_cuda_builds_of_torchvision_or_torchaudio_on_cpu_torch():
    if not torch.cuda.is_available():
        assert importlib.util.find_spec('torchvision') is None
        assert importlib.util.find_spec('torchaudio') is None


def test_swiftnb_import_does_not_import_vllm_or_ipywidgets():
    import subprocess
    import sys
    code = 'import sys, swiftnb; print("vllm" in sys.modules, "ipywidgets" in sys.modules)'
    assert subprocess.check_output([sys.executable, '-c', code], text=True) == 'False False\n'
