"""`make bench`: every swiftnb layer against its raw peer, measured in one run, as one table and a plot.

    .venv/bin/python bench/run.py [--quick] [--model DIR_OR_HUB_ID]

Rows (each script in bench/ measures one, and runs alone too):
  batch    inference_vllm vs vLLM's LLM.generate                 goal ratio >= 0.97
  stream   inference_stream_vllm_async vs AsyncLLM.generate      goal < 0.2 ms added per token
  serving  swiftnb's server vs vLLM's OpenAI server (vLLM's own serving benchmark), c = 1, 4, 16, 64
                                                                  goal >= 1.0x throughput, TTFT no worse
  reuse    get_vllm_engine with the same arguments again          goal < 50 ms
  widgets  ChatWidget vs the raw stream for one long answer, in a real kernel: frontend messages/s
           and the time it adds to the final text
  pt       the pt engine, 16 concurrent requests, vs one-at-a-time generate

The table is printed last and written into bench/RESULTS.md (between the `make bench` markers, with
the date, machine, versions and command); the serving plot goes to bench/serving_throughput.png.
"""
import argparse
import datetime
import os
import platform
import re
import sys
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault('VLLM_CPU_KVCACHE_SPACE', '2')  # the same KV cache for every engine, as in RESULTS.md

FULL = dict(batch=dict(prompts=64, new_tokens=128, reps=5), stream=dict(streams=16, new_tokens=128, reps=5),
            serving=dict(concurrency=(1, 4, 16, 64), reps=5, num_prompts=64),
            widgets=dict(new_tokens=512, reps=3), pt=dict(requests=16, new_tokens=128, reps=3))
QUICK = dict(batch=dict(prompts=32, new_tokens=64, reps=2), stream=dict(streams=16, new_tokens=64, reps=2),
             serving=dict(concurrency=(1, 4, 16, 64), reps=1, num_prompts=32),
             widgets=dict(new_tokens=512, reps=1), pt=dict(requests=16, new_tokens=64, reps=1))
MARK_START, MARK_END = '<!-- make bench: start -->', '<!-- make bench: end -->'


def goal(met: bool) -> str:
    return 'met' if met else '**MISSED**'


def measure_all(settings: dict, model, bar) -> tuple[list[list[str]], list[dict]]:
    """Run every row; ([row, measured, peer, ratio or difference, goal] ..., serving rows for the plot)."""
    import bench_batch
    import bench_pt
    import bench_serving
    import bench_stream
    import bench_widgets
    from swiftnb import get_vllm_engine
    table = []

    bar.set_description('batch')
    b = bench_batch.measure(**settings['batch'], model=model)
    table.append([f'batch: inference_vllm, {settings["batch"]["prompts"]} prompts x '
                  f'{settings["batch"]["new_tokens"]} tokens', f'{b["tokens"] / b["swiftnb_s"]:.0f} tok/s',
                  f'LLM.generate {b["tokens"] / b["vllm_s"]:.0f} tok/s', f'{b["ratio"]:.3f}x',
                  f'>= 0.97x: {goal(b["ratio"] >= 0.97)}'])
    bar.update()

    bar.set_description('stream')
    s = bench_stream.measure(**settings['stream'], model=model)
    added = s['swiftnb']['itl_ms'] - s['vllm']['itl_ms']
    table.append([f'stream: inference_stream_vllm_async, {settings["stream"]["streams"]} streams',
                  f'TTFT {s["swiftnb"]["ttft_ms"]:.1f} ms, gap {s["swiftnb"]["itl_ms"]:.3f} ms',
                  f'AsyncLLM TTFT {s["vllm"]["ttft_ms"]:.1f} ms, gap {s["vllm"]["itl_ms"]:.3f} ms',
                  f'{added:+.3f} ms/token', f'< 0.2 ms/token: {goal(added < 0.2)}'])
    table.append(['reuse: get_vllm_engine, same arguments', f'{b["reuse_ms"]:.3f} ms', '', '',
                  f'< 50 ms: {goal(b["reuse_ms"] < 50)}'])
    get_vllm_engine(model_id_or_path=model).shutdown()  # the live one; the next rows start engines of their own
    bar.update()

    bar.set_description('serving')
    serving = bench_serving.measure(**settings['serving'], model=model, progress=bar.write)
    for r in serving:
        ratio = r['swiftnb_tok_s'] / r['vllm_tok_s']
        ttft_ok = r['swiftnb_ttft_ms'] <= r['vllm_ttft_ms']
        table.append([f'serving: swiftnb server, concurrency {r["concurrency"]}',
                      f'{r["swiftnb_tok_s"]:.0f} tok/s, TTFT {r["swiftnb_ttft_ms"]:.1f} ms',
                      f'vLLM server {r["vllm_tok_s"]:.0f} tok/s, TTFT {r["vllm_ttft_ms"]:.1f} ms', f'{ratio:.2f}x',
                      f'>= 1.0x, TTFT no worse: {goal(ratio >= 1.0 and ttft_ok)}'])
    bar.update()

    bar.set_description('widgets')
    w = bench_widgets.measure(**settings['widgets'], model=model)
    table.append([f'widgets: ChatWidget, one {settings["widgets"]["new_tokens"]}-token answer',
                  f'{w["widget_s"]:.3f} s, {w["messages"]:.0f} frontend messages ({w["updates_per_s"]:.0f}/s)',
                  f'raw stream {w["raw_s"]:.3f} s', f'{(w["widget_s"] - w["raw_s"]) * 1000:+.0f} ms', ''])
    bar.update()

    bar.set_description('pt')
    p = bench_pt.measure(**settings['pt'], model=model)
    table.append([f'pt: {settings["pt"]["requests"]} concurrent requests x {settings["pt"]["new_tokens"]} tokens',
                  f'{p["pt_tok_s"]:.0f} tok/s', f'one-at-a-time generate {p["generate_tok_s"]:.0f} tok/s',
                  f'{p["ratio"]:.2f}x', ''])
    bar.update()
    return table, serving


