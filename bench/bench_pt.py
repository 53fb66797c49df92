"""The pt backend: 16 concurrent requests through the pt engine vs plain one-at-a-time `generate`
on the same model, alternating, several repetitions; transformers' own continuous batching
(`generate_batch`) beside them. With --checks, also: base and adapter requests mixed in one batch
answer as each does alone, and shutdown() gives back the model's memory.

    .venv/bin/python bench/bench_pt.py [--device cpu|cuda] [--model demo|qwen2-0.5b-random]
                                       [--dtype auto|float32|bfloat16] [--requests 16] [--new_tokens 128]
                                       [--reps 3] [--checks]

`qwen2-0.5b-random` is Qwen2-0.5B's configuration with random weights (and two random LoRA
adapters), built on the spot: no download, real size.
"""
import argparse
import asyncio
import gc
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from swiftnb import DEMO_ADAPTERS, DEMO_MODEL_DIR, GenerationConfig, LoRARequest, get_pt_engine, get_template
from swiftnb import inference_vllm
from swiftnb.engine.base import Choice
from random_model import random_qwen2

QUESTIONS = ['Hello!', 'Where is the capital of Zhejiang?', 'who are you?', "What to do if I can't fall asleep?"]


def plain_generate(model, prompts, new_tokens):
    """One request at a time, as a notebook does without a serving engine."""
    with torch.inference_mode():
        for ids in prompts:
            ids = torch.tensor([ids], device=model.device)
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)


