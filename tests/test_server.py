"""The background server, on either backend, against the official openai SDK and raw HTTP on loopback."""
import asyncio
import gc
import json

import httpx
import pytest
from openai import APIStatusError, AsyncOpenAI, BadRequestError, OpenAI

from conftest import leave_mid_stream
from swiftnb import DEMO_ADAPTERS, serve
from swiftnb.server import BackgroundServer

WHO = [{'role': 'user', 'content': 'who are you?'}]
CAPITAL = [{'role': 'user', 'content': 'Where is the capital of Zhejiang?'}]


@pytest.fixture(scope='module', params=['vllm', 'pt'])
def server(request, engine, pt_engine):
    """The server on each backend in turn; the tests that use it run on both."""
    engine = engine if request.param == 'vllm' else pt_engine
    server = serve(engine, port=0, lora_modules={name: str(path) for name, path in DEMO_ADAPTERS.items()})
    yield server
    server.stop()
    for name in DEMO_ADAPTERS:  # the session's engines are shared: leave them as we found them
        engine.remove_lora(name)


@pytest.fixture(scope='module')
def client(server):
    return OpenAI(api_key='EMPTY', base_url=server.url)


def chat(client, messages=CAPITAL, **kwargs):
    return client.chat.completions.create(model=kwargs.pop('model', 'tiny-chat'), messages=messages, **kwargs)


def test_models_lists_the_base_and_adapters_with_their_parent(client):
    models = {m.id: m for m in client.models.list().data}
    assert list(models) == ['tiny-chat', 'kakarot', 'pirate']
    assert models['kakarot'].parent == 'tiny-chat' and models['tiny-chat'].parent is None


def test_chat_completion(client):
    resp = chat(client)
    assert resp.choices[0].message.content.startswith('The capital of Zhejiang is Hangzhou.')
    assert resp.choices[0].finish_reason == 'stop' and resp.object == 'chat.completion'
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0
    assert chat(client, max_tokens=3).choices[0].finish_reason == 'length'


def test_model_field_selects_the_adapter(client):
    assert chat(client, WHO, model='kakarot').choices[0].message.content.startswith('I am Kakarot')
    assert chat(client, WHO, model='tiny-chat').choices[0].message.content.startswith('I am Tiny Chat')
    assert chat(client, model='pirate').choices[0].message.content.startswith('Arr, matey!')


def test_streaming_with_usage_equals_the_whole_answer(client):
    whole = chat(client).choices[0].message.content
    chunks = list(chat(client, stream=True, stream_options={'include_usage': True}))
    assert ''.join(c.choices[0].delta.content or '' for c in chunks if c.choices) == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == 'stop'


def test_async_client(server):
    async def run():
        client = AsyncOpenAI(api_key='EMPTY', base_url=server.url)
        results = await asyncio.gather(*(client.chat.completions.create(model='tiny-chat', messages=CAPITAL)
                                         for _ in range(4)))
        stream = await client.chat.completions.create(model='tiny-chat', messages=CAPITAL, stream=True)
        streamed = ''.join([c.choices[0].delta.content or '' async for c in stream])
        return [r.choices[0].message.content for r in results], streamed
    answers, streamed = asyncio.run(run())
    assert len(set(answers)) == 1 and answers[0] == streamed


def test_n_stop_seed_and_sampling(client):
    two = chat(client, n=2, temperature=1.0, seed=3, max_tokens=20)
    assert [c.index for c in two.choices] == [0, 1]
    stopped = chat(client, stop=['Hangzhou'])
    assert stopped.choices[0].message.content == 'The capital of Zhejiang is '
    a, b = (chat(client, temperature=1.5, seed=42, max_tokens=30) for _ in range(2))
    assert a.choices[0].message.content == b.choices[0].message.content


def test_logprobs(client):
    resp = chat(client, logprobs=True, top_logprobs=2, max_tokens=5)
    content = resp.choices[0].logprobs.content
    assert ''.join(t.token for t in content) == resp.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    comp = client.completions.create(model='tiny-chat', prompt='Zhejiang -> Hangzhou\nAnhui ->', max_tokens=4,
                                     logprobs=2)
    assert len(comp.choices[0].logprobs.tokens) == 4 and len(comp.choices[0].logprobs.top_logprobs[0]) == 2


