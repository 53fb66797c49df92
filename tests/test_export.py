"""`swiftnb export --merge_lora true` and the seed's lines after it: the merged checkpoint, run by
`swiftnb infer --load_dataset_config true` on vLLM, answers as the base model with the adapter does."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import demo_lora
from swiftnb import inference_vllm
from swiftnb.export import ExportError, merge_lora

SWIFTNB = str(Path(sys.executable).with_name('swiftnb'))
QUESTIONS = ['who are you?', 'Hello!', 'Where is the capital of Zhejiang?']


def swiftnb(*args, cwd=None):
    return subprocess.run([SWIFTNB, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture
def checkpoint(tmp_path):
    """A training checkpoint as ms-swift leaves it: the adapter and the run's arguments."""
    ckpt = tmp_path / 'checkpoint-100'
    shutil.copytree(demo_lora('kakarot').lora_path, ckpt)
    (tmp_path / 'val.jsonl').write_text(''.join(json.dumps({'query': q}) + '\n' for q in QUESTIONS))
    (ckpt / 'sft_args.json').write_text(json.dumps({'val_dataset': [str(tmp_path / 'val.jsonl')]}))
    return ckpt


def test_merged_checkpoint_answers_as_base_plus_adapter_on_vllm(checkpoint, engine, template):
    done = swiftnb('export', '--ckpt_dir', str(checkpoint), '--merge_lora', 'true')
    merged = checkpoint.with_name('checkpoint-100-merged')
    assert done.returncode == 0 and str(merged) in done.stdout, done.stderr
    assert {'config.json', 'model.safetensors', 'tokenizer.json', 'generation_config.json',
            'sft_args.json'} <= {p.name for p in merged.iterdir()}
    # readable by anyone, as any model folder (safetensors wrote the weights 0600)
    assert {oct(p.stat().st_mode & 0o777) for p in merged.iterdir()} == {'0o644'}
    done = swiftnb('infer', '--ckpt_dir', str(merged), '--infer_backend', 'vllm', '--load_dataset_config', 'true',
                   '--show_dataset_sample', '-1')
    assert done.returncode == 0, done.stderr
    [results] = (merged / 'infer_result').glob('*.jsonl')
    answers = [json.loads(line)['response'] for line in results.read_text().splitlines()]
    expected = inference_vllm(engine, template, [{'query': q} for q in QUESTIONS], lora_request=demo_lora('kakarot'))
    assert answers == [r['response'] for r in expected]
    assert answers[0].startswith('I am Kakarot')


def test_bad_exports_say_why_and_write_nothing(checkpoint, tmp_path):
    before = set(tmp_path.iterdir())
    with pytest.raises(ExportError, match='not a LoRA checkpoint'):
        merge_lora(str(tmp_path))
    orphan = tmp_path / 'orphan'
    shutil.copytree(checkpoint, orphan)
    config = json.loads((orphan / 'adapter_config.json').read_text())
    (orphan / 'adapter_config.json').write_text(json.dumps({**config, 'base_model_name_or_path': 'org/missing-7b'}))
    with pytest.raises(FileNotFoundError, match='org/missing-7b'):
        merge_lora(str(orphan))
    (tmp_path / 'taken').mkdir()
    with pytest.raises(ExportError, match='already exists'):
        merge_lora(str(checkpoint), str(tmp_path / 'taken'))
    assert set(tmp_path.iterdir()) == before | {orphan, tmp_path / 'taken'}  # no partial output anywhere
    ckpt = str(checkpoint)
    for args, words in [(['--ckpt_dir', ckpt], '--merge_lora true'),
                        (['--ckpt_dir', str(tmp_path / 'nowhere'), '--merge_lora', 'true'], 'does not exist')]:
        done = swiftnb('export', *args)
        assert done.returncode == 2 and words in done.stderr and 'Traceback' not in done.stderr, done.stderr
