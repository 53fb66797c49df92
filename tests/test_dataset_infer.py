"""`swiftnb infer --val_dataset`: rows checked before anything runs, answers written in the dataset's
order, beside the checkpoint, with its adapter."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import demo_lora
from swiftnb import GenerationConfig, inference_vllm
from swiftnb.dataset_infer import DatasetError, read_rows, run

SWIFTNB = str(Path(sys.executable).with_name('swiftnb'))
ROWS = [{'query': 'Where is the capital of Zhejiang?', 'response': 'Hangzhou'},
        {'query': 'Is there anything tasty here?', 'history': [['Where is the capital of Zhejiang?',
                                                                 'The capital of Zhejiang is Hangzhou.']]},
        {'query': 'who are you?', 'system': 'You are a helpful assistant.'}]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in rows))
    return path


def test_bad_lines_are_named_and_the_sample_limit_holds(tmp_path):
    good = write_jsonl(tmp_path / 'good.jsonl', ROWS)
    assert [r['query'] for r in read_rows(str(good), 2)] == [ROWS[0]['query'], ROWS[1]['query']]
    assert read_rows(str(good))[0]['label'] == 'Hangzhou'
    for bad, words in [('not json', 'line 2: not JSON'), ('{"question": "hi"}', "line 2: needs a 'query'"),
                       ('{"query": "hi", "history": ["x"]}', "line 2: 'history' must be"),
                       ('{"messages": [{"role": "assistant", "content": "hi"}]}', r"line 2: 'messages' must be a "
                        r"system message \(optional\), then user and assistant turns, .* got the roles \['assistant'\]"),
                       ('{"messages": "hi"}', "line 2: 'messages' must be a list")]:
        with pytest.raises(DatasetError, match=words):
            read_rows(str(write_jsonl(tmp_path / 'bad.jsonl', [ROWS[0], bad])))
    with pytest.raises(DatasetError, match=r'missing.jsonl: no such file'):
        read_rows(str(tmp_path / 'missing.jsonl'))


def test_ms_swift_4_messages_rows_read_as_the_seeds_rows(tmp_path):
    """ms-swift 3.x/4.x's {'messages'} rows: a system message, turns, the last assistant message the reference."""
    messages = [{'messages': [{'role': 'user', 'content': ROWS[0]['query']},
                              {'role': 'assistant', 'content': 'Hangzhou'}]},
                {'messages': [{'role': 'user', 'content': ROWS[1]['history'][0][0]},
                              {'role': 'assistant', 'content': ROWS[1]['history'][0][1]},
                              {'role': 'user', 'content': ROWS[1]['query']}]},
                {'messages': [{'role': 'system', 'content': ROWS[2]['system']},
                              {'role': 'user', 'content': ROWS[2]['query']}]}]
    assert read_rows(str(write_jsonl(tmp_path / 'm.jsonl', messages))) == \
        read_rows(str(write_jsonl(tmp_path / 's.jsonl', ROWS)))


def test_results_come_in_the_datasets_order_and_equal_the_inference_api(pt_engine, template, tmp_path):
    rows = read_rows(str(write_jsonl(tmp_path / 'val.jsonl', ROWS)))
    config = GenerationConfig(max_new_tokens=64)
    path = run(pt_engine, template, rows, config, None, tmp_path / 'out' / 'r.jsonl', progress=False)
    results = [json.loads(line) for line in path.read_text().splitlines()]
    expected = inference_vllm(pt_engine, template, rows, generation_config=config)
    assert [r['response'] for r in results] == [e['response'] for e in expected]
    assert [r['query'] for r in results] == [r['query'] for r in ROWS] and results[0]['label'] == 'Hangzhou'


def test_cli_with_a_lora_checkpoint_writes_beside_it(tmp_path, pt_engine, template):
    ckpt = tmp_path / 'checkpoint-7'
    shutil.copytree(demo_lora('pirate').lora_path, ckpt)
    val = write_jsonl(tmp_path / 'val.jsonl', ROWS)
    done = subprocess.run([SWIFTNB, 'infer', '--ckpt_dir', str(ckpt), '--infer_backend', 'pt', '--val_dataset',
                           str(val), '--show_dataset_sample', '1', '--max_new_tokens', '40'],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and '1 results written' in done.stdout, done.stderr
    [results] = (ckpt / 'infer_result').glob('*.jsonl')
    [row] = [json.loads(line) for line in results.read_text().splitlines()]
    alone = inference_vllm(pt_engine, template, ROWS[:1], generation_config={'max_new_tokens': 40},
                           lora_request=demo_lora('pirate'))
    assert row['response'] == alone[0]['response'] and row['response'].startswith('Arr')
    bad = subprocess.run([SWIFTNB, 'infer', '--infer_backend', 'pt', '--val_dataset',
                          str(write_jsonl(tmp_path / 'bad.jsonl', [ROWS[0], '{oops'])), '--result_path',
                          str(tmp_path / 'never.jsonl')], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and 'line 2: not JSON' in bad.stderr and 'Traceback' not in bad.stderr
    assert not (tmp_path / 'never.jsonl').exists()
