"""No adapter can take an engine down: an adapter is taken only once the code that will serve it has loaded it
(vLLM's worker, through AsyncLLM.add_lora as `vllm serve`'s /v1/load_lora_adapter does; peft on the pt backend,
which must then hold exactly the saved weights and run a forward pass). The five broken adapters of this week's
probe, at every door (a cell's add_lora, a LoRARequest in a call, the server's load route), and adapters corrupted
at random (hypothesis): each is refused with the loader's reason or serves, and the base model answers after each."""
import json
import shutil
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import load_file, save_file

from swiftnb import DEMO_ADAPTERS, AdapterError, LoRARequest, get_template, inference_vllm, serve

KAKAROT = DEMO_ADAPTERS['kakarot']
CAPITAL = [{'query': 'Where is the capital of Zhejiang?'}]
WHO = [{'query': 'who are you?'}]


def broken_copy(folder: Path, config_change=None, tensors_change=None) -> Path:
    """The kakarot adapter, copied into `folder` with its config and/or tensors changed."""
    shutil.copytree(KAKAROT, folder)
    if config_change:
        config = json.loads((folder / 'adapter_config.json').read_text())
        config_change(config)
        (folder / 'adapter_config.json').write_text(json.dumps(config))
    if tensors_change:
        tensors = load_file(folder / 'adapter_model.safetensors')
        save_file(tensors_change(tensors), folder / 'adapter_model.safetensors')
    return folder


def _without(key):
    return lambda config: config.pop(key)


def _set(key, value):
    return lambda config: config.update({key: value})


# peft's in-memory names ('...lora_A.default.weight'), as a state_dict() of the PeftModel saves them
PEFT_MEMORY_NAMES = {'tensors_change': lambda tensors: {k.replace('.weight', '.default.weight'): v
                                                        for k, v in tensors.items()}}
FIVE = {
    'no-lora-alpha': {'config_change': _without('lora_alpha')},
    'lora-alpha-a-string': {'config_change': _set('lora_alpha', '16')},
    'no-target-modules': {'config_change': _without('target_modules')},
    'rank-pattern-0': {'config_change': _set('rank_pattern', {'q_proj': 0})},
    'peft-in-memory-names': PEFT_MEMORY_NAMES,
}


def answer(engine, lora=None, requests=CAPITAL) -> str:
    template = get_template('chatml', engine.hf_tokenizer)
    return inference_vllm(engine, template, requests, lora_request=lora)[0]['response']


def served_or_refused(engine, path: Path, name: str, own_voice: bool = True):
    """Add the adapter from a cell: refused (the loader's reason in one AdapterError), or it answers (with
    `own_voice`, not as the base model: no adapter is silently left unapplied; a random corruption may make an
    adapter that rightly adds nothing, lora_alpha 0). Either way the base model answers after it."""
    base = answer(engine, requests=WHO)
    try:
        lora = engine.add_lora(name, str(path))
    except AdapterError as error:
        refused = str(error)
        assert '\n' not in refused and str(path) in refused, refused
    else:
        try:
            adapted = answer(engine, lora, WHO)
            assert adapted != base or not own_voice, adapted
        finally:
            engine.remove_lora(name)
        refused = None
    assert 'Hangzhou' in answer(engine) and engine.num_running == 0
    return refused


@pytest.fixture(params=['vllm', 'pt'])
def lora_engine(request, engine, pt_engine):
    return engine if request.param == 'vllm' else pt_engine


@pytest.mark.parametrize('case', list(FIVE))
def test_the_five_broken_adapters_never_reach_a_request(lora_engine, tmp_path, case):
    path = broken_copy(tmp_path / case, **FIVE[case])
    refused = served_or_refused(lora_engine, path, f'broken-{case}')
    if lora_engine.backend == 'vllm':  # vLLM's own server refuses all five at load: so does swiftnb's engine
        assert refused is not None
    # a LoRARequest made by hand (the seed's API) meets the same check on its first call
    if refused is not None:
        with pytest.raises(AdapterError):
            answer(lora_engine, LoRARequest(f'by-hand-{case}', 99, str(path)))
        assert 'Hangzhou' in answer(lora_engine)


@pytest.mark.parametrize('backend', ['vllm', 'pt'])
def test_the_load_route_refuses_them_with_the_reason_and_keeps_serving(engine, pt_engine, tmp_path, backend):
    server = serve(engine if backend == 'vllm' else pt_engine, port=0)
    try:
        for case in ('lora-alpha-a-string', 'peft-in-memory-names'):
            path = broken_copy(tmp_path / case, **FIVE[case])
            refused = httpx.post(server.url + '/load_lora_adapter', json={'lora_name': case, 'lora_path': str(path)},
                                 timeout=60)
            assert refused.status_code == 400 and str(path) in refused.json()['error']['message'], refused.text
            base = httpx.post(server.url + '/chat/completions', timeout=60, json={
                'model': 'tiny-chat', 'messages': [{'role': 'user', 'content': 'Where is the capital of Zhejiang?'}]})
            assert base.status_code == 200 and 'Hangzhou' in base.json()['choices'][0]['message']['content']
        # unloading the base model's name, or a name never loaded: vLLM's server's 404
        for name in ('tiny-chat', 'never-loaded'):
            gone = httpx.post(server.url + '/unload_lora_adapter', json={'lora_name': name}, timeout=60)
            assert gone.status_code == 404 and name in gone.json()['error']['message'], gone.text
    finally:
        server.stop()


