"""`%load_ext swiftnb` in a real kernel (nbclient): the engine, a %%chat conversation, adapters, the
server and status from magics, and one-line errors for a user's mistakes."""
import json
import shutil

import nbformat
from nbclient import NotebookClient

from conftest import without_chat_template

CELLS = [
    '%load_ext swiftnb',
    '%swiftnb chat_without_engine',                         # 1: an unknown command: one line
    '%%chat\nHello!',                                        # 2: no engine yet
    '%swiftnb engine --infer_backend pt --enable_lora',       # 3
    '%%chat\nWhere is the capital of Zhejiang?',              # 4
    '%%chat\nIs there anything tasty here?',                  # 5: continues the conversation
    'print(json.dumps(_))',                                   # 6: the answer is the cell's value
    '%%chat --new\nIs there anything tasty here?',            # 7: a new conversation
    '%swiftnb lora add kakarot {kakarot}',                   # 8
    '%%chat --lora kakarot --new\nwho are you?',              # 9
    '%%chat --lora goku\nwho are you?',                       # 10: unknown adapter: lists the known ones
    '%%compare --variants base kakarot --max_tokens 48\nwho are you?',  # 11: the CompareWidget
    'print(json.dumps(_))',                                   # 12: {variant: answer}
    '%%compare --variants base goku\nwho are you?',           # 13: unknown adapter
    '%swiftnb deploy --port 0',                               # 14
    '%swiftnb status',                                       # 15
    '%swiftnb stop',                                         # 16
    '%swiftnb lora remove kakarot',                           # 17
    '%swiftnb engine --help',                                # 18
    '%%chat --new --temperature 1.3 --seed 7 --max_tokens 24\nWho are you?',  # 19: settings as at every door
    "from swiftnb import get_template, inference_vllm\nfrom swiftnb.engine import registry\n"
    "e, answer = registry.live_engine(), _\nprint(answer == inference_vllm(e, get_template('auto', e.hf_tokenizer), "
    "[{{'query': 'Who are you?'}}], generation_config={{'temperature': 1.3, 'seed': 7, 'max_tokens': 24}})[0]['response'])",
    '%%compare --run {run} --max_tokens 48\nwho are you?',     # 21: the base beside each checkpoint of a run
    'print(json.dumps(_))',                                   # 22
    '%swiftnb sleep',                                        # 23: sleep mode is vLLM's (on CUDA): one line
    '%swiftnb sleep --level 3',                               # 24
    '%swiftnb shutdown',                                     # 25
    '%swiftnb status',                                       # 26
    # 27: a model whose tokenizer has no chat template: the model type's template (engine.template), as at every door
    '%swiftnb engine --infer_backend pt --model_type qwen-7b-chat --model {no_template}',
    '%%chat --new\nWhere is the capital of Zhejiang?',          # 28
]


def test_magics_in_a_real_kernel(tmp_path):
    from swiftnb import DEMO_ADAPTERS
    shutil.copytree(DEMO_ADAPTERS['kakarot'], tmp_path / 'checkpoint-10')  # a fine-tuning run of one checkpoint
    no_template = without_chat_template(tmp_path / 'no-chat-template')
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('import json')] + [
        nbformat.v4.new_code_cell(c.format(kakarot=DEMO_ADAPTERS['kakarot'], run=tmp_path, no_template=no_template))
        for c in CELLS]
    NotebookClient(nb, timeout=600, kernel_name='python3').execute()
    out = []
    for cell in nb.cells[1:]:
        assert all(o['output_type'] != 'error' and o.get('name') != 'stderr' for o in cell.outputs), cell.outputs
        out.append(''.join(o.get('text', '') or o.get('data', {}).get('text/markdown', '') for o in cell.outputs))
    assert out[1].startswith('swiftnb: argument command: invalid choice') and out[1].endswith('(see %swiftnb --help)\n')
    assert out[2] == 'swiftnb: no engine yet; create one with %swiftnb engine\n'
    assert out[3] == 'tiny-chat on pt; adapters: none\n'
    assert 'Hangzhou' in out[4]
    assert 'West Lake fish' in out[5] and json.loads(out[6]) in out[5]
    assert 'Which place do you mean?' in out[7]
    assert out[8] == 'adapters: kakarot\n' and out[9].startswith('I am Kakarot')
    assert out[10] == "swiftnb: no model or adapter named 'goku'; this engine serves tiny-chat, kakarot\n"
    widget = nb.cells[12].outputs[0]['data']
    assert 'application/vnd.jupyter.widget-view+json' in widget and 'CompareWidget' in widget['text/plain']
    answers = json.loads(out[12])
    assert list(answers) == ['tiny-chat', 'kakarot'] and answers['kakarot'] == out[9].strip()
    assert out[13].startswith("swiftnb: no model or adapter named 'goku'; this engine serves tiny-chat, kakarot")
    assert out[14].startswith('serving at http://127.0.0.1:') and 'curl http://127.0.0.1:' in out[14]
    assert 'engine: tiny-chat (pt)' in out[15] and 'adapters: kakarot' in out[15] and 'running requests: 0' in out[15]
    assert out[16] == 'server stopped\n' and out[17] == 'adapters: none\n'
    assert '--infer_backend {vllm,pt,transformers}' in out[18] and '--vllm_max_model_len' in out[18]
    assert out[20] == 'True\n'  # %%chat's flags mean what the Python API's settings mean
    assert json.loads(out[22]) == {'tiny-chat': answers['tiny-chat'], 'checkpoint-10': answers['kakarot']}
    assert out[23] == ('swiftnb: the pt engine for tiny-chat has no sleep mode (vLLM engines on CUDA have it); '
                       'shutdown() frees its memory\n')
    assert out[24].startswith("swiftnb: argument --level: invalid choice: 3 (choose from 1, 2)")
    assert out[25] == 'engine shut down\n' and out[26] == 'engine: none (create one with %swiftnb engine)\n'
    assert out[27] == 'qwen-7b-chat on pt; adapters: none\n' and 'Hangzhou' in out[28]
