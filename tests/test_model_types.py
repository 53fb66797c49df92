"""Model types: the seed's table, the embedded default, local paths, and a clear error offline."""
import pytest

from swiftnb import DEMO_MODEL_DIR, ModelNotFoundError, ModelType, get_default_template_type
from swiftnb.model_types import MODELS, resolve_model

SEED_TYPES = ['qwen-7b-chat', 'qwen-7b', 'yi-6b-chat', 'qwen1half-7b-chat-int4', 'qwen2-72b-instruct',
              'llama2-7b-chat', 'llama3-8b-instruct']


def test_table_has_the_seed_types_and_tiny_chat():
    for name in SEED_TYPES + ['tiny-chat']:
        assert name in MODELS
        assert getattr(ModelType, name.replace('-', '_')) == name
    assert not MODELS['qwen-7b'].is_chat and MODELS['qwen-7b-chat'].is_chat
    assert get_default_template_type('qwen-7b-chat') == 'qwen'
    assert get_default_template_type('qwen-7b') == 'default-generation'


def test_default_is_the_embedded_model():
    assert resolve_model() == ('tiny-chat', str(DEMO_MODEL_DIR.resolve()))


def test_local_directory(tmp_path):
    assert resolve_model(model_id_or_path=str(tmp_path)) == (tmp_path.name, str(tmp_path))
    assert resolve_model('qwen-7b-chat', str(tmp_path))[0] == 'qwen-7b-chat'


def test_missing_model_names_the_hub_id_and_the_way_out(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')  # no hub on these machines; offline makes it quick
    with pytest.raises(ModelNotFoundError, match=r"'Qwen/Qwen-7B-Chat'.*model_id_or_path="):
        resolve_model('qwen-7b-chat')
    with pytest.raises(ModelNotFoundError, match='does not exist'):
        resolve_model(model_id_or_path='/no/such/dir')


def test_unknown_model_type_lists_the_known_ones():
    with pytest.raises(ValueError, match='known types: tiny-chat'):
        resolve_model('gpt-9')
