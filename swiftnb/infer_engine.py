"""ms-swift 3.x/4.x's inference API over swiftnb's engines, unchanged but for the import.

    from swiftnb import InferRequest, RequestConfig, TransformersEngine, VllmEngine   # was: from swift import ...
    engine = VllmEngine(DEMO_MODEL_DIR, max_model_len=2048)     # or TransformersEngine(model, max_batch_size=2)
    resp_list = engine.infer([InferRequest(messages=[{'role': 'user', 'content': 'who are you?'}])],
                             RequestConfig(max_tokens=64, temperature=0))
    print(resp_list[0].choices[0].message.content)

Names and shapes follow ms-swift 4.6's swift.infer_engine (3.x's `swift.llm` names too: PtEngine is
TransformersEngine). Each engine class is a front on the kernel's one engine: `VllmEngine(model, **kwargs)` is
`get_vllm_engine(model_id_or_path=model, **kwargs)`, so a re-run cell gets the live engine back at once, and
`engine.engine` is the swiftnb engine every other door takes (widgets, serve, check_parity). Answers are the
`openai` package's ChatCompletion objects, built by swiftnb.chat as the pt server builds its own; with
`stream=True` each request gets an iterator of ChatCompletionChunk objects. RequestConfig is swiftnb's
GenerationConfig (the one declaration of settings) with ms-swift's names, so its settings reach vLLM as the same
settings given at any other door. An interrupt stops the call and leaves the engine serving, as everywhere.

Left out, each refused with its reason where given: images/audios/videos (swiftnb's templates are text-only),
num_beams > 1 and length_penalty (beam search), best_of, min_p, return_details, embedding/reranker task types,
a model object for TransformersEngine (give its folder) and a hub revision or token.
"""
import asyncio
import dataclasses
import time
from pathlib import Path
from typing import AsyncIterator, Iterator, Optional, Union

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from swiftnb.chat import ChatRun
from swiftnb.engine import Engine, LoRARequest, get_pt_engine, get_vllm_engine
from swiftnb.engine.options import VllmOptions
from swiftnb.errors import AdapterError, SettingsError, UsageError
from swiftnb.infer import settings_for
from swiftnb.model_types import MODELS, resolve_checkpoint, training_args
from swiftnb.settings import GenerationConfig, XRequestConfig
from swiftnb.template import Template, get_template


@dataclasses.dataclass
class InferRequest:
    """One conversation: OpenAI-style `messages`, and `tools` (OpenAI's, or bare function definitions)."""
    messages: list
    images: list = dataclasses.field(default_factory=list)
    audios: list = dataclasses.field(default_factory=list)
    videos: list = dataclasses.field(default_factory=list)
    tools: Optional[list] = None
    objects: dict = dataclasses.field(default_factory=dict)
    chat_template_kwargs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.messages, list):
            raise UsageError(f'InferRequest: messages must be a list of {{"role", "content"}} dicts, '
                             f'got {type(self.messages).__name__}')
        media = [name for name in ('images', 'audios', 'videos') if getattr(self, name)]
        if media or self.objects:
            raise UsageError(f'InferRequest: {", ".join(media or ["objects"])} are not supported; swiftnb serves '
                             'text models: give the text in messages')
        if self.chat_template_kwargs:
            raise UsageError('InferRequest: chat_template_kwargs are not supported; set the template with '
                             'engine.template = get_template(...)')


@dataclasses.dataclass
class AdapterRequest:
    """A LoRA adapter by name and folder; loaded on first use, then served under its name."""
    name: str
    path: str


# ms-swift's RequestConfig fields that swiftnb has no setting for: accepted at their default, refused otherwise.
_LEFT_OUT = {'num_beams': (1, 'beam search is not supported'), 'length_penalty': (1.0, 'it is for beam search'),
             'best_of': (None, 'give n instead'), 'min_p': (None, 'use top_p or top_k'),
             'return_details': (False, 'the answer has its token count in .usage')}


class RequestConfig(XRequestConfig):
    """ms-swift's RequestConfig: the generation settings (max_tokens, temperature, top_p, top_k,
    repetition_penalty, presence_penalty, frequency_penalty, stop, seed, n, logprobs, top_logprobs,
    prompt_logprobs, ...) and `stream`. None means the engine's default, as in ms-swift."""

    def __init__(self, **data):
        for name, (default, why) in _LEFT_OUT.items():
            if name in data and data.pop(name) not in (default, None):
                raise SettingsError(f'{name}: not supported by swiftnb ({why}); leave it out', name)
        regex = data.pop('structured_outputs_regex', None)
        if regex is not None:
            data['structured_outputs'] = {'regex': regex}
        super().__init__(**data)


