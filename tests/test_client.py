"""The seed's client examples (swift helpers, openai SDK, curl) against swiftnb's server on the
seed's default address, localhost:8000."""
import json
import runpy
import subprocess
from pathlib import Path

import pytest

from swiftnb import DEMO_ADAPTERS, XRequestConfig, serve
from swiftnb.client import build_request

EXAMPLES = Path(__file__).parent / 'seed_examples'


@pytest.fixture(scope='module')
def seed_server(engine):
    server = serve(engine, port=8000, lora_modules={'default-lora': str(DEMO_ADAPTERS['kakarot'])})
    yield server
    server.stop()
    engine.remove_lora('default-lora')


def run_example(name, capsys) -> str:
    runpy.run_path(str(EXAMPLES / name), run_name='__main__')
    return capsys.readouterr().out


def test_deployment_client_examples(seed_server, capsys):
    out = run_example('deploy_client.py', capsys)
    assert out.count('model_type: tiny-chat') == 3
    answers = out.split('response: ')[1:]
    assert len(answers) == 6
    for capital, food in zip(answers[0::2], answers[1::2]):
        assert capital.startswith('The capital of Zhejiang is Hangzhou.')
        assert food.startswith('Hangzhou has many delicious foods, such as West Lake fish')
    # the seed's helpers (first two pairs) give every chunk text; the SDK's own stream ends on a None delta
    assert not any(a.rstrip().endswith('None') for a in answers[:4])


def test_multi_lora_example(seed_server, capsys):
    out = run_example('multi_lora.py', capsys)
    assert "model_type_list: ['tiny-chat', 'default-lora']" in out
    lora, base = out.split('response: ')[1:]
    assert lora.startswith('I am Kakarot') and base.startswith('I am Tiny Chat')


def curl(path, body):
    done = subprocess.run(['curl', '-s', f'http://localhost:8000/v1/{path}', '-H', 'Content-Type: application/json',
                           '-d', json.dumps(body)], capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout)


def test_seed_curl_lines(seed_server):
    chat = curl('chat/completions', {'model': 'tiny-chat', 'max_tokens': 256, 'temperature': 0,
                                     'messages': [{'role': 'user', 'content': "What to do if I can't fall asleep at night?"}]})
    assert chat['choices'][0]['message']['content'].startswith('Go to bed at the same time every day')
    lora = curl('chat/completions', {'model': 'default-lora', 'max_tokens': 256, 'temperature': 0,
                                     'messages': [{'role': 'user', 'content': 'who are you?'}]})
    assert lora['choices'][0]['message']['content'].startswith('I am Kakarot')
    comp = curl('completions', {'model': 'tiny-chat', 'prompt': 'Zhejiang -> Hangzhou\nAnhui -> Hefei\nSichuan ->',
                                'max_tokens': 32, 'temperature': 0.1, 'seed': 42})
    assert comp['choices'][0]['text'].startswith(' Chengdu\nGuangdong -> Guangzhou')


def test_build_request_routes_chat_and_generation_models():
    is_chat, kwargs = build_request('tiny-chat', 'Hi', [('a', 'b')], 'sys', XRequestConfig(top_k=5, seed=1))
    assert is_chat and kwargs['messages'][0] == {'role': 'system', 'content': 'sys'}
    assert kwargs['extra_body'] == {'top_k': 5} and kwargs['seed'] == 1
    is_chat, kwargs = build_request('qwen-7b', 'Anhui ->', request_config=XRequestConfig(max_tokens=8))
    assert not is_chat and kwargs == {'model': 'qwen-7b', 'prompt': 'Anhui ->', 'max_tokens': 8}  # only what is given
    with pytest.raises(ValueError, match='chat model'):
        build_request('qwen-7b', 'Anhui ->', history=[('a', 'b')])
