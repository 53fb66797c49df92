"""One chat template per engine, `engine.template`, at every door. A model folder whose tokenizer ships no chat
template, of a model type whose template swiftnb knows (the seed's `qwen-7b-chat`: the built-in 'qwen'), answers
through the seed's own lines, the server, ChatWidget, divergence and `swiftnb infer` (%%chat: test_magics.py, in a
real kernel); vLLM's server renders with engine.template too."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI

from conftest import without_chat_template
from swiftnb import (DEMO_ADAPTERS, UsageError, divergence, get_default_template_type, get_template,
                     inference_vllm, serve)
from swiftnb.widgets import ChatWidget

QUERY = 'Where is the capital of Zhejiang?'
GREEDY = {'temperature': 0, 'max_tokens': 32}


@pytest.fixture(scope='module')
def no_template_dir(tmp_path_factory) -> str:
    return without_chat_template(tmp_path_factory.mktemp('models') / 'no-chat-template')


@pytest.fixture(scope='module')
def no_template_engine(no_template_dir):
    from swiftnb.engine.options import PtOptions
    from swiftnb.engine.pt import PtEngine
    engine = PtEngine('qwen-7b-chat', no_template_dir, PtOptions(enable_lora=True))
    yield engine
    engine.shutdown()


def answer(engine, template=None) -> str:
    template = template or engine.template
    return inference_vllm(engine, template, [{'query': QUERY}], generation_config=GREEDY)[0]['response']


def test_a_model_whose_tokenizer_has_no_chat_template_answers_at_every_door(no_template_engine, no_template_dir,
                                                                             pt_engine, tmp_path):
    engine = no_template_engine
    assert engine.hf_tokenizer.chat_template is None and engine.template.template_type == 'qwen'
    # tiny-chat's own template renders a plain conversation as the built-in 'qwen' one does: the same answer
    expected = answer(pt_engine)
    assert 'Hangzhou' in expected
    seeds = get_template(get_default_template_type(engine.model_type), engine.hf_tokenizer)  # the seed's lines
    assert answer(engine, seeds) == answer(engine) == expected

    server = serve(engine, port=0)
    try:
        served = OpenAI(api_key='EMPTY', base_url=server.url).chat.completions.create(
            model=engine.model_type, messages=[{'role': 'user', 'content': QUERY}], **GREEDY)
        assert served.choices[0].message.content == expected
    finally:
        server.stop()
    assert ChatWidget(engine, **GREEDY).send(QUERY) == expected
    with pytest.warns(UserWarning, match='was trained on tiny-chat, and this engine runs qwen-7b-chat'):
        kakarot, base = divergence(engine, QUERY, DEMO_ADAPTERS['kakarot'], max_tokens=GREEDY['max_tokens']).answers
    assert base.text.startswith(expected)  # (its text keeps the end-of-turn token)

    dataset, result = tmp_path / 'questions.jsonl', tmp_path / 'result.jsonl'
    dataset.write_text(json.dumps({'query': QUERY}) + '\n')
    done = subprocess.run([str(Path(sys.executable).with_name('swiftnb')), 'infer', '--infer_backend', 'pt',
                           '--model_type', 'qwen-7b-chat', '--model_id_or_path', no_template_dir,
                           '--val_dataset', str(dataset), '--result_path', str(result),
                           *[f'--{name}={value}' for name, value in GREEDY.items()]],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(result.read_text())['response'] == expected


def test_a_model_with_no_template_swiftnb_knows_says_how_to_pick_one(no_template_dir):
    from swiftnb.engine.options import PtOptions
    from swiftnb.engine.pt import PtEngine
    engine = PtEngine('some-model', no_template_dir, PtOptions())
    try:
        with pytest.raises(UsageError, match=r'engine.template = get_template\("chatml", engine.hf_tokenizer\)'):
            engine.template
        engine.template = get_template('chatml', engine.hf_tokenizer)
        assert 'Hangzhou' in answer(engine)
        with pytest.raises(UsageError, match='takes a Template'):
            engine.template = 'chatml'
    finally:
        engine.shutdown()


def test_vllms_server_renders_with_the_engines_template(engine):
    """A template with its own default system: vLLM's server (which takes a chat template, not a default system)
    renders the prompt the Python API renders with it, and gives its answer."""
    saved, query = engine.template, 'Hello!'
    engine.template = get_template('chatml', engine.hf_tokenizer, default_system='Answer in French.')
    try:
        expected = inference_vllm(engine, engine.template, [{'query': query}], generation_config=GREEDY)[0]['response']
        assert expected != inference_vllm(engine, saved, [{'query': query}], generation_config=GREEDY)[0]['response']
        server = serve(engine, port=0)
        try:
            served = OpenAI(api_key='EMPTY', base_url=server.url).chat.completions.create(
                model=engine.model_type, messages=[{'role': 'user', 'content': query}], **GREEDY)
            assert served.usage.prompt_tokens == len(engine.template.encode(query))
            assert served.choices[0].message.content == expected
        finally:
            server.stop()
    finally:
        engine.template = saved