class InferEngine:
    """ms-swift's engine calls over a swiftnb engine: `InferEngine(get_pt_engine())` or one of the classes below."""

    def __init__(self, engine: Engine, adapters: Optional[dict] = None):
        self.engine = engine
        loaded = [_take(engine, AdapterRequest(name, path)) for name, path in (adapters or {}).items()]
        self.default_adapter: Optional[LoRARequest] = loaded[0] if loaded else None  # ms-swift: the first one

    @property
    def template(self) -> Template:
        return self.engine.template

    @template.setter
    def template(self, template: Template) -> None:
        self.engine.template = template

    @property
    def processor(self):
        """The tokenizer (ms-swift's name; `tokenizer` works too)."""
        return self.engine.hf_tokenizer

    tokenizer = processor

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def infer(self, infer_requests: list, request_config: Optional[RequestConfig] = None,
              metrics: Optional[list] = None, *, use_tqdm: Optional[bool] = None,
              adapter_request: Optional[AdapterRequest] = None) -> list[Union[ChatCompletion, Iterator]]:
        """Every request at once; a ChatCompletion each, or with `stream=True` an iterator of ChatCompletionChunk
        each. `metrics`: InferStats objects, updated with each answer."""
        config = _request_config(request_config)
        runs = self.engine.loop.run(self._start_all(infer_requests, config, adapter_request))
        if config.stream:
            return [self.engine.loop.iterate(lambda run=run: _chunks(run, metrics)) for run in runs]
        if use_tqdm is None:
            use_tqdm = len(runs) > 1
        responses = self.engine.loop.run(_responses(runs, use_tqdm))
        for response in responses:
            _update(metrics, response)
        return responses

    async def infer_async(self, infer_request: InferRequest, request_config: Optional[RequestConfig] = None, *,
                          adapter_request: Optional[AdapterRequest] = None) -> Union[ChatCompletion, AsyncIterator]:
        """One request, awaited: its ChatCompletion, or with `stream=True` an async iterator of its chunks."""
        config = _request_config(request_config)
        loop = self.engine.loop
        run, = await loop.run_async(self._start_all([infer_request], config, adapter_request))
        if config.stream:
            return loop.aiterate(lambda: _chunks(run, None))
        return await loop.run_async(run.response())

    async def _start_all(self, infer_requests, config: RequestConfig, adapter_request) -> list[ChatRun]:
        """Every request checked and encoded before any runs, so a mistake costs no engine time."""
        if isinstance(infer_requests, InferRequest):
            raise UsageError('infer takes a list of InferRequest: engine.infer([request], ...)')
        lora = await _take_async(self.engine, adapter_request) if adapter_request else self.default_adapter
        await self.engine.load_lora(lora)
        settings = settings_for(self.engine, config)
        model = lora.lora_name if lora else self.engine.model_type
        runs = []
        for request in infer_requests:
            if isinstance(request, dict):
                request = InferRequest(**request)
            tools = _openai_tools(request.tools)
            runs.append(await ChatRun.start(self.engine, request.messages, settings, lora, model, tools,
                                            'auto' if tools else None, self.engine.tool_parser))
        return runs

    def __repr__(self):
        return f'<{type(self).__name__} over {self.engine!r}>'


