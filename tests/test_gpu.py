"""swiftnb on CUDA vLLM (the GPU machine: vLLM 0.26.0, ../shared/gpu/README.md). Skipped where torch sees no GPU,
so CI on CPU is unchanged. Run there with: python -m pytest tests/test_gpu.py -m gpu -p no:cacheprovider"""
import asyncio

import pytest

torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]

from conftest import demo_lora, leave_mid_stream, settles  # noqa: E402
from swiftnb import DEMO_ADAPTERS, get_pt_engine, get_template, get_vllm_engine, inference_vllm, serve  # noqa: E402

WHO = [{'query': 'who are you?'}]
CAPITAL = [{'query': 'Where is the capital of Zhejiang?'}]


FREE = {}  # the card's free memory before any engine


@pytest.fixture(scope='module')
def gpu_engine():
    FREE['before'] = torch.cuda.mem_get_info()[0]
    engine = get_vllm_engine(enable_lora=True, max_loras=2)
    yield engine
    engine.shutdown()


def test_inference_and_adapters(gpu_engine):
    template = get_template('chatml', gpu_engine.hf_tokenizer)
    assert inference_vllm(gpu_engine, template, CAPITAL)[0]['response'].startswith('The capital of Zhejiang is Hangzhou')
    kakarot = inference_vllm(gpu_engine, template, WHO, lora_request=demo_lora('kakarot'))[0]['response']
    assert kakarot.startswith('I am Kakarot')
    assert gpu_engine.num_running == 0  # vLLM 0.26 has no AsyncLLM.get_num_unfinished_requests (vllm_compat.py)


def test_mixed_adapters_in_flight_equal_each_alone(gpu_engine):
    """No adapter gate on CUDA (only vLLM's CPU backend mixes adapters up): 96 requests in flight at once."""
    template = get_template('chatml', gpu_engine.hf_tokenizer)
    assert gpu_engine.client is gpu_engine.llm
    loras = [None, demo_lora('kakarot'), demo_lora('pirate')]
    alone = [inference_vllm(gpu_engine, template, WHO, lora_request=lora)[0]['response'] for lora in loras]

    async def together():
        from swiftnb import inference_vllm_async
        jobs = [inference_vllm_async(gpu_engine, template, WHO, lora_request=loras[i % 3]) for i in range(96)]
        return [r[0]['response'] for r in await asyncio.gather(*jobs)]
    assert asyncio.run(together()) == [alone[i % 3] for i in range(96)]


def test_serve_with_the_openai_sdk_and_disconnect_aborts(gpu_engine):
    from openai import OpenAI
    server = serve(gpu_engine, port=0, lora_modules={name: str(path) for name, path in DEMO_ADAPTERS.items()})
    try:
        client = OpenAI(api_key='EMPTY', base_url=server.url)
        answer = client.chat.completions.create(model='pirate', messages=[{'role': 'user', 'content': 'Hello!'}],
                                                temperature=0, max_tokens=32)
        assert answer.choices[0].message.content.startswith('Arr')
        leave_mid_stream(server.url, gpu_engine)
    finally:
        server.stop()
        for name in DEMO_ADAPTERS:
            gpu_engine.adapters.pop(name, None)


def test_replace_frees_the_gpu_and_the_pt_backend_runs_on_cuda(gpu_engine):
    total = torch.cuda.mem_get_info()[1]
    assert FREE['before'] - torch.cuda.mem_get_info()[0] > 0.5 * total  # vLLM holds the card (0.9 of it)
    pt = get_pt_engine()  # replaces the vLLM engine, which gives the card back
    assert gpu_engine.closed and pt.device.type == 'cuda'
    template = get_template('chatml', pt.hf_tokenizer)
    assert inference_vllm(pt, template, CAPITAL)[0]['response'].startswith('The capital of Zhejiang is Hangzhou')
    pt.shutdown()
    assert settles(lambda: abs(torch.cuda.mem_get_info()[0] - FREE['before']) <= 0.01 * total, 30), \
        (FREE['before'], torch.cuda.mem_get_info())
