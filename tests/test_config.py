"""GenerationConfig validates where a value is set; to_vllm is the one translation to vLLM."""
import pytest
from transformers import GenerationConfig as HFGenerationConfig

from swiftnb import GenerationConfig
from swiftnb.config import to_vllm


@pytest.mark.parametrize('field, value', [('temperature', -0.1), ('top_p', 0), ('top_p', 1.01),
                                          ('max_new_tokens', 0), ('top_k', -2), ('repetition_penalty', 0)])
def test_bad_values_fail_on_assignment(field, value):
    config = GenerationConfig()
    with pytest.raises(ValueError, match=field):
        setattr(config, field, value)
    with pytest.raises(ValueError, match=field):
        GenerationConfig(**{field: value})


def test_unknown_field_is_refused():
    with pytest.raises(ValueError, match='max_tokenz'):
        GenerationConfig(max_tokenz=3)


def test_from_hf_and_merged():
    config = GenerationConfig.from_hf(HFGenerationConfig(do_sample=True, temperature=0.3, top_k=0,
                                                         max_new_tokens=64))
    assert (config.do_sample, config.temperature, config.top_k, config.max_new_tokens) == (True, 0.3, -1, 64)
    assert config.merged(temperature=None, seed=3).seed == 3
    assert config.merged(temperature=None).temperature == 0.3
    # a temperature alone decides sampling, as vLLM and the OpenAI API read it
    assert not config.merged(temperature=0).do_sample and GenerationConfig().merged(temperature=0.7).do_sample
    assert not GenerationConfig().merged(temperature=0.7, do_sample=False).do_sample


def test_to_vllm():
    greedy = to_vllm(GenerationConfig(temperature=0.7), max_tokens=10)
    assert greedy.temperature == 0.0 and greedy.max_tokens == 10  # do_sample=False means greedy
    sampled = to_vllm(GenerationConfig(do_sample=True, temperature=0.7, top_k=5, stop='\n', seed=1), 20)
    assert (sampled.temperature, sampled.top_k, sampled.stop, sampled.seed) == (0.7, 5, ['\n'], 1)
