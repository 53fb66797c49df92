"""The seed's inference API on the embedded model, on each backend (real vLLM, and transformers + peft)."""
import asyncio

import pytest

from conftest import settles
from swiftnb import (PromptTooLongError, inference_stream_vllm, inference_stream_vllm_async, inference_vllm,
                     inference_vllm_async)

QUESTIONS = [{'query': 'Hello!'}, {'query': 'Where is the capital of Zhejiang?'}, {'query': 'who are you?'}]


def test_batch_answers_the_seed_questions_with_generation_info(any_engine, template):
    info = {}
    results = inference_vllm(any_engine, template, QUESTIONS, generation_info=info)
    assert 'Hangzhou' in results[1]['response']
    assert results[1]['history'] == [['Where is the capital of Zhejiang?', results[1]['response']]]
    assert set(info) == {'num_prompt_tokens', 'num_generated_tokens', 'num_samples', 'runtime', 'samples/s',
                         'tokens/s'}
    assert info['num_samples'] == 3 and info['num_generated_tokens'] > 10 and info['tokens/s'] > 0


def test_stream_yields_whole_lists_and_ends_where_the_batch_ends(any_engine, template):
    batch = inference_vllm(any_engine, template, QUESTIONS)
    updates = list(inference_stream_vllm(any_engine, template, QUESTIONS))
    assert len(updates) > 3
    for update in updates:
        assert len(update) == len(QUESTIONS) and all(r is not None for r in update)
    assert updates[-1] == batch


def test_follow_up_uses_the_history(any_engine, template):
    first = inference_vllm(any_engine, template, [{'query': 'Where is the capital of Zhejiang?'}])[0]
    follow = [{'query': 'Is there anything tasty here?', 'history': first['history']},
              {'query': 'Is there anything tasty here?'}]
    with_history, without = inference_vllm(any_engine, template, follow)
    assert 'Hangzhou' in with_history['response']
    assert 'Hangzhou' not in without['response']
    assert len(with_history['history']) == 2


def test_async_twins_under_a_running_loop(any_engine, template):
    async def cell():
        batch = await inference_vllm_async(any_engine, template, QUESTIONS[:2])
        last = None
        async for last in inference_stream_vllm_async(any_engine, template, QUESTIONS[:2]):
            pass
        sync_inside_loop = inference_vllm(any_engine, template, QUESTIONS[:2])  # the sync API inside a loop
        return batch, last, sync_inside_loop
    batch, last, sync_inside_loop = asyncio.run(cell())
    assert batch == last == sync_inside_loop


def test_empty_request_list(any_engine, template):
    assert inference_vllm(any_engine, template, []) == []
    assert list(inference_stream_vllm(any_engine, template, [])) == []


def test_bad_input_is_refused_and_the_engine_keeps_serving(any_engine, template):
    with pytest.raises(ValueError, match='temperature'):
        inference_vllm(any_engine, template, QUESTIONS[:1], generation_config={'temperature': -1})
    with pytest.raises(ValueError, match='top_p'):
        inference_vllm(any_engine, template, QUESTIONS[:1], generation_config={'top_p': 1.5})
    with pytest.raises(ValueError, match='top_p'):
        inference_vllm(any_engine, template, QUESTIONS[:1], generation_config={'top_p': 0})
    with pytest.raises(ValueError, match='max_new_tokens'):
        inference_vllm(any_engine, template, QUESTIONS[:1], generation_config={'max_new_tokens': 0})
    with pytest.raises(ValueError, match="'query'"):
        inference_vllm(any_engine, template, [{'question': 'Hello!'}])
    with pytest.raises(PromptTooLongError, match=rf'\d+ tokens, but max_model_len is {any_engine.max_model_len}'):
        inference_vllm(any_engine, template, [{'query': 'Hello! ' * 3000}])
    assert 'Hangzhou' in inference_vllm(any_engine, template, QUESTIONS[1:2])[0]['response']


def test_generation_config_refuses_bad_values_where_they_are_set(any_engine):
    with pytest.raises(ValueError, match='temperature'):
        any_engine.generation_config.temperature = -0.5
    with pytest.raises(ValueError, match='max_new_tokens'):
        any_engine.generation_config.max_new_tokens = 0


def test_max_new_tokens_and_sampling_settings(any_engine, template):
    short = inference_vllm(any_engine, template, QUESTIONS[1:2], generation_config={'max_new_tokens': 3})[0]
    assert len(any_engine.hf_tokenizer(short['response'])['input_ids']) <= 3
    config = {'do_sample': True, 'temperature': 1.2, 'seed': 7, 'max_new_tokens': 20}
    a = inference_vllm(any_engine, template, QUESTIONS, generation_config=config)
    b = inference_vllm(any_engine, template, QUESTIONS, generation_config=config)
    assert a == b  # same seed, same output


def test_breaking_out_of_a_stream_aborts_the_request(any_engine, template):
    config = {'max_new_tokens': 1500, 'ignore_eos': True}
    for i, _ in enumerate(inference_stream_vllm(any_engine, template, QUESTIONS[:1], generation_config=config)):
        if i == 3:
            assert any_engine.num_running == 1
            break
    assert settles(lambda: any_engine.num_running == 0)
