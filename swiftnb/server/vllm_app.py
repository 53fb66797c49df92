"""vLLM's own OpenAI server over the kernel's vLLM engine.

`vllm serve` builds its app from parts that take an existing engine client: `build_app` and
`init_app_state` (where they live depends on the version: engine/vllm_compat.py). Built here over
the kernel's AsyncLLM and served on the engine's loop, the app has every route and request
feature vLLM's server has (structured outputs, tool calls, token-id prompts, prompt logprobs,
/tokenize, /detokenize, /metrics, /version, the Responses API, ...) at vLLM's own speed.

What swiftnb adds to it:
- requests reach the engine through `engine.client`, which holds the CPU adapter gate;
- the adapters are the engine's: one added in a cell (`engine.add_lora`) is in /v1/models and
  answers at once, and /v1/load_lora_adapter goes through the engine's checks (adapters.py);
- each request's defaults are `engine.generation_config`'s sampling fields, read as the request
  comes (vLLM reads them once, from generation_config.json);
- the API key covers every route but /health (auth.py).
What it changes in vLLM's app is named in engine/vllm_compat.py.
"""
import json
import operator
from collections.abc import Mapping

from fastapi import FastAPI
from vllm.utils.gc_utils import freeze_gc_heap

from swiftnb.engine.vllm import VllmEngine, vllm_sampling
from swiftnb.engine.vllm_compat import (keep_serving_when_the_engine_dies, server_parts, set_sampling_defaults,
                                        set_served_adapters, wrap_model_listing)
from swiftnb.errors import UsageError
from swiftnb.server.adapters import add_adapter_routes
from swiftnb.server.openapi import declare_responses
from swiftnb.server.options import ServerOptions
from swiftnb.settings import SERVED_DEFAULTS, GenerationConfig, served_defaults


async def build_vllm_app(engine: VllmEngine, options: ServerOptions, served_model_name: str) -> FastAPI:
    make_arg_parser, build_app, init_app_state = server_parts()
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    argv = ['--model', engine.model_dir, '--served-model-name', served_model_name,
            '--allowed-origins', json.dumps(list(options.allowed_origins))]  # vLLM's CORS, off unless given
    tool_call_parser = options.tool_call_parser or engine.tool_parser
    if tool_call_parser:
        argv += ['--enable-auto-tool-choice', '--tool-call-parser', tool_call_parser]
    chat_template = _chat_template(engine)
    if chat_template:
        argv += ['--chat-template', chat_template]
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    tasks = await engine.llm.get_supported_tasks()
    app = build_app(args, tasks, engine.llm.model_config)
    await init_app_state(engine.client, app.state, args, tasks)
    keep_serving_when_the_engine_dies(app)
    set_served_adapters(app, EngineAdapters(engine))
    if not options.show_model_paths:
        wrap_model_listing(app, _names_only)
    set_sampling_defaults(app, EngineDefaults(engine))
    add_adapter_routes(app, engine, options)
    declare_responses(app)
    # What `vllm serve`'s lifespan does as the server starts (ours runs without it, lifespan='off'): the app's
    # objects (routes, schemas, serving classes; 44,000 with the tiny model) join the heap the engine froze at
    # start, so the collector's full passes while serving skip them (16 ms a pass on 2 CPU cores). A replaced
    # server's app, frozen too, is collected when the engine closes (VllmEngine._close unfreezes).
    freeze_gc_heap()
    return app


def _chat_template(engine: VllmEngine):
    """engine.template for vLLM's server, where it is not just the tokenizer's own; None for a model with no chat
    template that swiftnb knows (vLLM's server then serves its completions and refuses chat as it would)."""
    try:
        return engine.template.as_chat_template()
    except UsageError:
        return None


def _names_only(show_available_models):
    """/v1/models with each card's `root` (vLLM puts the model's or adapter's path there) set to its name."""
    async def show():
        listing = await show_available_models()
        for card in listing.data:
            card.root = card.id
        return listing
    return show


class EngineAdapters(Mapping):
    """The engine's adapters as vLLM's server looks them up ({name: vLLM LoRARequest}), always current."""

    def __init__(self, engine: VllmEngine):
        self.engine = engine

    def __getitem__(self, name):
        return self.engine.vllm_lora(self.engine.adapters[name])

    def __contains__(self, name):  # asked of every request; Mapping's would raise and catch a KeyError
        return name in self.engine.adapters

    def __iter__(self):
        return iter(list(self.engine.adapters))

    def __len__(self):
        return len(self.engine.adapters)


_served_fields = operator.attrgetter(*SERVED_DEFAULTS)


class EngineDefaults(Mapping):
    """`engine.generation_config`'s sampling fields under vLLM's names, read at each request. vLLM's serving layer
    looks up a dozen names a request, so the dict is built again only when those fields change (built at every
    lookup it cost 0.23 ms of the server's loop a request: TTFT with 256 requests arriving at once)."""

    def __init__(self, engine: VllmEngine):
        self.engine = engine
        self._fields, self._defaults = None, {}

    def _current(self) -> dict:
        config = self.engine.generation_config
        fields = _served_fields(config)
        if fields != self._fields:
            self._fields, self._defaults = fields, vllm_defaults(served_defaults(config))
        return self._defaults

    def get(self, name, default=None):  # Mapping's would raise and catch a KeyError for each name not set
        return self._current().get(name, default)

    def __getitem__(self, name):
        return self._current()[name]

    def __iter__(self):
        return iter(self._current())

    def __len__(self):
        return len(self._current())


def vllm_defaults(config: GenerationConfig) -> dict:
    """The dict vLLM's serving classes keep as `default_sampling_params`: the served fields (SERVED_DEFAULTS; do_sample
    is in the temperature) as each request's SamplingParams has them."""
    sampling = vllm_sampling(config)
    defaults = {name: sampling[name] for name in SERVED_DEFAULTS if name in sampling}
    if config.max_tokens is not None:
        defaults['max_tokens'] = config.max_tokens
    return defaults