def markdown_table(table: list[list[str]]) -> str:
    lines = ['| row | swiftnb | peer (same run) | ratio / added | goal |', '| --- | --- | --- | --- | --- |']
    return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in table])


def plot(serving: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    levels = [r['concurrency'] for r in serving]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(levels, [r['vllm_tok_s'] for r in serving], 'o-', label="vLLM's OpenAI server")
    ax.plot(levels, [r['swiftnb_tok_s'] for r in serving], 's--', label="swiftnb's server")
    ax.set(xscale='log', xticks=levels, xticklabels=[str(c) for c in levels], xlabel='concurrent requests',
           ylabel='output tokens/s', title='Serving throughput (vLLM serving benchmark, same run)')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def machine(model: Optional[str]) -> str:
    import torch
    import vllm
    cpu = next((line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                if line.startswith('model name')), platform.processor())
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'
    return (f'{os.cpu_count()} CPU cores ({cpu}), {gpu}; Python {platform.python_version()}, '
            f'vLLM {vllm.__version__}, torch {torch.__version__}; model: {model or "the embedded tiny-chat"}')


def write_results(text: str, path: Path = HERE / 'RESULTS.md') -> None:
    """Replace the `make bench` section of RESULTS.md (the hand-written history below it stays)."""
    current = path.read_text()
    section = f'{MARK_START}\n{text}\n{MARK_END}'
    if MARK_START in current:
        current = re.sub(f'{re.escape(MARK_START)}.*?{re.escape(MARK_END)}', lambda _: section, current, flags=re.S)
    else:
        title, rest = current.split('\n', 1)
        current = f'{title}\n\n{section}\n{rest}'
    path.write_text(current)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer prompts and repetitions: a few minutes')
    parser.add_argument('--model', help='a model directory or hub id (default: the embedded tiny-chat)')
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    with tqdm(total=5, unit='row') as bar:
        table, serving = measure_all(settings, args.model, bar)
    plot(serving, HERE / 'serving_throughput.png')
    command = ' '.join(['.venv/bin/python', *sys.argv]) + ('' if len(sys.argv) > 1 else '   # or: make bench')
    text = (f'## Latest `make bench` ({datetime.date.today()}{", --quick" if args.quick else ""})\n\n'
            f'    {command}\n\nMachine: {machine(args.model)}. Medians of alternating runs; ratios are swiftnb / peer '
            f'(for the stream row, the difference in mean inter-token gap).\n\n{markdown_table(table)}\n\n'
            '![serving throughput](serving_throughput.png)\n')
    write_results(text)
    print('\n' + markdown_table(table))
    print(f'\nwritten to {HERE / "RESULTS.md"} and {HERE / "serving_throughput.png"}')


if __name__ == '__main__':
    main()