class VllmEngine(InferEngine):
    """ms-swift's VllmEngine: `VllmEngine(model_id_or_path, max_model_len=8192, enable_lora=True, ...)`.

    Its keyword arguments are get_vllm_engine's (swiftnb.engine.options.VllmOptions: gpu_memory_utilization,
    tensor_parallel_size, max_model_len, enable_lora, max_loras, max_lora_rank, ...); any other vLLM engine
    argument ms-swift passes through (seed, quantization, enable_prefix_caching, load_format, ...) goes to vLLM
    as engine_kwargs. `adapters`: one adapter folder (or {name: folder}), used when a request names none."""

    def __init__(self, model_id_or_path: str, *, template: Optional[Template] = None, torch_dtype=None,
                 adapters=None, model_type: Optional[str] = None, template_type: Optional[str] = None,
                 use_async_engine: Optional[bool] = None, engine_kwargs: Optional[dict] = None, **kwargs):
        del use_async_engine  # swiftnb's engine is asynchronous: infer and infer_async both work either way
        _refuse(kwargs, ('hub_token', 'revision', 'task_type', 'num_labels', 'reranker_use_activation',
                         'reasoning_parser'))
        adapters = _adapters(adapters)
        options = {name: kwargs.pop(name) for name in list(kwargs) if name in _fields(VllmOptions)}
        if adapters:
            options['enable_lora'] = True
        engine_kwargs = {**(engine_kwargs or {}), **kwargs}
        if engine_kwargs:
            options['engine_kwargs'] = engine_kwargs
        engine = get_vllm_engine(model_type, torch_dtype, model_id_or_path=model_id_or_path, **options)
        _set_template(engine, template, template_type)
        super().__init__(engine, adapters)


class TransformersEngine(InferEngine):
    """ms-swift's TransformersEngine (3.x: PtEngine): `TransformersEngine(model_id_or_path, max_batch_size=2)`.

    swiftnb's pt engine batches continuously: `max_batch_size` is its max_num_seqs (0: its default). `adapters`:
    folders (or {name: folder}; `adapter_names` names them), the first used when a request names none."""

    def __init__(self, model: str, *, template: Optional[Template] = None, adapters=None,
                 adapter_names: Optional[list] = None, max_batch_size: Optional[int] = None, torch_dtype=None,
                 model_type: Optional[str] = None, template_type: Optional[str] = None,
                 model_kwargs: Optional[dict] = None, attn_impl: Optional[str] = None, **kwargs):
        if not isinstance(model, (str, Path)):
            raise UsageError('TransformersEngine takes the model folder or hub id; save a model object with '
                             'model.save_pretrained(folder) and pass the folder')
        _refuse(kwargs, ('hub_token', 'revision', 'task_type', 'device_map', 'quantization_config',
                         'reranker_use_activation', 'experts_impl'))
        options = dict(kwargs, enable_lora=kwargs.get('enable_lora', True))  # ms-swift takes adapters any time
        if max_batch_size:
            options['max_num_seqs'] = max_batch_size
        if model_kwargs or attn_impl:
            options['model_kwargs'] = {**(model_kwargs or {}), **({'attn_implementation': attn_impl}
                                                                   if attn_impl else {})}
        engine = get_pt_engine(model_type, torch_dtype, model_id_or_path=str(model), **options)
        _set_template(engine, template, template_type)
        super().__init__(engine, _adapters(adapters, adapter_names))


PtEngine = TransformersEngine  # ms-swift 3.x's name


@dataclasses.dataclass
class BaseArguments:
    """What ms-swift's examples read from a checkpoint: `args = BaseArguments.from_pretrained(ckpt)`, then
    args.model (the base model), args.template (its template type) and args.system (the training's system prompt)."""
    model: str
    template: Optional[str] = None
    system: Optional[str] = None

    @classmethod
    def from_pretrained(cls, checkpoint: str) -> 'BaseArguments':
        model_type, model, _ = resolve_checkpoint(checkpoint)
        info = MODELS.get(model_type)
        recorded = training_args(checkpoint)
        return cls(model=info.hub_id if info else model, system=recorded.get('system'),
                   template=recorded.get('template') or recorded.get('template_type') or (info and info.template_type))


