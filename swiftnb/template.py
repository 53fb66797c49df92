"""Template: (query, history, system) or OpenAI messages -> prompt token ids.

The tokenizer's own chat template is used where it has one; the few built-in
templates below cover the seed's model types whose tokenizers ship none.
History is the seed's `[[query, response], ...]`.
"""
from typing import Optional, Sequence

from swiftnb.engine.base import PromptTooLongError

_CHATML = (
    "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
_LLAMA2 = (
    "{%- if messages[0]['role'] == 'system' %}{%- set sys = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set sys = '' %}{%- endif %}"
    "{%- for m in messages %}{%- if m['role'] == 'user' %}"
    "{{- '<s>[INST] ' + (sys if loop.first else '') + m['content'] + ' [/INST]' }}"
    "{%- else %}{{- ' ' + m['content'] + ' </s>' }}{%- endif %}{%- endfor %}")
_LLAMA3 = (
    "{{- '<|begin_of_text|>' }}{%- for m in messages %}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")

# template_type -> (jinja used when the tokenizer has no chat template, default system)
TEMPLATES = {
    'chatml': (_CHATML, 'You are a helpful assistant.'),
    'qwen': (_CHATML, 'You are a helpful assistant.'),
    'yi': (_CHATML, None),
    'llama': (_LLAMA2, None),
    'llama3': (_LLAMA3, None),
    'auto': (None, None),  # the tokenizer's own template, and its own default system
    'default-generation': (None, None),  # plain text in, plain text out
}


class Template:
    def __init__(self, template_type: str, tokenizer, default_system: Optional[str] = None,
                 max_length: Optional[int] = None):
        if template_type not in TEMPLATES:
            raise ValueError(f'unknown template_type {template_type!r}; known types: {", ".join(TEMPLATES)}')
        fallback, builtin_system = TEMPLATES[template_type]
        self.template_type = template_type
        self.tokenizer = tokenizer
        self.is_chat = template_type != 'default-generation'
        self.chat_template = getattr(tokenizer, 'chat_template', None) or fallback
        if self.is_chat and self.chat_template is None:
            raise ValueError(f'the tokenizer has no chat template and template_type {template_type!r} '
                             'brings none; pass a template_type such as "chatml" or "llama3"')
        # With the tokenizer's own template, its own default system applies unless one is given.
        uses_own = self.chat_template is not fallback
        self.default_system = default_system if default_system is not None else (
            None if uses_own else builtin_system)
        self.max_length = max_length

    def to_messages(self, query: str, history: Optional[Sequence] = None, system: Optional[str] = None) -> list:
        system = system if system is not None else self.default_system
        messages = [] if system is None else [{'role': 'system', 'content': system}]
        for turn in history or ():
            q, r = _turn(turn)
            messages += [{'role': 'user', 'content': q}, {'role': 'assistant', 'content': r}]
        return messages + [{'role': 'user', 'content': query}]

    def render(self, messages: list) -> str:
        """The prompt text for OpenAI-style messages (string content, or lists of text parts)."""
        if not self.is_chat:
            return ''.join(_text(m['content']) for m in messages)
        messages = [{'role': m['role'], 'content': _text(m['content'])} for m in messages]
        if self.default_system is not None and messages and messages[0]['role'] != 'system':
            messages.insert(0, {'role': 'system', 'content': self.default_system})
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template,
                                                  tokenize=False, add_generation_prompt=True)

    def encode_messages(self, messages: list) -> list[int]:
        return self.encode_text(self.render(messages))

    def encode(self, query: str, history: Optional[Sequence] = None, system: Optional[str] = None) -> list[int]:
        if not isinstance(query, str):
            raise ValueError(f'query must be a string, got {type(query).__name__}')
        if not self.is_chat:
            return self.encode_text(query)
        return self.encode_messages(self.to_messages(query, history, system))

    def encode_text(self, text: str) -> list[int]:
        # The chat template already wrote any special tokens it wants; add none on top.
        ids = self.tokenizer(text, add_special_tokens=not self.is_chat)['input_ids']
        if self.max_length is not None and len(ids) > self.max_length:
            raise PromptTooLongError(len(ids), self.max_length, limit_name="the template's max_length")
        return ids


def _turn(turn):
    if not isinstance(turn, (list, tuple)) or len(turn) != 2:
        raise ValueError(f'each history turn must be [query, response], got {turn!r}')
    return turn


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return ''.join(p.get('text', '') for p in content if isinstance(p, dict) and p.get('type') == 'text')
    raise ValueError(f'message content must be a string or a list of text parts, got {type(content).__name__}')


def get_template(template_type: str, tokenizer, default_system: Optional[str] = None,
                 max_length: Optional[int] = None) -> Template:
    return Template(template_type, tokenizer, default_system, max_length)