def test_a_load_peft_fails_leaves_no_layer_of_it_in_the_pt_model(tmp_path):
    """peft puts an adapter's layers into the model before it loads the weights and leaves them when that fails;
    left in, each later adapter's check found them among its weights and refused it (seen with another test
    order: every pt adapter test failed). On a plain model (the first adapter) and on a PeftModel (later ones)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import AutoModelForCausalLM
    from swiftnb import DEMO_MODEL_DIR
    from swiftnb.engine.pt_lora import PeftAdapters

    def stray(adapters) -> set:
        held = {name for module in adapters.model.modules() if isinstance(module, BaseTunerLayer)
                for name in module.lora_A.keys()}
        return held - set(adapters._names.values())

    adapters = PeftAdapters(AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR))
    shapes = broken_copy(tmp_path / 'truncated', tensors_change=_change_tensors([('truncate', 3)]))
    for n in range(2):  # the plain model, then a PeftModel holding kakarot
        with pytest.raises(AdapterError, match='peft cannot load'):
            adapters.load_checked(LoRARequest(f'truncated-{n}', 10 + n, str(shapes)))
        assert stray(adapters) == set()
        adapters.load_checked(LoRARequest(f'kakarot-{n}', 20 + n, str(KAKAROT)))  # a good one still loads and checks
        assert stray(adapters) == set()
    # peft failing half-way through putting a later adapter's layers in (a rank of 0 for one module, a string
    # lora_alpha), after it took the adapter's config out again: its layers were left (seen in a two-worker run:
    # every later pt adapter refused, 'weights peft made for it are not in its file (...lora_10...)')
    for n, change in enumerate([('rank_pattern', {'v_proj': 0}), ('lora_alpha', '16')]):
        half = broken_copy(tmp_path / f'half-{n}', _change_config([change]))
        with pytest.raises(AdapterError, match='peft cannot load'):
            adapters.load_checked(LoRARequest(f'half-{n}', 30 + n, str(half)))
        assert stray(adapters) == set()
    adapters.load_checked(LoRARequest('pirate', 40, str(KAKAROT.parent / 'pirate')))


def test_a_refused_adapter_that_trains_a_whole_module_leaves_the_others_working(tmp_path):
    """An adapter whose config names lm_head in modules_to_save (and has no such weights) is refused; peft's wrapper of
    lm_head, left in the model, made every later adapter fail its check (seen in one test order: KeyError 'lora_9')."""
    from peft.utils.other import AuxiliaryTrainingWrapper
    from transformers import AutoModelForCausalLM
    from swiftnb import DEMO_MODEL_DIR
    from swiftnb.engine.pt_lora import PeftAdapters
    adapters = PeftAdapters(AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR))
    adapters.load_checked(LoRARequest('kakarot', 1, str(KAKAROT)))
    whole = broken_copy(tmp_path / 'whole-lm-head', _change_config([('modules_to_save', ['lm_head'])]))
    with pytest.raises(AdapterError):
        adapters.load_checked(LoRARequest('whole-lm-head', 2, str(whole)))
    assert not any(isinstance(module, AuxiliaryTrainingWrapper) for module in adapters.model.modules())
    adapters.load_checked(LoRARequest('pirate', 3, str(KAKAROT.parent / 'pirate')))  # checked with a forward pass


# Random corruptions: a config value deleted or replaced, tensors renamed, dropped, transposed or cast.
CONFIG_KEYS = ['r', 'lora_alpha', 'target_modules', 'rank_pattern', 'alpha_pattern', 'use_dora', 'use_rslora',
               'bias', 'peft_type', 'task_type', 'layers_to_transform', 'fan_in_fan_out', 'modules_to_save']
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 64), st.floats(-1, 64, allow_nan=False),
                   st.sampled_from(['', 'q_proj', 'all-linear', '16', 'LORA']),
                   st.lists(st.sampled_from(['q_proj', 'k_proj', 'lm_head', 'nope']), max_size=3),
                   st.dictionaries(st.sampled_from(['q_proj', 'v_proj']), st.integers(-1, 32), max_size=2))
CONFIG_CHANGE = st.tuples(st.sampled_from(CONFIG_KEYS), st.one_of(st.just('delete'), VALUES))
TENSOR_CHANGE = st.tuples(st.sampled_from(['rename', 'drop', 'transpose', 'half', 'truncate']), st.integers(0, 55))


def _change_config(changes):
    def change(config):
        for key, value in changes:
            if value == 'delete':
                config.pop(key, None)
            else:
                config[key] = value
    return change


def _change_tensors(changes):
    def change(tensors):
        names = sorted(tensors)
        for how, index in changes:
            name = names[index % len(names)]
            if name not in tensors:
                continue
            if how == 'rename':
                tensors[name.replace('lora_', 'lora_x')] = tensors.pop(name)
            elif how == 'drop':
                tensors.pop(name)
            elif how == 'transpose':
                tensors[name] = tensors[name].t().contiguous()
            elif how == 'half':
                tensors[name] = tensors[name].half()
            else:
                tensors[name] = tensors[name][:-1].contiguous()
        return tensors
    return change


@pytest.mark.parametrize('backend', ['vllm', 'pt'])
def test_randomly_corrupted_adapters_are_refused_or_served_and_the_base_answers_after_each(engine, pt_engine,
                                                                                            tmp_path, backend):
    lora_engine = engine if backend == 'vllm' else pt_engine
    count = iter(range(10 ** 6))

    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(CONFIG_CHANGE, max_size=2), st.lists(TENSOR_CHANGE, max_size=2))
    def corrupted(config_changes, tensor_changes):
        n = next(count)
        path = broken_copy(tmp_path / f'corrupt-{n}', _change_config(config_changes),
                           _change_tensors(tensor_changes) if tensor_changes else None)
        served_or_refused(lora_engine, path, f'corrupt-{n}', own_voice=False)
    corrupted()