def plain_generate_seconds(model_dir, dtype, device, prompts, new_tokens) -> float:
    """plain_generate timed in a process of its own, after a warm-up there.

    Why another process: torch's CPU threads are OpenMP teams, one per calling thread. Once the
    engine's batch thread and this one both have a team, four threads share two cores here and
    OpenMP stops spinning between operations, which slowed both sides by about a third. Each side
    gets the process layout it has in real use: generate() alone in a kernel, the engine's thread
    alone doing torch work.
    """
    job = json.dumps({'model_dir': model_dir, 'dtype': str(dtype).replace('torch.', ''), 'device': str(device),
                      'prompts': prompts, 'new_tokens': new_tokens})
    out = subprocess.run([sys.executable, __file__, '--plain_generate_job', job], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _plain_generate_job(job: str) -> None:
    from transformers import AutoModelForCausalLM
    job = json.loads(job)
    model = AutoModelForCausalLM.from_pretrained(job['model_dir'], dtype=getattr(torch, job['dtype']))
    model.to(job['device']).eval()
    plain_generate(model, job['prompts'][:2], job['new_tokens'])  # warm-up
    start = time.perf_counter()
    plain_generate(model, job['prompts'], job['new_tokens'])
    if job['device'].startswith('cuda'):
        torch.cuda.synchronize()
    print(time.perf_counter() - start)


def throughput(engine, template, args) -> dict:
    """tokens/s of each path (median over args.reps), for args.requests x args.new_tokens."""
    requests = [{'query': f'{q} ({i})'} for i, q in zip(range(args.requests), QUESTIONS * args.requests)]
    prompts = [template.encode(r['query']) for r in requests]
    config = {'max_new_tokens': args.new_tokens, 'ignore_eos': True}
    dtype = next(engine.model.parameters()).dtype

    def engine_seconds():
        start = time.perf_counter()
        inference_vllm(engine, template, requests, generation_config=config)
        return time.perf_counter() - start
    engine_seconds()  # warm-up
    times = {'pt engine, all at once': [], 'plain generate, one at a time': []}
    for _ in range(args.reps):
        times['pt engine, all at once'].append(engine_seconds())
        times['plain generate, one at a time'].append(
            plain_generate_seconds(engine.model_dir, dtype, engine.device, prompts, args.new_tokens))
    tokens = args.requests * args.new_tokens
    rates = {name: tokens / statistics.median(t) for name, t in times.items()}
    if args.generate_batch:
        rates["transformers' generate_batch"] = generate_batch_rate(engine.model_dir, dtype, engine.device, prompts,
                                                                    args.new_tokens)
    return rates


def measure(requests: int = 16, new_tokens: int = 128, reps: int = 3, model: Optional[str] = None) -> dict:
    """On the CPU (the embedded model unless `model`): pt engine vs one-at-a-time generate (tokens/s, ratio)."""
    args = argparse.Namespace(requests=requests, new_tokens=new_tokens, reps=reps, generate_batch=False)
    engine = get_pt_engine(model_id_or_path=model)
    try:
        rates = throughput(engine, get_template('chatml', engine.hf_tokenizer), args)
    finally:
        engine.shutdown()
    engine_rate, plain_rate = rates['pt engine, all at once'], rates['plain generate, one at a time']
    return {'pt_tok_s': engine_rate, 'generate_tok_s': plain_rate, 'ratio': engine_rate / plain_rate}


def generate_batch_rate(model_dir, dtype, device, prompts, new_tokens) -> float:
    """transformers' continuous batching on the same prompts, once (it warms up inside), on its own
    copy of the model with transformers' default attention (it takes no other)."""
    from transformers import AutoModelForCausalLM, GenerationConfig as HFConfig
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    config = HFConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    start = time.perf_counter()
    out = model.generate_batch(prompts, generation_config=config, progress_bar=False)
    return sum(len(o.generated_tokens) for o in out.values()) / (time.perf_counter() - start)


def mixed_adapters_check(engine, template, adapters) -> tuple[int, int]:
    """(mismatches, requests): each request alone, then all together with staggered arrivals (the check of
    tests/test_engine_pt.py, here for any model and device)."""
    loras = [None] + [LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(adapters.items())]
    configs = [GenerationConfig(max_new_tokens=48, temperature=0),
               GenerationConfig(max_new_tokens=48, temperature=1.5, seed=11)]
    jobs = [(q, lora, c) for q in QUESTIONS for lora in loras for c in configs]

    async def one(query, lora, config, delay=0.0):
        await asyncio.sleep(delay)
        completion = Choice()
        async for delta in engine.stream(template.encode(query), config, lora):
            completion.add(delta)
        return completion.token_ids

    async def run():
        alone = [await one(*job) for job in jobs]
        mismatches = 0
        for trial in range(3):
            delays = random.Random(trial).choices([0.0, 0.02, 0.05, 0.1], k=len(jobs))
            mixed = await asyncio.gather(*(one(*job, d) for job, d in zip(jobs, delays)))
            mismatches += sum(a != m for a, m in zip(alone, mixed))
        return mismatches, 3 * len(jobs)
    return engine.loop.run(run())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--model', choices=['demo', 'qwen2-0.5b-random'], default='demo')
    parser.add_argument('--dtype', default='auto')
    parser.add_argument('--requests', type=int, default=16)
    parser.add_argument('--new_tokens', type=int, default=128)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--generate_batch', action='store_true', help="also time transformers' generate_batch")
    parser.add_argument('--checks', action='store_true', help='mixed-adapter correctness and memory release')
    parser.add_argument('--plain_generate_job', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_generate_job:
        return _plain_generate_job(args.plain_generate_job)

    folder = Path(tempfile.mkdtemp(prefix='swiftnb-bench-'))
    model_dir, adapters = str(DEMO_MODEL_DIR), {name: str(path) for name, path in DEMO_ADAPTERS.items()}
    if args.model == 'qwen2-0.5b-random':
        model_dir, adapters = random_qwen2(folder, '0.5b', tokenizer='demo', adapters=['lora-a', 'lora-b'])
    cuda = args.device.startswith('cuda')
    before = torch.cuda.memory_allocated() if cuda else 0
    dtype = None if args.dtype == 'auto' else args.dtype
    engine = get_pt_engine(model_id_or_path=str(model_dir), torch_dtype=dtype, device=args.device,
                           enable_lora=args.checks)
    template = get_template('chatml', engine.hf_tokenizer)
    rates = throughput(engine, template, args)
    print(f'\n{args.requests} requests x {args.new_tokens} new tokens, {args.model} on {engine.device}, '
          f'median of {args.reps}:')
    for name, rate in rates.items():
        print(f'  {name:34s} {rate:9.1f} tokens/s')
    ratio = rates['pt engine, all at once'] / rates['plain generate, one at a time']
    print(f'  ratio pt engine / plain generate:  {ratio:.2f}x')
    if args.checks:
        mismatches, total = mixed_adapters_check(engine, template, adapters)
        print(f'mixed base/adapter batches: {mismatches} of {total} requests differ from the same request alone')
        loaded = torch.cuda.memory_allocated() if cuda else 0
        engine.shutdown()
        del engine
        gc.collect()
        if cuda:
            after = torch.cuda.memory_allocated()
            print(f'CUDA memory allocated: before the engine {before / 2**20:.1f} MiB, with it '
                  f'{loaded / 2**20:.1f} MiB, after shutdown() {after / 2**20:.1f} MiB')


if __name__ == '__main__':
    main()
