"""What swiftnb reaches into in vLLM (engine/vllm_compat.py), on the installed vLLM: each thing is where swiftnb sets
or reads it, and one that is missing is said when the server starts, not a default that silently stops applying."""
import inspect
import sys
from types import SimpleNamespace

import pytest

from swiftnb import serve
from swiftnb.engine import vllm_compat
from swiftnb.errors import VllmMovedError
from swiftnb.server.vllm_app import EngineAdapters, EngineDefaults


def test_the_kernels_server_sets_each_thing_it_names_in_vllms_app(engine):
    server = serve(engine, port=0)
    try:
        app = server._guard.app
        servings = [s for s in vars(app.state)['_state'].values() if hasattr(s, 'default_sampling_params')]
        assert servings and all(isinstance(s.default_sampling_params, EngineDefaults) for s in servings)
        models = app.state.openai_serving_models
        assert isinstance(models.lora_requests, EngineAdapters)
        assert models.show_available_models.__qualname__.startswith('_names_only')
        assert app.state.server.should_exit is False
    finally:
        server.stop()
    # vLLM's handler of an engine error reads app.state.server, and sets its should_exit where the engine died (the
    # modules move between versions: found where the app's build imported them)
    modules = [module for name, module in list(sys.modules.items())
               if name.startswith('vllm.entrypoints') and callable(getattr(module, 'terminate_if_errored', None))]
    assert any('server.should_exit = True' in inspect.getsource(module.terminate_if_errored) for module in modules)
    assert any('app.state.server' in inspect.getsource(module) for module in modules), [m.__name__ for m in modules]
    # the engine's shutdown cancels AsyncLLM's output handler
    assert hasattr(engine.llm, 'output_handler')


def test_a_missing_internal_is_a_clear_error():
    bare = SimpleNamespace(state=SimpleNamespace())
    with pytest.raises(VllmMovedError, match=r'has no serving objects with default_sampling_params in app.state, '
                                             r'which swiftnb sets so that engine.generation_config gives each'):
        vllm_compat.set_sampling_defaults(bare, {})
    with pytest.raises(VllmMovedError, match=r'has no app.state.openai_serving_models.lora_requests'):
        vllm_compat.set_served_adapters(bare, {})
    with pytest.raises(VllmMovedError, match=r'has no app.state.openai_serving_models.show_available_models'):
        vllm_compat.wrap_model_listing(bare, lambda listing: listing)
    with pytest.raises(VllmMovedError, match=r'has no AsyncLLM.output_handler'):
        vllm_compat.stop_output_handler(SimpleNamespace())
