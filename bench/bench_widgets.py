"""Widgets: what a ChatWidget costs over the raw stream, in a real kernel.

A kernel (jupyter_client) loads the engine; then, alternating, it streams a 512-token answer
(ignore_eos) through `inference_stream_vllm` and through `ChatWidget.send`. This process is the
frontend: it counts the widget-state messages (comm_msg 'update') that reach it while the widget
answers. Reported: frontend messages (per answer and per second; the redraws are capped at 20 a
second, and a turn adds a few fixed ones: the transcript, the Send/Stop buttons), and the time to
the final text of each path.

    .venv/bin/python bench/bench_widgets.py [--new_tokens 512] [--reps 3]
"""
import argparse
import json
import statistics
from typing import Optional

from jupyter_client.manager import KernelManager

SETUP = """
import time
from swiftnb import get_template, get_vllm_engine, inference_stream_vllm
from swiftnb.widgets import ChatWidget
engine = get_vllm_engine(model_id_or_path={model!r})
template = get_template('auto', engine.hf_tokenizer)
chat = ChatWidget(engine, max_tokens={n}, ignore_eos=True)
display(chat)
"""
RAW = """
start = time.perf_counter()
for results in inference_stream_vllm(engine, template, [{{'query': 'Tell me about China.'}}],
                                     generation_config={{'max_new_tokens': {n}, 'ignore_eos': True}}):
    pass
print(time.perf_counter() - start)
"""
WIDGET = """
chat.clear()
start = time.perf_counter()
chat.send('Tell me about China.')
print(time.perf_counter() - start)
"""


def run_cell(client, code: str) -> tuple[str, int]:
    """Execute code; (what it printed, widget 'update' messages that came meanwhile)."""
    msg_id = client.execute(code)
    printed, updates = '', 0
    while True:
        msg = client.get_iopub_msg(timeout=600)
        kind, content = msg['msg_type'], msg['content']
        if kind == 'comm_msg' and content.get('data', {}).get('method') == 'update':
            updates += 1
        elif msg['parent_header'].get('msg_id') != msg_id:
            continue
        elif kind == 'stream':
            printed += content['text']
        elif kind == 'error':
            raise RuntimeError('\n'.join(content['traceback']))
        elif kind == 'status' and content['execution_state'] == 'idle':
            return printed, updates


def measure(new_tokens: int = 512, reps: int = 3, model: Optional[str] = None) -> dict:
    manager = KernelManager(kernel_name='python3', transport='ipc')  # ipc: no "running over TCP" warning
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=120)
    try:
        run_cell(client, SETUP.format(n=new_tokens, model=model))
        raw, widget, counts = [], [], []
        for _ in range(reps + 1):  # the first round warms up
            raw.append(float(run_cell(client, RAW.format(n=new_tokens))[0]))
            printed, updates = run_cell(client, WIDGET)
            widget.append(float(printed))
            counts.append(updates)
        widget_s = statistics.median(widget[1:])
        return {'raw_s': statistics.median(raw[1:]), 'widget_s': widget_s, 'messages': statistics.median(counts[1:]),
                'updates_per_s': statistics.median(counts[1:]) / widget_s}
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--new_tokens', type=int, default=512)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--model', help='a model directory or hub id (default: the embedded model)')
    args = parser.parse_args()
    figures = measure(args.new_tokens, args.reps, args.model)
    print(json.dumps(figures))
    print(f'{args.new_tokens}-token answer: raw stream {figures["raw_s"]:.3f} s, ChatWidget {figures["widget_s"]:.3f} s '
          f'(+{(figures["widget_s"] - figures["raw_s"]) * 1000:.1f} ms), '
          f'{figures["messages"]:.0f} frontend messages ({figures["updates_per_s"]:.1f}/s)')


if __name__ == '__main__':
    main()
