"""GenerationConfig, the one declaration of the generation settings: checked where set, one sampling rule,
the engine's defaults under what a call gives, and the flags and client fields built from it."""
import argparse
import warnings

import pytest
from transformers import GenerationConfig as HFGenerationConfig

from swiftnb import GenerationConfig, SettingsError, XRequestConfig
from swiftnb.engine.vllm import sampling_params
from swiftnb.settings import add_flags, from_flags, served_defaults


@pytest.mark.parametrize('field, value', [('temperature', -0.1), ('temperature', 2.5), ('temperature', float('inf')),
                                          ('top_p', 0), ('top_p', 1.01), ('max_tokens', 0), ('max_new_tokens', 0),
                                          ('top_k', -2), ('repetition_penalty', 0), ('seed', 2 ** 64), ('n', 0),
                                          ('stop', ['a', ''])])
def test_bad_values_fail_where_they_are_set_with_one_line(field, value):
    config = GenerationConfig()
    with pytest.raises(SettingsError, match=r'^(max_tokens|' + field + '): ') as error:
        setattr(config, field, value)
    assert '\n' not in str(error.value)
    with pytest.raises(SettingsError, match=field):
        GenerationConfig(**{field: value})


def test_unknown_field_is_refused():
    with pytest.raises(SettingsError, match='max_tokenz'):
        GenerationConfig(max_tokenz=3)


def test_a_temperature_samples_unless_do_sample_is_false():
    assert GenerationConfig(temperature=0.7).greedy is False and GenerationConfig(temperature=0).greedy
    config = GenerationConfig.from_hf({'do_sample': False, 'max_new_tokens': 64})  # transformers' greedy default
    assert config.greedy and config.max_tokens == 64
    config.temperature = 1.5  # the seed's way of tuning, in a cell: it now samples
    assert not config.greedy
    with pytest.warns(UserWarning, match='do_sample=False with temperature=1.5'):
        assert GenerationConfig(do_sample=False, temperature=1.5).greedy
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        GenerationConfig(do_sample=False)  # no contradiction, no warning
        GenerationConfig(do_sample=True, temperature=0.5)


def test_apply_keeps_the_defaults_the_call_does_not_give():
    defaults = GenerationConfig.from_hf(HFGenerationConfig(do_sample=True, temperature=0.3, top_k=0,
                                                           max_new_tokens=64))
    assert (defaults.temperature, defaults.top_k, defaults.max_new_tokens) == (0.3, -1, 64)
    applied = GenerationConfig(seed=3).apply(defaults)
    assert (applied.seed, applied.temperature, applied.max_tokens) == (3, 0.3, 64)
    assert GenerationConfig(temperature=0).apply(defaults).greedy
    greedy_defaults = GenerationConfig(do_sample=False)
    assert not GenerationConfig(temperature=0.7).apply(greedy_defaults).greedy  # the call's temperature decides
    assert GenerationConfig(max_tokens=None).apply(defaults).max_tokens is None  # given as None clears it
    assert GenerationConfig(max_new_tokens=5).apply(defaults).max_tokens == 5


def test_served_defaults_are_the_fields_vllm_reads_from_generation_config_json():
    config = GenerationConfig(temperature=0.5, seed=7, stop=['x'], max_tokens=9)
    served = served_defaults(config)
    assert (served.temperature, served.max_tokens, served.seed, served.stop) == (0.5, 9, None, None)


def test_structured_outputs_take_one_valid_constraint():
    config = GenerationConfig(response_format={'type': 'json_schema', 'json_schema': {
        'name': 'city', 'schema': {'type': 'object', 'properties': {'city': {'type': 'string'}}}}})
    assert config.structured.to_vllm_dict() == {'json': {'type': 'object', 'properties': {'city': {'type': 'string'}}}}
    assert GenerationConfig(response_format={'type': 'json_object'}).structured.json_object
    assert GenerationConfig(structured_outputs={'choice': ['yes', 'no']}).structured.choice == ['yes', 'no']
    with pytest.raises(SettingsError, match='structured_outputs: .*exactly one'):
        GenerationConfig(structured_outputs={'regex': 'a+', 'choice': ['a']})
    with pytest.raises(SettingsError, match='structured_outputs: .*not a valid constraint'):
        GenerationConfig(structured_outputs={'json': {'type': 'objekt'}})
    with pytest.raises(SettingsError, match='response_format.type'):
        GenerationConfig(response_format={'type': 'xml'})


def test_sampling_params_for_vllm():
    greedy = sampling_params(GenerationConfig(do_sample=False), max_tokens=10)
    assert greedy.temperature == 0.0 and greedy.max_tokens == 10
    sampled = sampling_params(GenerationConfig(temperature=0.7, top_k=5, stop='\n', seed=1, logprobs=True,
                                               top_logprobs=2, structured_outputs={'regex': '[ab]+'}), 20)
    assert (sampled.temperature, sampled.top_k, sampled.stop, sampled.seed, sampled.logprobs) == \
           (0.7, 5, ['\n'], 1, 2)
    assert sampled.structured_outputs.regex == '[ab]+'


def test_flags_are_built_from_the_fields():
    parser = argparse.ArgumentParser()
    add_flags(parser)
    args = parser.parse_args(['--max_new_tokens', '7', '--temperature', '0.5'])  # the seed's spelling works
    assert from_flags(args).given() == {'max_tokens': 7, 'temperature': 0.5}
    with pytest.raises(SettingsError, match='temperature'):
        from_flags(parser.parse_args(['--temperature', '9']))


def test_the_client_sends_only_what_was_given():
    fields, extra = XRequestConfig(seed=42, do_sample=False, top_k=5, stream=True).request_fields()
    assert fields == {'seed': 42, 'temperature': 0.0, 'stream': True} and extra == {'top_k': 5}
    assert XRequestConfig().request_fields() == ({}, {})
