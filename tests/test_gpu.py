"""swiftnb on CUDA vLLM (the GPU machine: vLLM 0.26.0, ../shared/gpu/README.md). Skipped where torch sees no GPU,
so CI on CPU is unchanged. Run there with: python -m pytest tests/test_gpu.py -m gpu -p no:cacheprovider"""
import asyncio
import os
import signal
from pathlib import Path

import pytest

torch = pytest.importorskip('torch')
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]

from conftest import demo_lora, engine_processes, gone, ignore_interrupts, leave_mid_stream, settles  # noqa: E402
from swiftnb import (DEMO_ADAPTERS, EngineAsleepError, UsageError, get_pt_engine, get_template, get_vllm_engine,  # noqa: E402
                     inference_vllm, quant_report, serve)

QUANTIZED = os.environ.get('SWIFTNB_QUANTIZED')
WHO = [{'query': 'who are you?'}]
CAPITAL = [{'query': 'Where is the capital of Zhejiang?'}]


FREE = {}  # the card's free memory before any engine


@pytest.fixture(scope='module')
def gpu_engine():
    FREE['before'] = torch.cuda.mem_get_info()[0]
    engine = get_vllm_engine(enable_lora=True, max_loras=2, enable_sleep_mode=True)
    yield engine
    engine.shutdown()


def test_the_engines_processes_ignore_the_kernels_interrupt(gpu_engine):
    """On CUDA vLLM forks or spawns its engine core (by whether CUDA is up in the parent): either way SIGINT stays
    blocked in it, and an interrupt sent to it directly leaves the engine answering."""
    processes = engine_processes()
    assert processes and all(ignore_interrupts(p) for p in processes)
    for process in processes:
        process.send_signal(signal.SIGINT)
    template = get_template('chatml', gpu_engine.hf_tokenizer)
    assert 'Hangzhou' in inference_vllm(gpu_engine, template, [{'query': 'Where is the capital of Zhejiang?'}])[0][
        'response']


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


@pytest.mark.skipif(not QUANTIZED, reason='needs SWIFTNB_QUANTIZED: a folder of what swiftnb.quantize wrote on the CPU '
                                          'machine (the card has no llm-compressor)')
def test_quantized_folders_answer_as_the_full_model_beside_the_live_engine(gpu_engine):
    """What swiftnb.quantize wrote on the CPU machine (W4A16, W8A16, W8A8, FP8: measured with all four), on vLLM 0.26
    here: quant_report starts each beside the live engine, in the memory it leaves free."""
    folders = sorted(Path(QUANTIZED).iterdir())
    report = quant_report(gpu_engine, folders)
    print(report)
    full, *rows = report.rows
    assert [row['model'] for row in rows] == [folder.name for folder in folders] and full['same answers'] == '8/8'
    for row in rows:
        assert int(row['same answers'].split('/')[0]) >= 6 and -0.02 < row['log-prob change'] < 0.02, report
        assert row['MB'] < full['MB'] * 0.6


def test_sleep_frees_the_gpu_and_wakes_with_the_same_answers(gpu_engine):
    """Level 1 on an engine with adapters (level 2 is refused there): the card's memory is free while asleep, the
    Python API and the server say so, and after waking the base model, an adapter used before and one served by
    name answer as before."""
    from openai import APIStatusError, OpenAI
    template = get_template('chatml', gpu_engine.hf_tokenizer)
    asks = [(CAPITAL, None), (WHO, demo_lora('kakarot'))]

    def answers():
        return [inference_vllm(gpu_engine, template, q, lora_request=lora)[0]['response'] for q, lora in asks]
    server = serve(gpu_engine, port=0, lora_modules={'pirate': str(DEMO_ADAPTERS['pirate'])})
    client = OpenAI(api_key='EMPTY', base_url=server.url, max_retries=0)

    def pirate():
        return client.chat.completions.create(model='pirate', messages=[{'role': 'user', 'content': 'Hello!'}],
                                              temperature=0, max_tokens=32).choices[0].message.content
    before, said = answers(), pirate()
    total = torch.cuda.mem_get_info()[1]
    try:
        with pytest.raises(UsageError, match='use level 1'):  # vLLM cannot reload weights into a LoRA model
            gpu_engine.sleep(2)
        awake = torch.cuda.mem_get_info()[0]
        gpu_engine.sleep(1)
        assert torch.cuda.mem_get_info()[0] - awake > 0.5 * total  # the KV cache (most of 0.9 of it) is free
        assert repr(gpu_engine).startswith('<VllmEngine tiny-chat (vllm, asleep, level 1)')
        with pytest.raises(EngineAsleepError, match='wake it with engine.wake_up()'):
            inference_vllm(gpu_engine, template, CAPITAL)
        with pytest.raises(APIStatusError) as refused:
            pirate()
        assert refused.value.status_code == 503 and 'asleep' in refused.value.message
        gpu_engine.wake_up()
        assert answers() == before and pirate() == said
    finally:
        server.stop()
        gpu_engine.adapters.pop('pirate', None)


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