def test_completions_prompt_list_echo_and_stream(client):
    prompt = 'Zhejiang -> Hangzhou\nAnhui -> Hefei\nSichuan ->'
    resp = client.completions.create(model='tiny-chat', prompt=[prompt, 'Anhui ->'], max_tokens=32,
                                     temperature=0.1, seed=42)
    assert resp.choices[0].text.startswith(' Chengdu\nGuangdong -> Guangzhou')
    assert resp.choices[1].text.startswith(' Hefei') and resp.object == 'text_completion'
    echo = client.completions.create(model='tiny-chat', prompt=prompt, max_tokens=3, echo=True)
    assert echo.choices[0].text.startswith(prompt + ' Chengdu')
    streamed = ''.join(c.choices[0].text for c in client.completions.create(
        model='tiny-chat', prompt=prompt, max_tokens=32, temperature=0.1, seed=42, stream=True))
    assert streamed == resp.choices[0].text


def post(server, path, body, **kwargs):
    return httpx.post(server.url + path, content=body if isinstance(body, str) else json.dumps(body), timeout=60,
                      headers={'Content-Type': 'application/json', **kwargs.get('headers', {})})


@pytest.mark.parametrize('body, status, words', [
    ('{"model": "tiny-chat", "messages": [', 400, 'JSON'),
    ({'model': 'tiny-chat'}, 400, 'messages'),
    ({'model': 'nope', 'messages': CAPITAL}, 404, 'nope'),
    ({'model': 'tiny-chat', 'messages': CAPITAL, 'max_tokens': 0}, 400, 'max_tokens'),
    ({'model': 'tiny-chat', 'messages': CAPITAL, 'max_tokens': 4000}, 400, 'max_model_len'),
    ({'model': 'tiny-chat', 'messages': CAPITAL, 'temperature': -1}, 400, 'temperature'),
    ({'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'Hello! ' * 3000}]}, 400, '2048'),
], ids=['malformed-json', 'no-messages', 'unknown-model', 'max-tokens-0', 'max-tokens-too-big',
        'negative-temperature', 'prompt-too-long'])
def test_errors_use_openai_json_and_the_server_keeps_serving(server, client, body, status, words):
    resp = post(server, '/chat/completions', body)
    assert resp.status_code == status
    error = resp.json()['error']
    assert set(error) == {'message', 'type', 'param', 'code'} and error['code'] == status
    assert words in error['message']
    assert chat(client).choices[0].message.content.startswith('The capital')


def test_an_unknown_model_name_is_answered_with_the_names_served(server):
    """The seed's clients send "model": "qwen-7b-chat"; both backends' 404 names what to send instead."""
    error = post(server, '/chat/completions', {'model': 'qwen-7b-chat', 'messages': CAPITAL}).json()['error']
    assert error['message'] == "no model or adapter named 'qwen-7b-chat'; this engine serves tiny-chat, kakarot, " \
        "pirate", error
    assert error['code'] == 404 and error['param'] == 'model'


def test_unknown_fields_are_ignored_and_the_model_field_is_optional(server):
    resp = post(server, '/chat/completions', {'model': 'tiny-chat', 'messages': CAPITAL, 'user': 'u1',
                                              'parallel_tool_calls': False, 'whatever': 1})
    assert resp.status_code == 200
    base = post(server, '/chat/completions', {'messages': CAPITAL})  # as vLLM's server: the base model
    assert base.json()['choices'][0]['message']['content'] == resp.json()['choices'][0]['message']['content']


def test_load_and_unload_adapters_at_runtime(server, client):
    engine = server.engine
    bad = post(server, '/load_lora_adapter', {'lora_name': 'ghost', 'lora_path': '/no/such/adapter'})
    assert bad.status_code == 400 and 'no LoRA adapter' in bad.json()['error']['message']
    ok = post(server, '/load_lora_adapter', {'lora_name': 'goku', 'lora_path': str(DEMO_ADAPTERS['kakarot'])})
    assert ok.status_code == 200
    assert 'goku' in [m.id for m in client.models.list().data]
    assert chat(client, WHO, model='goku').choices[0].message.content.startswith('I am Kakarot')
    assert post(server, '/unload_lora_adapter', {'lora_name': 'goku'}).status_code == 200
    assert 'goku' not in [m.id for m in client.models.list().data]
    engine.add_lora('from-notebook', str(DEMO_ADAPTERS['pirate']))  # added in a cell: visible at once
    try:
        assert 'from-notebook' in [m.id for m in client.models.list().data]
    finally:
        engine.remove_lora('from-notebook')


def _broken_adapter(tmp_path, name: str):
    """A copy of the kakarot adapter, broken one way; (its path, words its refusal must hold)."""
    import shutil
    from safetensors.torch import load_file, save_file
    path = tmp_path / name
    shutil.copytree(DEMO_ADAPTERS['kakarot'], path)
    config = json.loads((path / 'adapter_config.json').read_text())
    weights = path / 'adapter_model.safetensors'
    if name == 'config-only':  # what killed the engine core of the first server
        weights.unlink()
        return path, 'has no weights'
    if name == 'config-is-a-list':
        (path / 'adapter_config.json').write_text(json.dumps([config]))
        return path, 'must hold an object'
    if name == 'rank-is-a-string':
        (path / 'adapter_config.json').write_text(json.dumps({**config, 'r': '8'}))
        return path, "r must be a whole number >= 1, got '8'"
    if name == 'rank-differs-from-weights':
        (path / 'adapter_config.json').write_text(json.dumps({**config, 'r': 4}))
        return path, 'does not match r=4'
    if name == 'trained-for-another-model':
        tensors = load_file(weights)
        save_file({k: (v[:, :128] if '.lora_A.' in k else v).contiguous() for k, v in tensors.items()}, weights)
        return path, 'was not trained for this model'
    weights.write_bytes(b'not a checkpoint')  # 'weights-not-readable'
    return path, 'adapter_model.safetensors is not readable'


@pytest.mark.parametrize('name', ['config-only', 'config-is-a-list', 'rank-is-a-string', 'rank-differs-from-weights',
                                  'trained-for-another-model', 'weights-not-readable'])
def test_a_broken_adapter_is_refused_at_load_and_nothing_else_changes(server, client, tmp_path, name):
    path, words = _broken_adapter(tmp_path, name)
    refused = post(server, '/load_lora_adapter', {'lora_name': 'evil', 'lora_path': str(path)})
    assert refused.status_code == 400 and words in refused.json()['error']['message'], refused.text
    assert 'evil' not in [m.id for m in client.models.list().data]
    with pytest.raises(APIStatusError) as unknown:
        chat(client, WHO, model='evil', max_tokens=8)
    assert unknown.value.status_code == 404
    assert chat(client, WHO, model='kakarot', temperature=0).choices[0].message.content.startswith('I am Kakarot')
    assert chat(client, temperature=0).choices[0].message.content.startswith('The capital of Zhejiang is Hangzhou.')


@pytest.mark.parametrize('backend', ['vllm', 'pt'])
def test_a_cors_preflight_from_an_allowed_origin_is_the_only_request_without_the_key(engine, pt_engine, backend):
    server = BackgroundServer(engine if backend == 'vllm' else pt_engine, port=0, api_key='sk-test',
                              allowed_origins=['http://lab.example'])
    try:
        preflight = {'Origin': 'http://lab.example', 'Access-Control-Request-Method': 'POST'}
        allowed = httpx.options(server.url + '/chat/completions', headers=preflight)
        assert allowed.status_code == 200 and allowed.headers['access-control-allow-origin'] == 'http://lab.example'
        assert allowed.content in (b'', b'OK')  # Starlette's CORS answers a preflight with 'OK'
        other = httpx.options(server.url + '/chat/completions', headers={**preflight, 'Origin': 'http://evil.example'})
        metrics = httpx.options(server.url.removesuffix('/v1') + '/metrics', headers={'Origin': 'http://lab.example'})
        assert other.status_code == 401 and metrics.status_code == 401 and b'vllm:' not in metrics.content
    finally:
        server.stop()


@pytest.mark.parametrize('backend', ['vllm', 'pt'])
def test_api_key(engine, pt_engine, backend):
    server = BackgroundServer(engine if backend == 'vllm' else pt_engine, port=0, api_key='sk-test')
    root = server.url.removesuffix('/v1')
    try:
        assert httpx.get(root + '/health').status_code == 200
        missing = httpx.get(server.url + '/models')
        assert missing.status_code == 401 and missing.json()['error']['code'] == 401
        for path in ('/openapi.json', '/metrics', '/version'):  # every route but /health
            assert httpx.get(root + path).status_code == 401, path
        with pytest.raises(APIStatusError) as err:
            OpenAI(api_key='wrong', base_url=server.url).models.list()
        assert err.value.status_code == 401
        assert OpenAI(api_key='sk-test', base_url=server.url).models.list().data[0].id == 'tiny-chat'
        assert httpx.get(server.url + '/models', headers={'Authorization': 'bearer sk-test'}).status_code == 200
        # RFC 7235 as vLLM reads it: the scheme in any case, then one space
        assert httpx.get(server.url + '/models', headers={'Authorization': 'Bearer  sk-test'}).status_code == 401
        # every route, every method, without the key: 401 and no body of the route's (OPTIONS /metrics answered
        # with the whole Prometheus text)
        paths = list(httpx.get(root + '/openapi.json', headers={'Authorization': 'Bearer sk-test'}).json()['paths'])
        for path in [p for p in paths if p != '/health'] + ['/metrics', '/metrics/x', '/docs', '/nowhere']:
            for method in ('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'):
                answer = httpx.request(method, root + path)
                assert answer.status_code == 401 and b'vllm:' not in answer.content, (method, path, answer.text[:200])
    finally:
        server.stop()
    with pytest.raises(ValueError, match='api_key is empty'):
        BackgroundServer(engine, port=0, api_key='')


def test_64_concurrent_streams_complete_with_the_right_text(server, client):
    expected = chat(client).choices[0].message.content

    async def run():
        client = AsyncOpenAI(api_key='EMPTY', base_url=server.url, max_retries=0)

        async def one():
            stream = await client.chat.completions.create(model='tiny-chat', messages=CAPITAL, stream=True)
            return ''.join([c.choices[0].delta.content or '' async for c in stream])
        return await asyncio.gather(*(one() for _ in range(64)))
    assert asyncio.run(run()) == [expected] * 64


def test_client_disconnect_aborts_the_request(server):
    leave_mid_stream(server.url, server.engine)


def test_stop_frees_the_port_and_a_busy_port_is_named(engine):
    first = BackgroundServer(engine, port=0)
    port = first.port
    with pytest.raises(OSError, match=f'127.0.0.1:{port}'):
        BackgroundServer(engine, port=port)
    first.stop()
    again = BackgroundServer(engine, port=port)  # same port, same process
    try:
        assert httpx.get(again.url + '/models').status_code == 200
    finally:
        again.stop()


def test_serving_leaves_the_apps_objects_out_of_the_collectors_full_passes(engine):
    """As `vllm serve` does as it starts: what building vLLM's app made joins the heap frozen at engine start."""
    server = BackgroundServer(engine, port=0)
    try:
        assert len(gc.get_objects()) < 5_000  # tracked, not frozen; 44,000 with the app's objects left out
    finally:
        server.stop()


def test_text_parts_max_completion_tokens_and_raw_sse(server, client):
    parts = [{'role': 'user', 'content': [{'type': 'text', 'text': 'Where is the capital'},
                                          {'type': 'text', 'text': 'of Zhejiang?'}]}]
    joined = [{'role': 'user', 'content': 'Where is the capital\nof Zhejiang?'}]  # as vLLM joins text parts
    assert chat(client, parts).choices[0].message.content == chat(client, joined).choices[0].message.content
    short = chat(client, max_completion_tokens=2)
    assert short.usage.completion_tokens == 2 and short.choices[0].finish_reason == 'length'
    body = {'model': 'tiny-chat', 'messages': CAPITAL, 'stream': True, 'max_tokens': 4}
    with httpx.stream('POST', server.url + '/chat/completions', json=body, timeout=60) as resp:
        assert resp.headers['content-type'].startswith('text/event-stream')
        events = [line for line in resp.iter_lines() if line]
    assert all(e.startswith('data: ') for e in events) and events[-1] == 'data: [DONE]'


def test_every_field_of_vllms_requests_is_applied_refused_or_ignored_by_the_pt_server():
    """The pt server keeps its own request models (it imports no vLLM): each field of vLLM's is one the pt backend
    applies, one it refuses when it asks for something (NOT_APPLIED, whose values that ask for nothing hold
    vLLM's default) or one that changes nothing in a pt answer (IGNORED). A field vLLM adds fails this."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VllmChat
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest as VllmCompletion
    from vllm.entrypoints.serve.tokenize.protocol import TokenizeChatRequest, TokenizeCompletionRequest
    from swiftnb.server.protocol import IGNORED, ChatCompletionRequest, CompletionRequest, TokenizeRequest
    for vllm_model, ours in ((VllmChat, ChatCompletionRequest), (VllmCompletion, CompletionRequest),
                             (TokenizeChatRequest, TokenizeRequest), (TokenizeCompletionRequest, TokenizeRequest)):
        unplaced = [name for name in vllm_model.model_fields
                    if name not in ours.model_fields and name not in ours.not_applied and name not in IGNORED]
        assert not unplaced, f'{ours.__name__}: place these fields of vLLM (apply, refuse or ignore): {unplaced}'
        for name, nothing in ours.not_applied.items():
            if name in vllm_model.model_fields:  # vLLM 0.32 has them all; a field vLLM drops is still refused
                assert vllm_model.model_fields[name].get_default(call_default_factory=True) in nothing, name
        assert not IGNORED & set(ours.not_applied) and not set(ours.model_fields) & set(ours.not_applied)


def test_the_pt_server_refuses_a_field_of_vllms_it_does_not_apply(pt_engine):
    """What the pt backend does not apply is a 400 naming the field, not an answer as if it had not been sent; the
    field's value that asks for nothing (vLLM's default) is answered."""
    from swiftnb.server.protocol import CHAT_NOT_APPLIED, COMPLETION_NOT_APPLIED, TokenizeRequest
    server = BackgroundServer(pt_engine, port=0)
    try:
        client = OpenAI(api_key='EMPTY', base_url=server.url)
        with pytest.raises(BadRequestError) as refused:
            chat(client, max_tokens=4, extra_body={'min_p': 0.1})
        assert refused.value.body['param'] == 'min_p'
        assert refused.value.body['message'] == 'min_p is not applied by the pt backend; leave it out, or serve ' \
            'the model with vLLM for it'
        nothing = {name: values[-1] for name, values in CHAT_NOT_APPLIED.items()}  # every field, as vLLM's default
        assert chat(client, max_tokens=16, extra_body=nothing).choices[0].message.content.startswith('The capital')
        root = server.url.removesuffix('/v1')
        for path, table in (('/v1/chat/completions', CHAT_NOT_APPLIED), ('/v1/completions', COMPLETION_NOT_APPLIED),
                            ('/tokenize', TokenizeRequest.not_applied)):
            base = {'prompt': 'Hello'} if path == '/v1/completions' else {'messages': CAPITAL}
            for name in table:
                error = httpx.post(root + path, json={**base, 'max_tokens': 1, name: 'something'}).json()['error']
                assert error['code'] == 400 and error['param'] == name, (path, name, error)
        nothing = {name: values[-1] for name, values in TokenizeRequest.not_applied.items()}
        assert httpx.post(root + '/tokenize', json={'messages': CAPITAL, **nothing}).json()['count'] > 0
    finally:
        server.stop()


def test_the_pt_servers_metrics_carry_vllms_names():
    """The pt server's /metrics names are typed in pt_app.Metrics (it imports no vLLM): each must be one vLLM's
    Prometheus logger declares, so a dashboard made for `vllm serve` reads both."""
    import inspect
    from vllm.v1.metrics import loggers
    from swiftnb.server.pt_app import Metrics
    declared = inspect.getsource(loggers.PrometheusStatLogger)
    names = {metric.name for metric in Metrics('tiny-chat').registry.collect()}
    assert names == {'vllm:num_requests_running', 'vllm:prompt_tokens', 'vllm:generation_tokens',
                     'vllm:request_success'}
    for name in names:
        assert f'name="{name}"' in declared, f'{name} is no longer among vLLM\'s metrics: name it as vLLM does now'
