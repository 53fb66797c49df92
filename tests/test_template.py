"""Template: (query, history, system) and OpenAI messages -> the prompt the model was trained on."""
import pytest
from transformers import AutoTokenizer

from swiftnb import DEMO_MODEL_DIR, PromptTooLongError, get_default_template_type, get_template
from swiftnb.template import to_messages


@pytest.fixture(scope='module')
def tokenizer():
    return AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


def test_query_with_history_renders_chatml(tokenizer):
    template = get_template(get_default_template_type('tiny-chat'), tokenizer)
    text = template.render(to_messages('And food?', [['Where is Hangzhou?', 'In Zhejiang.']]))
    assert text == ('<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'
                    '<|im_start|>user\nWhere is Hangzhou?<|im_end|>\n'
                    '<|im_start|>assistant\nIn Zhejiang.<|im_end|>\n'
                    '<|im_start|>user\nAnd food?<|im_end|>\n'
                    '<|im_start|>assistant\n')


def test_system_and_default_system(tokenizer):
    template = get_template('chatml', tokenizer, default_system='Be brief.')
    assert template.render(to_messages('Hi')).startswith('<|im_start|>system\nBe brief.<|im_end|>')
    assert template.render(to_messages('Hi', system='Be kind.')).startswith(
        '<|im_start|>system\nBe kind.<|im_end|>')


def test_encode_equals_the_tokenizer_chat_template(tokenizer):
    template = get_template('chatml', tokenizer)
    messages = [{'role': 'user', 'content': 'Hello!'}]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert template.encode('Hello!') == tokenizer(expected, add_special_tokens=False)['input_ids']


def test_openai_messages_with_text_parts(tokenizer):
    template = get_template('chatml', tokenizer)
    parts = [{'role': 'user', 'content': [{'type': 'text', 'text': 'Hello'}, {'type': 'text', 'text': 'there'}]}]
    assert template.encode_messages(parts) == template.encode('Hello\nthere')  # joined as vLLM joins them


def test_generation_template_is_plain_text(tokenizer):
    template = get_template(get_default_template_type('qwen-7b'), tokenizer)
    prompt = 'Zhejiang -> Hangzhou\nAnhui -> Hefei\nSichuan ->'
    assert tokenizer.decode(template.encode(prompt)) == prompt


def test_builtin_template_for_a_tokenizer_without_one(tokenizer):
    bare = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    bare.chat_template = None
    template = get_template('llama3', bare)
    assert template.render(to_messages('Hi')) == (
        '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>'
        '<|start_header_id|>assistant<|end_header_id|>\n\n')


def test_bad_input(tokenizer):
    with pytest.raises(ValueError, match='unknown template_type'):
        get_template('nope', tokenizer)
    template = get_template('chatml', tokenizer, max_length=10)
    with pytest.raises(PromptTooLongError, match=r"has \d+ tokens, but the template's max_length is 10"):
        template.encode('Hello! ' * 20)
    with pytest.raises(ValueError, match=r'\[query, response\]'):
        template.encode('Hi', history=[['only one']])
    with pytest.raises(ValueError, match='query must be a string'):
        template.encode(None)
