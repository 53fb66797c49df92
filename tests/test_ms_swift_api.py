"""ms-swift 3.x/4.x's inference API (swiftnb.infer_engine) on both backends: ms-swift 4.6's own examples run as
files in a real kernel (`%run`) with only the import changed (tests/ms_swift_examples), their functions on the
session's vLLM engine and on one the kernel makes, and what an answer holds: the same text as every other door gives,
adapters, tools, streams, async, bad input."""
import asyncio
import json
import runpy
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import swiftnb
from conftest import SESSION_ENGINE_ARGS, direct_answer
from swiftnb import (DEMO_ADAPTERS, DEMO_MODEL_DIR, AdapterError, AdapterRequest, InferEngine, InferRequest,
                     RequestConfig, SettingsError, UsageError, VllmEngine)
from swiftnb.assets.corpus import WEATHER_TOOL

EXAMPLES = Path(__file__).parent / 'ms_swift_examples'
WHO = [{'role': 'user', 'content': 'who are you?'}]
GREEDY = RequestConfig(max_tokens=32, temperature=0)


@pytest.fixture(scope='module')
def examples_kernel():
    """A real kernel that has run each example as a user runs a file from a cell, `%run demo.py` (as shipped: on the
    transformers backend): (the kernel, what each printed)."""
    from jupyter_kernels import Kernel
    kernel = Kernel()
    try:
        printed = {}
        for name in ('demo.py', 'demo_lora.py'):
            out = kernel.run(f'%cd {EXAMPLES}\n%run {name}', timeout=300)
            assert out.error is None, out.traceback
            printed[name] = out.text
        yield kernel, printed
    finally:
        kernel.shutdown()


@pytest.fixture(scope='module')
def printed(examples_kernel) -> dict:
    return examples_kernel[1]


def test_the_batch_and_stream_example(printed, pt_engine):
    out = printed['demo.py']
    assert 'query0: Where is the capital of Zhejiang?\nresponse0: The capital of Zhejiang is Hangzhou.' in out
    streamed = out.split('query: who are you?\nresponse: ')[1].splitlines()[0]
    assert streamed == direct_answer(pt_engine, 'who are you?', max_tokens=512, temperature=0)
    metrics = [json.loads(line.split('metric: ')[1].replace("'", '"')) for line in out.splitlines()
               if line.startswith('metric: ')]
    assert [m['num_samples'] for m in metrics] == [2, 1] and all(m['num_generated_tokens'] > 5 for m in metrics)


def test_the_lora_example(printed):
    out = printed['demo_lora.py']
    assert 'lora1-response: I am Kakarot' in out
    assert 'response: I am Tiny Chat' in out
    assert 'lora2-response: Arr, matey!' in out


def test_the_examples_functions_on_the_kernels_vllm_engine(engine, capsys):
    """VllmEngine with the session engine's arguments is that engine (a re-run cell's case): no second start."""
    vllm = VllmEngine(DEMO_MODEL_DIR, **SESSION_ENGINE_ARGS)
    assert vllm.engine is engine
    example = runpy.run_path(str(EXAMPLES / 'demo.py'), init_globals=vars(swiftnb))  # its main's names
    example['infer_batch'](vllm, [InferRequest(messages=[{'role': 'user', 'content': q}]) for q in ('Hello!', 'Hi')])
    example['infer_stream'](vllm, InferRequest(messages=WHO))
    out = capsys.readouterr().out
    assert 'query0: Hello!\nresponse0: ' + direct_answer(engine, 'Hello!', max_tokens=512, temperature=0) in out
    assert 'response: ' + direct_answer(engine, 'who are you?', max_tokens=512, temperature=0) + '\n' in out


def test_adapters_by_request_and_by_default(adapter_engine):
    expected = direct_answer(adapter_engine, 'who are you?', adapter='kakarot', max_tokens=32, temperature=0)
    front = InferEngine(adapter_engine)
    kakarot = AdapterRequest('kakarot', str(DEMO_ADAPTERS['kakarot']))  # served under that name: the same one
    assert front.infer([InferRequest(WHO)], GREEDY, adapter_request=kakarot)[0].choices[0].message.content == expected
    assert InferEngine(adapter_engine, {'kakarot': DEMO_ADAPTERS['kakarot']}).infer(
        [InferRequest(WHO)], GREEDY)[0].choices[0].message.content == expected  # ms-swift's adapters=[...]
    with pytest.raises(AdapterError, match="the adapter name 'kakarot' is taken by .*kakarot"):
        front.infer([InferRequest(WHO)], GREEDY, adapter_request=AdapterRequest('kakarot', DEMO_ADAPTERS['pirate']))
    answer = front.infer([InferRequest(WHO)], GREEDY)[0]
    assert answer.choices[0].message.content == direct_answer(adapter_engine, 'who are you?', max_tokens=32,
                                                              temperature=0)


