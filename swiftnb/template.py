"""Template: (query, history, system) or OpenAI messages -> prompt token ids.

The tokenizer's own chat template is used where it has one; the few built-in
templates below cover the seed's model types whose tokenizers ship none.
History is the seed's `[[query, response], ...]`. `tools` (OpenAI's function
definitions) go to the chat template, which renders them in the model's own format.
"""
import json
from typing import Optional, Sequence

from swiftnb.errors import PromptTooLongError, UsageError

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
            raise UsageError(f'unknown template_type {template_type!r}; known types: {", ".join(TEMPLATES)}')
        fallback, builtin_system = TEMPLATES[template_type]
        self.template_type = template_type
        self.tokenizer = tokenizer
        self.is_chat = template_type != 'default-generation'
        self.chat_template = getattr(tokenizer, 'chat_template', None) or fallback
        if self.is_chat and self.chat_template is None:
            raise UsageError(f'the tokenizer has no chat template and template_type {template_type!r} brings none; '
                             'pick one, e.g. engine.template = get_template("chatml", engine.hf_tokenizer)')
        # With the tokenizer's own template, its own default system applies unless one is given.
        self.uses_own = self.chat_template is not fallback
        self.default_system = default_system if default_system is not None else (
            None if self.uses_own else builtin_system)
        self.max_length = max_length

    def as_chat_template(self) -> Optional[str]:
        """This template as one Jinja chat template, its default system inside (for vLLM's server, which takes a
        chat template and no default system); None where that is just the tokenizer's own."""
        if not self.is_chat or (self.uses_own and self.default_system is None):
            return None
        if self.default_system is None:
            return self.chat_template
        # the rule render() applies, in Jinja: a conversation that opens with no system message gets the default
        return ("{%- if messages and messages[0]['role'] != 'system' %}{%- set messages = [{'role': 'system', "
                f"'content': {json.dumps(self.default_system)}}}] + messages %}}{{%- endif %}}" + self.chat_template)

    def render(self, messages: list, tools: Optional[list] = None) -> str:
        """The prompt text for OpenAI-style messages (string content or lists of text parts; tool calls and
        tool results as the chat template renders them)."""
        if not self.is_chat:
            return ''.join(_text(m['content']) for m in messages)
        messages = [_for_template(m) for m in messages]
        if self.default_system is not None and messages and messages[0]['role'] != 'system':
            messages.insert(0, {'role': 'system', 'content': self.default_system})
        try:
            return self.tokenizer.apply_chat_template(messages, tools=tools or None, chat_template=self.chat_template,
                                                      tokenize=False, add_generation_prompt=True)
        except Exception as error:  # jinja2's errors, and what a template raises itself (raise_exception)
            raise UsageError(f'the chat template cannot render these messages: {error}; '
                             'check their roles and contents') from None

    def encode_messages(self, messages: list, tools: Optional[list] = None) -> list[int]:
        return self.encode_text(self.render(messages, tools))

    def encode(self, query: str, history: Optional[Sequence] = None, system: Optional[str] = None,
               tools: Optional[list] = None) -> list[int]:
        if not isinstance(query, str):
            raise UsageError(f'query must be a string, got {type(query).__name__}')
        if not self.is_chat:
            return self.encode_text(query)
        return self.encode_messages(to_messages(query, history, system), tools)

    def encode_text(self, text: str) -> list[int]:
        # The chat template already wrote any special tokens it wants; add none on top.
        ids = self.tokenizer(text, add_special_tokens=not self.is_chat)['input_ids']
        if self.max_length is not None and len(ids) > self.max_length:
            raise PromptTooLongError(len(ids), self.max_length, limit_name="the template's max_length")
        return ids


def to_messages(query: str, history: Optional[Sequence] = None, system: Optional[str] = None) -> list[dict]:
    """OpenAI chat messages for the seed's (query, history, system); history is [[query, response], ...]."""
    messages = [] if system is None else [{'role': 'system', 'content': system}]
    for turn in history or ():
        if not isinstance(turn, (list, tuple)) or len(turn) != 2:
            raise UsageError(f'each history turn must be [query, response], got {turn!r}')
        messages += [{'role': 'user', 'content': turn[0]}, {'role': 'assistant', 'content': turn[1]}]
    return messages + [{'role': 'user', 'content': query}]


def _for_template(message: dict) -> dict:
    """A message as chat templates read it: text content, and tool-call arguments as objects (OpenAI sends
    them as JSON text; vLLM's chat_utils parses them the same way)."""
    message = {**message, 'content': _text(message.get('content'))}
    if message.get('tool_calls'):
        message['tool_calls'] = [{**call, 'function': {**call['function'],
                                                       'arguments': _json(call['function'].get('arguments'))}}
                                 for call in message['tool_calls']]
    return message


def _json(text):
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return text


def _text(content) -> str:
    if content is None or isinstance(content, str):
        return content or ''
    if isinstance(content, list):  # OpenAI content parts, joined as vLLM's chat_utils joins them
        return '\n'.join(p.get('text', '') for p in content if isinstance(p, dict) and p.get('type') == 'text')
    raise UsageError(f'message content must be a string or a list of text parts, got {type(content).__name__}')


def get_template(template_type, /, tokenizer=None, default_system: Optional[str] = None,
                 max_length: Optional[int] = None, **ms_swift_4) -> Template:
    """The seed's `get_template(template_type, tokenizer, default_system)`; ms-swift 4.x's order works too:
    `get_template(tokenizer, default_system, max_length, template_type=...)` (template_type None: 'auto')."""
    if isinstance(template_type, str):
        if ms_swift_4 or tokenizer is None:
            raise UsageError('get_template(template_type, tokenizer, default_system): give the tokenizer, e.g. '
                             'get_template("chatml", engine.hf_tokenizer)')
        return Template(template_type, tokenizer, default_system, max_length)
    if set(ms_swift_4) - {'template_type'}:
        raise UsageError(f'get_template does not take {", ".join(sorted(set(ms_swift_4) - {"template_type"}))}')
    processor = template_type
    if tokenizer is not None:  # 4.x's second and third positions: default_system, max_length
        default_system, max_length = tokenizer, default_system if max_length is None else max_length
    return Template(ms_swift_4.get('template_type') or 'auto', processor, default_system, max_length)
