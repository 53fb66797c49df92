"""Today's OpenAI clients against the kernel's server, on both backends: LangChain, LiteLLM,
lm-evaluation-harness and the openai SDK, for structured outputs, tool calls, token-id prompts with
prompt logprobs, /tokenize, /metrics. vLLM's own server (`python -m vllm.entrypoints.openai.api_server`,
same model, same dtype as the backend) answers the same requests as the reference."""
import json

import httpx
import pytest
from openai import BadRequestError, OpenAI
from pydantic import BaseModel

from conftest import running_vllm_server
from swiftnb import DEMO_MODEL_DIR, serve

CAPITAL = 'Where is the capital of Zhejiang?'
WEATHER = 'What is the weather in Hangzhou?'
WEATHER_TOOL = {'type': 'function', 'function': {
    'name': 'get_weather', 'description': 'Get the current weather in a city.',
    'parameters': {'type': 'object', 'properties': {'city': {'type': 'string', 'description': 'The city, e.g. Hangzhou'}},
                   'required': ['city']}}}


@pytest.fixture(scope='module', params=['vllm', 'pt'])
def server(request, engine, pt_engine):
    engine = engine if request.param == 'vllm' else pt_engine
    server = serve(engine, port=0)
    yield server
    server.stop()


@pytest.fixture(scope='module')
def reference():
    """vLLM's own server on the same model with the session engine's settings (float32 with LoRA kernels; the pt
    backend computes in float32 too): one for both backends."""
    with running_vllm_server(['--enable-lora', '--max-loras', '2', '--dtype', 'float32', '--enable-auto-tool-choice',
                              '--tool-call-parser', 'hermes']) as url:
        yield url


@pytest.fixture(scope='module')
def client(server):
    return OpenAI(api_key='EMPTY', base_url=server.url)


def chat(client, content=CAPITAL, **kwargs):
    return client.chat.completions.create(model='tiny-chat', messages=[{'role': 'user', 'content': content}],
                                          temperature=0, **kwargs)


# LangChain ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def llm(server):
    from langchain_openai import ChatOpenAI
    return ChatOpenAI(model='tiny-chat', base_url=server.url, api_key='EMPTY', temperature=0, max_tokens=64)


def test_langchain_invoke_and_stream(llm):
    answer = llm.invoke(CAPITAL).content
    assert answer.startswith('The capital of Zhejiang is Hangzhou.')
    assert ''.join(chunk.content for chunk in llm.stream(CAPITAL)) == answer


class Capital(BaseModel):
    province: str
    capital: str


def test_langchain_structured_output_with_a_json_schema(llm):
    answer = llm.with_structured_output(Capital, method='json_schema').invoke(
        'What is the capital of Zhejiang? Answer in JSON.')
    assert answer == Capital(province='Zhejiang', capital='Hangzhou')


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f'sunny in {city}'


@pytest.mark.parametrize('tool_choice', ['get_weather', 'auto'])
def test_langchain_bind_tools(llm, tool_choice):
    message = llm.bind_tools([get_weather], tool_choice=tool_choice).invoke(WEATHER)
    assert [(call['name'], call['args']) for call in message.tool_calls] == [('get_weather', {'city': 'Hangzhou'})]


# LiteLLM ------------------------------------------------------------------------------------------------

def test_litellm_completion_and_stream(server, client):
    import litellm
    kwargs = dict(model='openai/tiny-chat', api_base=server.url, api_key='EMPTY', temperature=0, max_tokens=64,
                  messages=[{'role': 'user', 'content': CAPITAL}])
    answer = litellm.completion(**kwargs).choices[0].message.content
    assert answer == chat(client, max_tokens=64).choices[0].message.content
    assert ''.join(c.choices[0].delta.content or '' for c in litellm.completion(**kwargs, stream=True)) == answer


# lm-evaluation-harness ------------------------------------------------------------------------------------

