"""A quantized model against its full one on the card: weights' memory and decode speed at W4A16 and FP8 vs bf16.

    python bench/gpu_quantized.py --w4a16 DIR [--batch 64] [--new_tokens 256] [--reps 3] [--out DIR]

The full model is bench/random_model's Qwen2-0.5B (random weights, bf16) with the demo tokenizer (vocab 1280), made
here with the seed that made DIR's full model on the CPU machine, where `swiftnb.quantize(model, bits=4)` wrote DIR
(GPTQ W4A16, group 128: the card has no llm-compressor). The rows: bf16; DIR; and FP8 as vLLM makes it from the bf16
folder at load (quantization='fp8'): a 0.5B FP8 folder is 360 MB, more than the calls to the card can carry, and the
FP8 folders swiftnb.quantize writes are served on the card by tests/test_gpu.py. Each row in a fresh process (its own
engine, 0.5 of the card): the weights' memory vLLM reports at load, then inference_vllm's decode speed (greedy,
ignore_eos, --new_tokens each) at batch 1 and at --batch, the median of --reps (random weights answer noise, so
how close the answers are is measured on trained models: quant_report, tests/test_gpu.py). The bf16 model's checksum,
printed here and on the CPU machine, says whether the seed made the same weights there. Writes DIR/gpu_quantized.json
and .md as each row ends.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from random_model import random_qwen2  # noqa: E402

ROW = '''
import json, re, statistics, sys, time
sys.path.insert(0, sys.argv[2])
from bench_batch import bench_queries
from swiftnb import get_template, get_vllm_engine, inference_vllm, logs
a = json.loads(sys.argv[1])
engine = get_vllm_engine(model_id_or_path=a['model'], gpu_memory_utilization=0.5, **a['options'])
loaded = re.findall(r'Model loading took ([0-9.]+) GiB', logs.log_file().read_text(errors='replace'))
template = get_template('auto', engine.hf_tokenizer)
row = {'weights_GiB': float(loaded[-1]) if loaded else None}
for batch in (1, a['batch']):
    requests = [{'query': q} for q in bench_queries(batch)]
    config = {'max_new_tokens': a['new_tokens'], 'ignore_eos': True}
    inference_vllm(engine, template, requests, generation_config=config)  # warm-up
    seconds = []
    for _ in range(a['reps']):
        began = time.perf_counter()
        inference_vllm(engine, template, requests, generation_config=config)
        seconds.append(time.perf_counter() - began)
    row[f'tok/s at {batch}'] = round(batch * a['new_tokens'] / statistics.median(seconds), 1)
print('ROW ' + json.dumps(row), flush=True)
engine.shutdown()
'''


def checksum(model_dir: Path) -> float:
    """The sum of one layer's weights: equal here and on the card where the seed made the same model."""
    from safetensors import safe_open
    with safe_open(str(next(model_dir.glob('*.safetensors'))), 'pt') as weights:
        return float(weights.get_tensor('model.layers.0.mlp.down_proj.weight').float().sum())


def markdown(rows: list) -> str:
    full = rows[0]
    batch = [k for k in full if k.startswith('tok/s at ')][-1]
    lines = [f'| model | weights GiB | tok/s at 1 | tok/s at {batch[9:]} |', '|---|---|---|---|']
    for r in rows:
        one = r['tok/s at 1']
        lines.append(f"| {r['model']} | {r['weights_GiB']} | {one} ({one / full['tok/s at 1']:.2f}x)"
                     f" | {r[batch]} ({r[batch] / full[batch]:.2f}x) |")
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--w4a16', required=True, help="swiftnb.quantize's W4A16 folder of the random 0.5B")
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--new_tokens', type=int, default=256)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--out', default='.')
    args = parser.parse_args()
    full_dir, _ = random_qwen2(Path(tempfile.mkdtemp(prefix='swiftnb-q05-')), '0.5b', tokenizer='demo', vocab=1280)
    print(f'bf16 model: {full_dir} (checksum {checksum(full_dir):.6f})', flush=True)
    rows = []
    for name, model, options in (('bf16', full_dir, {}), ('W4A16 (swiftnb.quantize, GPTQ)', Path(args.w4a16), {}),
                                 ("FP8 (vLLM's, at load)", full_dir, {'engine_kwargs': {'quantization': 'fp8'}})):
        given = {'model': str(model), 'options': options, 'batch': args.batch, 'new_tokens': args.new_tokens,
                 'reps': args.reps}
        run = subprocess.run([sys.executable, '-c', ROW, json.dumps(given), str(HERE)], capture_output=True,
                             text=True, timeout=500)
        found = [line[4:] for line in run.stdout.splitlines() if line.startswith('ROW ')]
        if not found:
            raise RuntimeError(f'{name}: exit {run.returncode}\n{run.stderr[-4000:]}')
        rows.append({'model': name, **json.loads(found[0])})
        print(rows[-1], flush=True)
        Path(args.out, 'gpu_quantized.json').write_text(json.dumps(rows, indent=1))
        Path(args.out, 'gpu_quantized.md').write_text(markdown(rows) + '\n')
    print(markdown(rows))


if __name__ == '__main__':
    main()
