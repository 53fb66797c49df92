"""The pt engine (transformers + peft): greedy parity with vLLM, requests batched together answer as
they do alone (base and adapters mixed in one batch), the sampling settings, adapters added at
runtime, clear errors, and shutdown."""
import asyncio
import gc
import random
import shutil
import weakref

import pytest

from conftest import demo_lora, settles
from swiftnb import (AdapterError, EngineClosedError, GenerationConfig, LoRARequest, inference_stream_vllm,
                     inference_vllm)
from swiftnb import DEMO_MODEL_DIR
from swiftnb.engine.base import Choice
from swiftnb.engine.options import PtOptions
from swiftnb.engine.pt import PtEngine

SEED_REQUESTS = [{'query': 'Hello!'}, {'query': 'Where is the capital of Zhejiang?'}, {'query': 'who are you?'},
                 {'query': 'What is tasty here?', 'history': [['Where is the capital of Zhejiang?',
                                                               'The capital of Zhejiang is Hangzhou.']]},
                 {'query': "What to do if I can't fall asleep at night?"}]


def answers(engine, template, requests, **kwargs):
    return [r['response'] for r in inference_vllm(engine, template, requests, **kwargs)]


@pytest.mark.parametrize('adapter', [None, 'kakarot', 'pirate'])
def test_greedy_answers_equal_the_vllm_backend(engine, pt_engine, template, adapter):
    lora = demo_lora(adapter) if adapter else None
    assert (answers(pt_engine, template, SEED_REQUESTS, lora_request=lora)
            == answers(engine, template, SEED_REQUESTS, lora_request=lora))


PENALTIES = [{'repetition_penalty': 3.0}, {'repetition_penalty': 0.5, 'max_new_tokens': 40},
             {'frequency_penalty': 2.0, 'ignore_eos': True, 'max_new_tokens': 40},
             {'presence_penalty': 2.0, 'ignore_eos': True, 'max_new_tokens': 50}]


@pytest.mark.parametrize('penalty', PENALTIES, ids=lambda p: next(iter(p)))
def test_penalties_have_the_meaning_they_have_on_vllm(engine, pt_engine, template, penalty):
    requests = SEED_REQUESTS[1:3] + SEED_REQUESTS[4:]
    plain = {k: v for k, v in penalty.items() if k in ('ignore_eos', 'max_new_tokens')}
    on_vllm = answers(engine, template, requests, generation_config=penalty)  # float32, as the pt backend
    assert on_vllm != answers(engine, template, requests, generation_config=plain)  # the penalty bites
    assert answers(pt_engine, template, requests, generation_config=penalty) == on_vllm


async def _alone_then_mixed(engine, template, jobs, trials):
    async def one(query, lora, config, delay=0.0):
        await asyncio.sleep(delay)
        completion = Choice()
        async for delta in engine.stream(template.encode(query), config, lora):
            completion.add(delta)
        return completion.text
    alone = [await one(*job) for job in jobs]
    mixed = []
    for trial in range(trials):  # staggered arrivals: requests join the batch while others decode
        delays = random.Random(trial).choices([0.0, 0.02, 0.05, 0.1], k=len(jobs))
        mixed.append(await asyncio.gather(*(one(*job, delay) for job, delay in zip(jobs, delays))))
    return alone, mixed


def test_base_and_adapters_mixed_in_one_batch_answer_as_each_alone(pt_engine, template):
    greedy = GenerationConfig(max_new_tokens=48, temperature=0)
    sampled = GenerationConfig(max_new_tokens=48, temperature=1.5, seed=11)
    jobs = [(query, lora, config)
            for query in ['who are you?', 'Where is the capital of Zhejiang?', 'Hello!', 'What is tasty in Sichuan?']
            for lora in [None, demo_lora('kakarot'), demo_lora('pirate')] for config in [greedy, sampled]]
    alone, mixed = pt_engine.loop.run(_alone_then_mixed(pt_engine, template, jobs, trials=2))
    for run in mixed:
        assert run == alone
    assert len(set(alone)) > len(jobs) // 2  # the adapters and settings really answer differently


def test_batch_equals_stream_and_the_sampling_settings_work(pt_engine, template):
    batch = inference_vllm(pt_engine, template, SEED_REQUESTS)
    assert list(inference_stream_vllm(pt_engine, template, SEED_REQUESTS))[-1] == batch
    question = SEED_REQUESTS[1:2]
    top_k_1 = {'temperature': 1.5, 'top_k': 1, 'seed': 3}
    assert answers(pt_engine, template, question, generation_config=top_k_1) == [batch[1]['response']]
    cut = answers(pt_engine, template, question, generation_config={'stop': ['Hangzhou']})[0]
    assert cut == batch[1]['response'].split('Hangzhou')[0]
    hot = {'temperature': 1.8, 'max_new_tokens': 30}
    assert len(set(answers(pt_engine, template, question * 4, generation_config={**hot, 'seed': None}))) > 1
    assert answers(pt_engine, template, question, generation_config={**hot, 'seed': 5}) == \
        answers(pt_engine, template, question, generation_config={**hot, 'seed': 5})