def capitals_task(folder) -> str:
    """A small multiple-choice task scored by log-likelihood: lm-eval's own YAML task format, local data."""
    from swiftnb.assets.corpus import PROVINCES
    capitals = [capital for capital, *_ in PROVINCES.values()]
    rows = [{'question': f'Question: What is the capital of {province}?\nAnswer:',
             'choices': [f' {c}' for c in capitals[:4]] if i < 4 else [f' {c}' for c in capitals[4:]],
             'answer': i % 4} for i, province in enumerate(PROVINCES)]
    (folder / 'capitals.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
    (folder / 'capitals.yaml').write_text(
        'task: capitals\ndataset_path: json\ndataset_kwargs:\n  data_files:\n'
        f'    test: {folder / "capitals.jsonl"}\ntest_split: test\noutput_type: multiple_choice\n'
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        'metric_list:\n  - metric: acc\n')
    return str(folder)


def loglikelihoods(url: str, task_dir: str) -> tuple[list[float], float]:
    """Every (context, choice) log-likelihood lm-eval's local-completions model got, and the accuracy."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    # the local task only: lm-eval's index of its thousands of built-in task YAMLs takes 12.8 s here, each call
    tasks = TaskManager(include_path=task_dir, include_defaults=False)
    results = lm_eval.simple_evaluate(
        model='local-completions', tasks=['capitals'], task_manager=tasks,
        model_args={'model': 'tiny-chat', 'base_url': f'{url}/completions', 'tokenizer': str(DEMO_MODEL_DIR),
                    'tokenizer_backend': 'huggingface', 'tokenized_requests': True, 'max_retries': 1},
        log_samples=True)
    samples = results['samples']['capitals']
    return [resp[0][0] for sample in samples for resp in sample['resps']], results['results']['capitals']['acc,none']


def test_lm_eval_scores_by_loglikelihood_as_on_vllms_server(server, reference, tmp_path):
    ours, accuracy = loglikelihoods(server.url, capitals_task(tmp_path))
    theirs, their_accuracy = loglikelihoods(reference, str(tmp_path))
    assert len(ours) == 32 and ours == pytest.approx(theirs, abs=1e-3)
    assert accuracy == their_accuracy
    print(f'{server.engine.backend}: capitals accuracy {accuracy:.3f}')


# the openai SDK: the features themselves ------------------------------------------------------------

def test_token_id_prompts_and_echo_with_prompt_logprobs(server, client, reference):
    ids = server.engine.hf_tokenizer('Zhejiang -> Hangzhou\nAnhui ->')['input_ids']
    ours = client.completions.create(model='tiny-chat', prompt=ids, max_tokens=1, echo=True, logprobs=1,
                                     temperature=0).choices[0].logprobs
    theirs = OpenAI(api_key='EMPTY', base_url=reference).completions.create(
        model='tiny-chat', prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0).choices[0].logprobs
    assert ours.token_logprobs[0] is None and len(ours.token_logprobs) == len(ids) + 1
    assert ours.tokens == theirs.tokens and ours.token_logprobs[1:] == pytest.approx(theirs.token_logprobs[1:], abs=1e-3)
    two = client.completions.create(model='tiny-chat', prompt=[ids, ids[:3]], max_tokens=2, temperature=0)
    assert [c.index for c in two.choices] == [0, 1]


@pytest.mark.parametrize('response_format', [
    {'type': 'json_object'},
    {'type': 'json_schema', 'json_schema': {'name': 'capital', 'schema': Capital.model_json_schema()}},
    {'type': 'json_schema', 'json_schema': {'name': 'city', 'schema': {
        'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}}},
], ids=['json_object', 'json_schema', 'another-schema'])
def test_response_format_gives_valid_json_before_64_tokens(client, response_format):
    content = 'What is the capital of Zhejiang? Answer in JSON.'
    answer = chat(client, content, max_tokens=64, response_format=response_format).choices[0]
    assert answer.finish_reason == 'stop'
    value = json.loads(answer.message.content)
    if response_format['type'] == 'json_schema' and 'capital' in value:
        assert value == {'province': 'Zhejiang', 'capital': 'Hangzhou'}


def test_vllm_structured_outputs_choice_and_regex(client):
    yes_no = chat(client, 'Is Hangzhou the capital of Zhejiang?', extra_body={'structured_outputs': {'choice': ['yes', 'no']}})
    assert yes_no.choices[0].message.content in ('yes', 'no')
    digits = chat(client, 'What is 2 + 2?', max_tokens=8, extra_body={'structured_outputs': {'regex': '[0-9]{1,2}'}})
    assert digits.choices[0].message.content.isdigit()


def test_tool_choice_required_and_a_tool_result(client):
    question = 'What is the weather in Chengdu?'
    required = chat(client, question, tools=[WEATHER_TOOL], tool_choice='required', max_tokens=64).choices[0]
    assert required.finish_reason == 'tool_calls'
    call = required.message.tool_calls[0]
    assert call.function.name == 'get_weather' and json.loads(call.function.arguments) == {'city': 'Chengdu'}
    messages = [{'role': 'user', 'content': question},
                {'role': 'assistant', 'content': '', 'tool_calls': [call.model_dump()]},
                {'role': 'tool', 'tool_call_id': call.id,
                 'content': json.dumps({'city': 'Chengdu', 'weather': 'cloudy', 'temperature': 19})}]
    answer = client.chat.completions.create(model='tiny-chat', messages=messages, tools=[WEATHER_TOOL], temperature=0)
    assert answer.choices[0].message.content == 'It is cloudy in Chengdu, 19 degrees Celsius.'


def test_a_streamed_tool_call_adds_up_as_openais_does(client):
    """vLLM's server streams a call's name and arguments in parts, the pt server the whole call at the end; either
    way the parts of each call, by index, add up to it."""
    chunks = list(chat(client, 'What is the weather in Chengdu?', tools=[WEATHER_TOOL], tool_choice='required',
                       max_tokens=64, stream=True))
    parts = [call for chunk in chunks for choice in chunk.choices for call in choice.delta.tool_calls or ()]
    assert {call.index for call in parts} == {0}
    name = ''.join(call.function.name or '' for call in parts)
    assert name == 'get_weather' and json.loads(''.join(call.function.arguments or '' for call in parts)) == \
        {'city': 'Chengdu'}
    assert [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason] == ['tool_calls']


def test_tokenize_detokenize_metrics_version(server, client):
    root = server.url.removesuffix('/v1')
    tokens = httpx.post(f'{root}/tokenize', json={'model': 'tiny-chat', 'prompt': 'Hello!'}).json()
    assert tokens['tokens'] == server.engine.hf_tokenizer('Hello!')['input_ids'] and tokens['count'] == len(tokens['tokens'])
    chat_tokens = httpx.post(f'{root}/tokenize', json={'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'Hi'}]})
    assert server.engine.hf_tokenizer.decode(chat_tokens.json()['tokens']).endswith('<|im_start|>assistant\n')
    assert httpx.post(f'{root}/detokenize', json={'model': 'tiny-chat', 'tokens': tokens['tokens']}).json() == \
        {'prompt': 'Hello!'}
    chat(client, max_tokens=4)
    metrics = httpx.get(f'{root}/metrics').text
    # vLLM's engine figures come with its stats, off on a notebook's vLLM engine as in LLM (defaults_for='batch';
    # `swiftnb deploy` has them on: tests/test_cli.py); the pt backend's server always counts
    engine_figures = server.engine.backend == 'pt'
    assert ('vllm:generation_tokens_total{' in metrics) is ('vllm:num_requests_running{' in metrics) is engine_figures
    assert 'http_requests_total{' in metrics or engine_figures
    assert 'version' in httpx.get(f'{root}/version').json()


# bad input: 400 with OpenAI's error JSON naming the field, as vLLM's server; the server keeps serving ----------

BAD = {
    'invalid-json-schema': dict(response_format={'type': 'json_schema', 'json_schema': {
        'name': 'x', 'schema': {'type': 'object', 'properties': {'a': {'type': 'nonsense'}}}}}),
    'unknown-tool-choice': dict(tools=[WEATHER_TOOL], tool_choice={'type': 'function', 'function': {'name': 'get_time'}}),
    'malformed-function': dict(tools=[{'type': 'function', 'function': {'description': 'no name'}}]),
    'regex-and-choice': dict(extra_body={'structured_outputs': {'regex': 'a+', 'choice': ['a']}}),
}


@pytest.mark.parametrize('name', list(BAD))
def test_bad_structured_outputs_and_tools_are_400s(client, reference, name):
    with pytest.raises(BadRequestError) as ours:
        chat(client, **BAD[name])
    with pytest.raises(BadRequestError):  # vLLM's own server refuses the same request
        chat(OpenAI(api_key='EMPTY', base_url=reference), **BAD[name])
    error = ours.value.body
    assert error['code'] == 400 and error['message']
    assert chat(client).choices[0].message.content.startswith('The capital of Zhejiang is Hangzhou.')


@pytest.mark.parametrize('content', [CAPITAL, 'who are you?', 'What is the capital of Zhejiang? Answer in JSON.'])
def test_the_same_greedy_text_as_vllms_server(client, reference, content):
    ours = chat(client, content, max_tokens=64).choices[0].message.content
    assert ours == chat(OpenAI(api_key='EMPTY', base_url=reference), content, max_tokens=64).choices[0].message.content


# requests that crashed the first server (a fuzz and security probe): each gets the status vLLM's own server
# gives it, never a 5xx, and the same keep-alive connection then serves a good request ------------------------

INF = float('inf')
ODD_REQUESTS = {
    'empty-prompt': ('completions', {'prompt': ''}),
    'an-empty-prompt-in-a-list': ('completions', {'prompt': ['a', '']}),
    'empty-prompt-streamed': ('completions', {'prompt': '', 'stream': True}),
    'no-prompts': ('completions', {'prompt': []}),
    'n-2-default-temperature': ('chat/completions', {'n': 2}),
    'n-2-greedy': ('chat/completions', {'n': 2, 'temperature': 0}),
    'n-64-greedy': ('chat/completions', {'n': 64, 'temperature': 0, 'max_tokens': 4}),
    'n-20000': ('chat/completions', {'n': 20000}),
    'n-1000000': ('chat/completions', {'n': 1000000}),
    'temperature-3': ('chat/completions', {'temperature': 3, 'max_tokens': 8}),
    'temperature-infinity': ('chat/completions', {'temperature': INF}),
    'repetition-penalty-infinity': ('chat/completions', {'repetition_penalty': INF}),
    'seed-2**63': ('chat/completions', {'seed': 2 ** 63}),
    'seed-2**64': ('chat/completions', {'seed': 2 ** 64}),
    'lone-surrogate': ('chat/completions', {'messages': [{'role': 'user', 'content': 'a\ud800b'}]}),
    'image-part': ('chat/completions', {'messages': [{'role': 'user', 'content': [
        {'type': 'text', 'text': 'What is this?'},
        {'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,iVBORw0KGgo='}}]}]}),
    'stream-options-without-stream': ('chat/completions', {'stream_options': {'include_usage': True}}),
    '1000-stop-strings': ('chat/completions', {'stop': [f'stop{i}' for i in range(1000)], 'max_tokens': 8}),
    # where the pt server answered otherwise than vLLM's (this week's probe)
    'role-wizard': ('chat/completions', {'messages': [{'role': 'wizard', 'content': 'Hello!'}]}),
    'content-null': ('chat/completions', {'messages': [{'role': 'user', 'content': None}]}),
    'top-logprobs-without-logprobs': ('chat/completions', {'top_logprobs': 2}),
    'surrogate-in-model': ('chat/completions', {'model': 'tiny\ud800chat'}),
    'logit-bias-past-the-vocabulary': ('chat/completions', {'logit_bias': {'999999': 5}}),  # pt: no logit_bias
    'min-tokens-above-max-tokens': ('chat/completions', {'min_tokens': 32, 'max_tokens': 8}),
    'surrogate-in-stop': ('chat/completions', {'stop': ['a\ud800']}),
    'surrogate-in-stop-streamed': ('completions', {'prompt': 'Hello', 'stop': '\udc00', 'stream': True}),
}


# Where swiftnb's server answers otherwise on purpose: the demo model's generation_config.json says do_sample
# false, which swiftnb reads as transformers does (greedy unless a request gives a temperature), so `n: 2`
# alone asks for two copies of one greedy answer: 400, as vLLM gives for n=2 with temperature 0. vLLM's server
# reads only temperature/top_p/top_k there and samples at temperature 1.
ON_PURPOSE = {'n-2-default-temperature': 400}
# vLLM's server hands a stop string with a lone surrogate to its engine core, whose encoder fails: a 500 (a stream:
# an error event after a 200). swiftnb's request guard answers 400 first, on both backends.
ON_PURPOSE.update({'surrogate-in-stop': 400, 'surrogate-in-stop-streamed': 400})


def _post(http: httpx.Client, base: str, path: str, body: dict) -> tuple[int, str]:
    body = {'model': 'tiny-chat', 'max_tokens': 16, **body}
    if path == 'chat/completions':
        body.setdefault('messages', [{'role': 'user', 'content': CAPITAL}])
    content = json.dumps(body)  # as a client's JSON encoder writes it: Infinity and lone surrogates included
    response = http.post(f'{base}/{path}', content=content, headers={'Content-Type': 'application/json'})
    return response.status_code, response.text


@pytest.mark.parametrize('name', list(ODD_REQUESTS))
def test_odd_requests_get_the_status_vllms_server_gives(server, reference, name):
    path, body = ODD_REQUESTS[name]
    with httpx.Client(timeout=120) as http:
        expected, _ = _post(http, reference, path, body)
        expected = ON_PURPOSE.get(name, expected)
        status, text = _post(http, server.url, path, body)
        assert status < 500 and status == expected, text
        if body.get('stream') and status == 200:
            assert text.rstrip().endswith('data: [DONE]'), text
        good, answer = _post(http, server.url, 'chat/completions', {'temperature': 0, 'max_tokens': 64})
    assert good == 200 and 'Hangzhou' in answer