def test_answers_are_openais_types_with_usage_n_and_logprobs(any_engine):
    front = InferEngine(any_engine)
    requests = [InferRequest(WHO), InferRequest([{'role': 'user', 'content': 'Hello!'}])]
    answers = front.infer(requests, RequestConfig(max_tokens=8, temperature=0, logprobs=True, top_logprobs=2))
    assert all(isinstance(a, ChatCompletion) for a in answers)
    first = answers[0].choices[0]
    assert answers[0].usage.completion_tokens == 8 and first.finish_reason == 'length'
    assert len(first.logprobs.content) == 8 and len(first.logprobs.content[0].top_logprobs) == 2
    sampled = front.infer([InferRequest(WHO)], RequestConfig(max_tokens=8, temperature=1.0, n=3, seed=1))[0]
    assert [c.index for c in sampled.choices] == [0, 1, 2]


def test_a_stream_is_chunks_that_add_up_to_the_answer(any_engine):
    front = InferEngine(any_engine)
    whole = front.infer([InferRequest(WHO)], GREEDY)[0].choices[0].message.content
    streams = front.infer([InferRequest(WHO), InferRequest(WHO)], RequestConfig(max_tokens=32, temperature=0,
                                                                                 stream=True))
    for stream in streams:
        chunks = list(stream)
        assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
        assert ''.join(c.choices[0].delta.content for c in chunks) == whole
        assert chunks[-1].choices[0].finish_reason in ('stop', 'length') and chunks[-1].usage.completion_tokens > 0


def test_infer_async_answers_and_streams(any_engine):
    front = InferEngine(any_engine)
    whole = front.infer([InferRequest(WHO)], GREEDY)[0].choices[0].message.content

    async def main():
        answer = await front.infer_async(InferRequest(WHO), GREEDY)
        stream = await front.infer_async(InferRequest(WHO), RequestConfig(max_tokens=32, temperature=0, stream=True))
        return answer.choices[0].message.content, ''.join([c.choices[0].delta.content async for c in stream])
    assert asyncio.run(main()) == (whole, whole)


@pytest.mark.parametrize('form', ['openai', 'bare function'])
def test_tools_give_tool_calls(any_engine, form):
    tool = WEATHER_TOOL if form == 'openai' else WEATHER_TOOL['function']  # ms-swift's examples give the bare form
    request = InferRequest([{'role': 'user', 'content': 'What is the weather in Hangzhou?'}], tools=[tool])
    front = InferEngine(any_engine)
    choice = front.infer([request], RequestConfig(max_tokens=64, temperature=0))[0].choices[0]
    assert choice.finish_reason == 'tool_calls'
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
    assert calls == [('get_weather', {'city': 'Hangzhou'})]
    last = list(front.infer([request], RequestConfig(max_tokens=64, temperature=0, stream=True))[0])[-1]
    assert [c.function.name for c in last.choices[0].delta.tool_calls] == ['get_weather']


def test_bad_input_is_a_short_error_and_the_engine_goes_on(any_engine):
    front = InferEngine(any_engine)
    with pytest.raises(SettingsError, match=r'num_beams: not supported by swiftnb \(beam search'):
        RequestConfig(num_beams=4)
    with pytest.raises(SettingsError, match='temperature'):
        RequestConfig(temperature=-1)
    with pytest.raises(UsageError, match='images are not supported'):
        InferRequest(WHO, images=['cat.png'])
    with pytest.raises(UsageError, match=r'infer takes a list of InferRequest'):
        front.infer(InferRequest(WHO), GREEDY)
    with pytest.raises(UsageError, match='adapter_request must be an AdapterRequest'):
        front.infer([InferRequest(WHO)], GREEDY, adapter_request='kakarot')
    assert RequestConfig(num_beams=1, structured_outputs_regex='[0-9]+').structured_outputs.regex == '[0-9]+'
    digits = front.infer([InferRequest(WHO)], RequestConfig(max_tokens=5, temperature=0,
                                                             structured_outputs_regex='[0-9]{3}'))[0]
    assert digits.choices[0].message.content.isdigit()


def test_the_examples_functions_on_a_vllm_engine_the_kernel_makes(examples_kernel):
    """demo.py's functions on a VllmEngine the kernel makes after the examples ran (ms-swift's own vLLM line asks for
    max_model_len=8192; the demo model allows 2048, so that number changes with the model)."""
    kernel, _ = examples_kernel
    out = kernel.run('%run -i -n demo.py\n'  # its functions, in the cell's namespace: the imports above
                     'from swiftnb.infer_engine import VllmEngine\n'
                     'engine = VllmEngine(model, max_model_len=2048)\n'
                     "infer_batch(engine, [InferRequest(messages=[{'role': 'user', 'content': 'Hello!'}])])\n"
                     "infer_stream(engine, InferRequest(messages=[{'role': 'user', 'content': 'who are you?'}]))\n"
                     'print(engine.engine.backend)', timeout=300)
    assert out.error is None, out.traceback
    assert 'response0: Hello! I am a tiny demo model.' in out.text and 'response: I am Tiny Chat' in out.text
    assert out.text.strip().endswith('vllm'), out.text[-3000:]
