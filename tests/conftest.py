"""One vLLM engine for the whole test session (building one takes the better part of a minute)."""
import time

import pytest

from swiftnb import DEMO_ADAPTERS, LoRARequest, get_template, get_vllm_engine

SESSION_ENGINE_ARGS = dict(enable_lora=True, max_loras=2)


@pytest.fixture(scope='session')
def engine():
    engine = get_vllm_engine(**SESSION_ENGINE_ARGS)
    yield engine
    engine.shutdown()


@pytest.fixture(scope='session')
def template(engine):
    return get_template('chatml', engine.hf_tokenizer)


def demo_lora(name: str) -> LoRARequest:
    return LoRARequest(name, list(DEMO_ADAPTERS).index(name) + 1, str(DEMO_ADAPTERS[name]))


def settles(condition, seconds: float = 5.0) -> bool:
    """Whether `condition()` becomes true within `seconds` (an abort reaches vLLM's core asynchronously)."""
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True