class InferStats:
    """ms-swift's metric for `engine.infer(..., metrics=[InferStats()])`: compute() gives the prompt and generated
    token counts, samples and their rates since it was made (or reset)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.start, self.prompt_tokens, self.generated_tokens = time.perf_counter(), {}, {}

    def update(self, response) -> None:
        self.prompt_tokens[response.id] = response.usage.prompt_tokens
        self.generated_tokens[response.id] = response.usage.completion_tokens

    def compute(self) -> dict:
        runtime = time.perf_counter() - self.start
        samples, generated = len(self.generated_tokens), sum(self.generated_tokens.values())
        return {'num_prompt_tokens': sum(self.prompt_tokens.values()), 'num_generated_tokens': generated,
                'num_samples': samples, 'runtime': runtime, 'samples/s': samples / runtime,
                'tokens/s': generated / runtime}


async def _responses(runs: list[ChatRun], use_tqdm: bool) -> list[ChatCompletion]:
    tasks = [asyncio.ensure_future(run.response()) for run in runs]
    try:
        if use_tqdm:
            from tqdm.auto import tqdm
            for task in tqdm(asyncio.as_completed(tasks), total=len(tasks)):
                await task
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:  # an error or an interrupt: the others' engine requests are aborted too
            task.cancel()


async def _chunks(run: ChatRun, metrics: Optional[list]) -> AsyncIterator[ChatCompletionChunk]:
    """ms-swift's chunks: each with the usage so far, content never None (its examples add the deltas up)."""
    chunk = None
    async for chunk in run.chunks():
        for choice in chunk.choices:
            if choice.delta.content is None:
                choice.delta.content = ''
        chunk.usage = run.usage()
        yield chunk
    if chunk is not None:
        _update(metrics, chunk)


def _request_config(config) -> RequestConfig:
    """A RequestConfig from what a call gives: None, a dict, or settings of another door (GenerationConfig)."""
    if isinstance(config, XRequestConfig):
        return config
    if isinstance(config, GenerationConfig):
        return RequestConfig(**config.given())
    return RequestConfig(**(config or {}))


def _update(metrics: Optional[list], response) -> None:
    for metric in metrics or ():
        metric.update(response)


def _take(engine: Engine, adapter: AdapterRequest) -> LoRARequest:
    """The engine's adapter of that name (it must be the same folder), else that folder added under the name."""
    return engine.loop.run(_take_async(engine, adapter))


async def _take_async(engine: Engine, adapter: AdapterRequest) -> LoRARequest:
    if not isinstance(adapter, AdapterRequest):
        raise UsageError(f'adapter_request must be an AdapterRequest(name, path), got {adapter!r}')
    lora = engine.adapters.get(adapter.name)
    if lora is None:
        return await engine.add_lora_async(adapter.name, adapter.path)
    if Path(lora.lora_path).resolve() != Path(adapter.path).resolve():
        raise AdapterError(f'the adapter name {adapter.name!r} is taken by {lora.lora_path}; give this one another '
                           'name, or engine.engine.remove_lora(name) first')
    return lora


def _adapters(adapters, names: Optional[list] = None) -> dict:
    """{name: folder} from ms-swift's forms: a folder, a list of folders (named by `names`, else 'default',
    'default-2', ...), or a dict."""
    if adapters is None or isinstance(adapters, dict):
        return dict(adapters or {})
    folders = [adapters] if isinstance(adapters, (str, Path)) else list(adapters)
    names = list(names or ['default'] + [f'default-{i}' for i in range(2, len(folders) + 1)])
    if len(names) != len(folders):
        raise UsageError(f'{len(folders)} adapters and {len(names)} adapter_names: give a name to each')
    return {name: str(folder) for name, folder in zip(names, folders)}


def _set_template(engine: Engine, template: Optional[Template], template_type: Optional[str]) -> None:
    if template is not None and template_type is not None:
        raise UsageError('give template or template_type, not both')
    if template_type is not None:
        template = get_template(template_type, engine.hf_tokenizer)
    if template is not None:
        engine.template = template


def _refuse(kwargs: dict, names: tuple) -> None:
    kwargs.pop('use_hf', None)  # swiftnb takes hub ids from Hugging Face's hub either way
    given = [name for name in names if kwargs.pop(name, None) not in (None, False)]
    if given:
        raise UsageError(f'{", ".join(given)}: not supported by swiftnb (text generation from a local folder or a '
                         'Hugging Face id); leave it out')


def _fields(cls) -> set:
    return {f.name for f in dataclasses.fields(cls)}


def _openai_tools(tools: Optional[list]) -> Optional[list]:
    """OpenAI's tools from ms-swift's: it takes bare function definitions ({'name', 'description', 'parameters'})
    as well as {'type': 'function', 'function': {...}}."""
    if not tools:
        return None
    return [tool if isinstance(tool, dict) and 'function' in tool else {'type': 'function', 'function': tool}
            for tool in tools]


__all__ = ['AdapterRequest', 'BaseArguments', 'InferEngine', 'InferRequest', 'InferStats', 'PtEngine', 'RequestConfig',
           'TransformersEngine', 'VllmEngine']
