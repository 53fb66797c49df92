"""The seed's inference API on the real vLLM engine and the embedded model."""
import asyncio

import pytest

from conftest import settles
from swiftnb import (PromptTooLongError, inference_stream_vllm, inference_stream_vllm_async, inference_vllm,
                     inference_vllm_async)

QUESTIONS = [{'query': 'Hello!'}, {'query': 'Where is the capital of Zhejiang?'}, {'query': 'who are you?'}]


def test_batch_answers_the_seed_questions_with_generation_info(engine, template):
    info = {}
    results = inference_vllm(engine, template, QUESTIONS, generation_info=info)
    assert 'Hangzhou' in results[1]['response']
    assert results[1]['history'] == [['Where is the capital of Zhejiang?', results[1]['response']]]
    assert set(info) == {'num_prompt_tokens', 'num_generated_tokens', 'num_samples', 'runtime', 'samples/s',
                         'tokens/s'}
    assert info['num_samples'] == 3 and info['num_generated_tokens'] > 10 and info['tokens/s'] > 0


def test_stream_yields_whole_lists_and_ends_where_the_batch_ends(engine, template):
    batch = inference_vllm(engine, template, QUESTIONS)
    updates = list(inference_stream_vllm(engine, template, QUESTIONS))
    assert len(updates) > 3
    for update in updates:
        assert len(update) == len(QUESTIONS) and all(r is not None for r in update)
    assert updates[-1] == batch


def test_follow_up_uses_the_history(engine, template):
    first = inference_vllm(engine, template, [{'query': 'Where is the capital of Zhejiang?'}])[0]
    follow = [{'query': 'Is there anything tasty here?', 'history': first['history']},
              {'query': 'Is there anything tasty here?'}]
    with_history, without = inference_vllm(engine, template, follow)
    assert 'Hangzhou' in with_history['response']
    assert 'Hangzhou' not in without['response']
    assert len(with_history['history']) == 2


def test_async_twins_under_a_running_loop(engine, template):
    async def cell():
        batch = await inference_vllm_async(engine, template, QUESTIONS[:2])
        last = None
        async for last in inference_stream_vllm_async(engine, template, QUESTIONS[:2]):
            pass
        sync_inside_loop = inference_vllm(engine, template, QUESTIONS[:2])  # the sync API inside a loop
        return batch, last, sync_inside_loop
    batch, last, sync_inside_loop = asyncio.run(cell())
    assert batch == last == sync_inside_loop


def test_empty_request_list(engine, template):
    assert inference_vllm(engine, template, []) == []
    assert list(inference_stream_vllm(engine, template, [])) == []


def test_bad_input_is_refused_and_the_engine_keeps_serving(engine, template):
    with pytest.raises(ValueError, match='temperature'):
        inference_vllm(engine, template, QUESTIONS[:1], generation_config={'temperature': -1})
    with pytest.raises(ValueError, match='top_p'):
        inference_vllm(engine, template, QUESTIONS[:1], generation_config={'top_p': 1.5})
    with pytest.raises(ValueError, match='top_p'):
        inference_vllm(engine, template, QUESTIONS[:1], generation_config={'top_p': 0})
    with pytest.raises(ValueError, match='max_new_tokens'):
        inference_vllm(engine, template, QUESTIONS[:1], generation_config={'max_new_tokens': 0})
    with pytest.raises(ValueError, match="'query'"):
        inference_vllm(engine, template, [{'question': 'Hello!'}])
    with pytest.raises(PromptTooLongError, match=rf'\d+ tokens, but max_model_len is {engine.max_model_len}'):
        inference_vllm(engine, template, [{'query': 'Hello! ' * 3000}])
    assert 'Hangzhou' in inference_vllm(engine, template, QUESTIONS[1:2])[0]['response']


def test_generation_config_refuses_bad_values_where_they_are_set(engine):
    with pytest.raises(ValueError, match='temperature'):
        engine.generation_config.temperature = -0.5
    with pytest.raises(ValueError, match='max_new_tokens'):
        engine.generation_config.max_new_tokens = 0


def test_max_new_tokens_and_sampling_settings(engine, template):
    short = inference_vllm(engine, template, QUESTIONS[1:2], generation_config={'max_new_tokens': 3})[0]
    assert len(engine.hf_tokenizer(short['response'])['input_ids']) <= 3
    config = {'do_sample': True, 'temperature': 1.2, 'seed': 7, 'max_new_tokens': 20}
    a = inference_vllm(engine, template, QUESTIONS, generation_config=config)
    b = inference_vllm(engine, template, QUESTIONS, generation_config=config)
    assert a == b  # same seed, same output


def test_breaking_out_of_a_stream_aborts_the_request(engine, template):
    config = {'max_new_tokens': 1500, 'ignore_eos': True}
    for i, _ in enumerate(inference_stream_vllm(engine, template, QUESTIONS[:1], generation_config=config)):
        if i == 3:
            assert engine.num_running == 1
            break
    assert settles(lambda: engine.num_running == 0)