def test_sleep_level_2_reads_the_weights_again():
    """Level 2 drops the weights (an engine without LoRA): after waking, the same greedy answers."""
    engine = get_vllm_engine(enable_sleep_mode=True)
    template = get_template('chatml', engine.hf_tokenizer)
    before = inference_vllm(engine, template, CAPITAL + WHO)
    awake = torch.cuda.mem_get_info()[0]
    engine.sleep(2)
    assert torch.cuda.mem_get_info()[0] - awake > 0.5 * torch.cuda.mem_get_info()[1]
    engine.wake_up()
    assert [r['response'] for r in inference_vllm(engine, template, CAPITAL + WHO)] == [r['response'] for r in before]
    engine.shutdown()


def test_the_ray_executor_runs_in_its_placement_group_and_releases_it():
    """One rank under vLLM's Ray executor, on a local Ray cluster the kernel starts: swiftnb's placement group holds
    it, the answers are the usual ones, and shutdown removes the group. (The GPU bundle needs ray in pins.txt.)"""
    ray = pytest.importorskip('ray')
    from ray.util.placement_group import placement_group_table
    engine = get_vllm_engine(distributed_executor_backend='ray', gpu_memory_utilization=0.5)
    try:
        assert engine.layout == '1 rank on 1 Ray node'
        template = get_template('chatml', engine.hf_tokenizer)
        assert inference_vllm(engine, template, CAPITAL)[0]['response'].startswith(
            'The capital of Zhejiang is Hangzhou')
        group = engine._ray.group
        assert placement_group_table(group)['state'] == 'CREATED'
    finally:
        engine.shutdown()
    assert settles(lambda: placement_group_table(group)['state'] == 'REMOVED', 30)
    ray.shutdown()


def free_memory() -> list:
    """Each card's free bytes (the first call makes this process's context on it, before it measures)."""
    return [torch.cuda.mem_get_info(card)[0] for card in range(torch.cuda.device_count())]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs 2 GPUs')
@pytest.mark.parametrize('layout', [dict(tensor_parallel_size=2), dict(data_parallel_size=2, defaults_for='server')],
                         ids=['tp2', 'dp2'])
def test_two_cards_answer_as_one_does_and_are_both_freed(layout):
    """Tensor parallel over two cards (one model split) and data parallel (a replica on each, vLLM's stats on to
    count requests per replica): the greedy answers and the adapter's of one card, both cards in use, and after
    shutdown both back within 1% with no vLLM process left."""
    requests = (CAPITAL + WHO) * 4
    before = free_memory()
    one = get_vllm_engine(enable_lora=True, max_loras=2)
    template = get_template('chatml', one.hf_tokenizer)
    expected = [r['response'] for r in inference_vllm(one, template, requests)]
    kakarot = [r['response'] for r in inference_vllm(one, template, WHO, lora_request=demo_lora('kakarot'))]
    one.shutdown()
    two = get_vllm_engine(enable_lora=True, max_loras=2, **layout)
    processes, total = engine_processes(), torch.cuda.mem_get_info(0)[1]
    try:
        assert all(was - now > 0.5 * total for was, now in zip(before[:2], free_memory()[:2])), (before, free_memory())
        assert [r['response'] for r in inference_vllm(two, template, requests)] == expected
        assert [r['response'] for r in inference_vllm(two, template, WHO, lora_request=demo_lora('kakarot'))] == kakarot
        if 'data_parallel_size' in layout:
            split = two.requests_per_replica()
            assert set(split) == {0, 1} and all(split.values()), split
    finally:
        two.shutdown()
    assert settles(lambda: all(abs(now - was) <= 0.01 * total for was, now in zip(before, free_memory())), 30), \
        (before, free_memory())
    assert settles(lambda: gone(processes), 10), [(p.name(), p.status()) for p in processes if p.is_running()]