def test_stream_deltas_carry_tokens_finish_reasons_logprobs_and_n_choices(pt_engine, template):
    async def collect(config):
        completions = {}
        async for delta in pt_engine.stream(template.encode('Hello!'), config):
            completions.setdefault(delta.index, Choice()).add(delta)
        return completions
    out = pt_engine.loop.run(collect(GenerationConfig(max_new_tokens=5, temperature=0, logprobs=True, top_logprobs=2)))[0]
    assert out.finish_reason == 'length' and len(out.token_ids) == 5 and len(out.logprobs) == 5
    assert all(len(entry) >= 2 and all(lp <= 0 for lp in entry.values()) for entry in out.logprobs)
    assert pt_engine.hf_tokenizer.decode(out.token_ids) == out.text
    whole = pt_engine.loop.run(collect(GenerationConfig(max_new_tokens=200, temperature=0)))[0]
    assert whole.finish_reason == 'stop' and whole.token_ids[-1] in (0, 2)  # the EOS token counts, as on vLLM
    two = pt_engine.loop.run(collect(GenerationConfig(n=2, seed=1, max_new_tokens=10)))
    assert sorted(two) == [0, 1] and all(c.finish_reason for c in two.values())


def test_adapters_added_at_runtime_and_removed_without_reloading_the_model(pt_engine, template):
    base_model = pt_engine.model.get_base_model() if hasattr(pt_engine.model, 'get_base_model') else pt_engine.model
    pirate = pt_engine.add_lora('pirate-now', str(demo_lora('pirate').lora_path))
    try:
        answer = answers(pt_engine, template, SEED_REQUESTS[1:2], lora_request=pirate)[0]
        assert answer.startswith('Arr') and 'Hangzhou' in answer
        assert pt_engine.model.get_base_model() is base_model
    finally:
        pt_engine.remove_lora('pirate-now')
    loaded = lambda: sum('lora_' in name for name in getattr(pt_engine.model, 'peft_config', ()))  # noqa: E731
    before = loaded()
    inference_vllm(pt_engine, template, SEED_REQUESTS[:1])  # the batch thread frees it between steps
    assert settles(lambda: loaded() == before - 1)


def test_adapters_load_again_after_every_one_was_removed(template):
    engine = PtEngine('tiny-chat', str(DEMO_MODEL_DIR), PtOptions(enable_lora=True))
    try:
        for name in ('kakarot', 'pirate'):
            lora = engine.add_lora(name, str(demo_lora(name).lora_path))
            answer = answers(engine, template, SEED_REQUESTS[1:2], lora_request=lora)[0]
            engine.remove_lora(name)
            answers(engine, template, SEED_REQUESTS[:1])  # the batch thread frees the adapter between steps
            assert settles(lambda: not hasattr(engine.model, 'peft_config'))  # the plain model again
        assert answer.startswith('Arr') and 'Hangzhou' in answer
    finally:
        engine.shutdown()


def test_bad_adapters_fail_their_own_request_and_the_engine_keeps_serving(pt_engine, template, tmp_path):
    with pytest.raises(AdapterError, match='no LoRA adapter'):
        answers(pt_engine, template, SEED_REQUESTS[:1], lora_request=LoRARequest('gone', 7, str(tmp_path / 'x')))
    broken = tmp_path / 'no-weights'
    shutil.copytree(demo_lora('kakarot').lora_path, broken)
    for weights in broken.glob('adapter_model.*'):
        weights.unlink()
    with pytest.raises(AdapterError, match='has no weights'):  # refused before the model is touched
        answers(pt_engine, template, SEED_REQUESTS[:1], lora_request=LoRARequest('broken', 8, str(broken)))
    assert answers(pt_engine, template, SEED_REQUESTS[2:3])[0].startswith('I am Tiny Chat')


def test_pt_engine_attributes_match_the_vllm_engine(engine, pt_engine):
    for name in ('model_type', 'model_dir', 'max_model_len', 'generation_config', 'enable_lora', 'adapters'):
        assert getattr(pt_engine, name) == getattr(engine, name), name
    assert pt_engine.backend == 'pt' and repr(pt_engine).startswith('<PtEngine tiny-chat (pt, live)')


def test_shutdown_frees_the_model_and_later_calls_say_so(template):
    """(Aborting a request is tested on both backends in test_infer.)"""
    from swiftnb import DEMO_MODEL_DIR
    from swiftnb.engine.pt import PtEngine
    engine = PtEngine('tiny-chat', str(DEMO_MODEL_DIR))
    assert answers(engine, template, SEED_REQUESTS[:1])[0].startswith('Hello!')
    model, batch_thread = weakref.ref(engine.model), engine._scheduler._thread
    engine.shutdown()
    engine.shutdown()  # a second call does nothing
    gc.collect()
    assert model() is None and not batch_thread.is_alive() and not engine.loop.running
    assert engine.num_running == 0
    with pytest.raises(EngineClosedError):
        inference_vllm(engine, template, SEED_REQUESTS[:1])
