# ms-swift 4.6's examples/infer/demo.py (modelscope/ms-swift at 3602360), run by tests/test_ms_swift_api.py.
# Changed for swiftnb, and only this: `from swift ...` imports are `from swiftnb ...`; the model's hub id and the hub
# dataset are the demo's (no hub here).
# Copyright (c) ModelScope Contributors. All rights reserved.
import os
from typing import List

os.environ['CUDA_VISIBLE_DEVICES'] = '0'


def infer_batch(engine: 'InferEngine', infer_requests: List['InferRequest']):
    request_config = RequestConfig(max_tokens=512, temperature=0)
    metric = InferStats()
    resp_list = engine.infer(infer_requests, request_config, metrics=[metric])
    query0 = infer_requests[0].messages[0]['content']
    print(f'query0: {query0}')
    print(f'response0: {resp_list[0].choices[0].message.content}')
    print(f'metric: {metric.compute()}')
    # metric.reset()  # reuse


def infer_stream(engine: 'InferEngine', infer_request: 'InferRequest'):
    request_config = RequestConfig(max_tokens=512, temperature=0, stream=True)
    metric = InferStats()
    gen_list = engine.infer([infer_request], request_config, metrics=[metric])
    query = infer_request.messages[0]['content']
    print(f'query: {query}\nresponse: ', end='')
    for resp in gen_list[0]:
        if resp is None:
            continue
        print(resp.choices[0].delta.content, end='', flush=True)
    print()
    print(f'metric: {metric.compute()}')


if __name__ == '__main__':
    from swiftnb import DEMO_MODEL_DIR, InferEngine, InferRequest, InferStats, RequestConfig, TransformersEngine
    model = DEMO_MODEL_DIR
    infer_backend = 'transformers'

    if infer_backend == 'transformers':
        engine = TransformersEngine(model, max_batch_size=64)
    elif infer_backend == 'vllm':
        from swiftnb.infer_engine import VllmEngine
        engine = VllmEngine(model, max_model_len=8192)
    elif infer_backend == 'sglang':
        from swiftnb.infer_engine import SglangEngine
        engine = SglangEngine(model)
    elif infer_backend == 'lmdeploy':
        from swiftnb.infer_engine import LmdeployEngine
        engine = LmdeployEngine(model)

    # Here, `load_dataset` is used for convenience; `infer_batch` does not require creating a dataset.
    dataset = [{'messages': [{'role': 'user', 'content': q}]} for q in ('Where is the capital of Zhejiang?', 'Hello!')]
    print(f'dataset: {dataset}')
    infer_requests = [InferRequest(**data) for data in dataset]
    infer_batch(engine, infer_requests)

    messages = [{'role': 'user', 'content': 'who are you?'}]
    infer_stream(engine, InferRequest(messages=messages))
