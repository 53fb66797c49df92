"""Tool calls (OpenAI's function calling) at swiftnb's own doors: the Python API and the pt server.

vLLM's server does all of this itself for the vLLM backend; here is the same behaviour for the rest:
- `tools` go to the chat template, which renders them in the model's own format;
- `tool_choice` 'required' or a named function is enforced by a grammar (structured outputs): in the
  model's own format where swiftnb knows it (hermes: `<tool_call>{"name": ..., "arguments": ...}</tool_call>`,
  as vLLM 0.32 does with its structural tags), else as vLLM's JSON schemas (a list of {name,
  parameters}, or the named function's arguments);
- 'auto' leaves the model free; vLLM's tool parser for the model's format reads the calls out of the
  answer (and the forced ones, in the model's format).
"""
import json
import re
import uuid
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from swiftnb.errors import SettingsError
from swiftnb.settings import StructuredOutputs, describe


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra='ignore')
    name: str = Field(pattern=r'^[a-zA-Z0-9_.-]{1,64}$')
    description: Optional[str] = None
    parameters: Optional[dict] = None
    strict: Optional[bool] = None


class Tool(BaseModel):
    model_config = ConfigDict(extra='ignore')
    type: Literal['function'] = 'function'
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal['function'] = 'function'
    function: FunctionName


ToolChoice = Union[Literal['none', 'auto', 'required'], NamedToolChoice]
_TOOLS = TypeAdapter(Optional[list[Tool]])
_CHOICE = TypeAdapter(Optional[ToolChoice])


def check(tools, tool_choice=None) -> tuple[Optional[list[Tool]], Optional[ToolChoice]]:
    """The tools and tool_choice of one request, validated; a bad one raises SettingsError naming the field."""
    try:
        tools = _TOOLS.validate_python(tools)
    except ValidationError as error:
        raise SettingsError(*describe_in('tools', error)) from None
    try:
        tool_choice = _CHOICE.validate_python(tool_choice)
    except ValidationError as error:
        raise SettingsError(*describe_in('tool_choice', error)) from None
    if tool_choice is None:
        tool_choice = 'auto' if tools else 'none'
    if tool_choice != 'none' and not tools:
        raise SettingsError(f'tool_choice {_name(tool_choice)!r} needs tools', 'tool_choice')
    if isinstance(tool_choice, NamedToolChoice) and tool_choice.function.name not in [t.function.name for t in tools]:
        raise SettingsError(f'tool_choice names {tool_choice.function.name!r}, which is not among the tools '
                            f'({", ".join(t.function.name for t in tools)})', 'tool_choice')
    return tools, tool_choice


def describe_in(field: str, error: ValidationError) -> tuple[str, str]:
    message, param = describe(error)
    where = f'{field}.{param}' if param else field
    return (f'{where}: {message.split(": ", 1)[-1]}' if param else f'{field}: {message}'), where


def _name(tool_choice) -> str:
    return tool_choice.function.name if isinstance(tool_choice, NamedToolChoice) else tool_choice


def _parameters(tool: Tool) -> dict:
    return tool.function.parameters or {'type': 'object', 'properties': {}}


def _call_schema(tool: Tool, arguments: str = 'arguments') -> dict:
    """One call of `tool` as JSON: hermes writes its arguments under 'arguments', vLLM's schema 'parameters'."""
    return {'type': 'object', 'properties': {'name': {'type': 'string', 'enum': [tool.function.name]},
                                             arguments: _parameters(tool)},
            'required': ['name', arguments]}


def _forced(tools: Optional[list[Tool]], tool_choice) -> list[Tool]:
    """The tools a forced tool_choice allows (none where the choice is free)."""
    if isinstance(tool_choice, NamedToolChoice):
        return [t for t in tools if t.function.name == tool_choice.function.name]
    return list(tools) if tool_choice == 'required' else []


HERMES = ('<tool_call>\n', '\n</tool_call>')


def _calls(allowed: list[Tool], arguments: str) -> tuple[list[dict], dict]:
    """Each allowed tool's call as JSON, and the `$defs` of their parameters, taken out for the schema's root, where
    their '#/$defs/...' references point (as vLLM's schema has them)."""
    calls, defs = [], {}
    for tool in allowed:
        schema = _call_schema(tool, arguments)
        parameters = schema['properties'][arguments] = dict(schema['properties'][arguments])
        for name, definition in parameters.pop('$defs', {}).items():
            if defs.setdefault(name, definition) != definition:
                raise SettingsError(f"tools: the definition {name!r} has two schemas among the tools; give each "
                                    "its own name", 'tools')
        calls.append(schema)
    return calls, defs


def _hermes_grammar(allowed: list[Tool], repeat: bool) -> str:
    """EBNF for one (or, with `repeat`, several) hermes tool calls of the allowed tools, built by xgrammar."""
    import xgrammar
    calls, defs = _calls(allowed, 'arguments')
    schema = {**(calls[0] if len(calls) == 1 else {'anyOf': calls}), **({'$defs': defs} if defs else {})}
    one = xgrammar.Grammar.concat(xgrammar.Grammar.from_ebnf(f'root ::= {json.dumps(HERMES[0])}'),
                                  xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False),
                                  xgrammar.Grammar.from_ebnf(f'root ::= {json.dumps(HERMES[1])}'))
    rules = re.sub(r'\broot\b', 'tool_call', str(one))
    more = ' ("\\n" tool_call)*' if repeat else ''
    return f'root ::= tool_call{more}\n{rules}'


def constraint(tools: Optional[list[Tool]], tool_choice, parser: Optional[str] = None,
               parallel: bool = True) -> Optional[StructuredOutputs]:
    """The grammar that 'required' or a named tool_choice imposes on the answer: hermes tool calls for a
    hermes model, else the JSON schema vLLM's tool_parsers.utils.get_json_schema_from_tools builds (from
    its own request types, so it is written again here; tests/test_tools.py compares the two). `parallel`
    False (the request's parallel_tool_calls): one call at most."""
    allowed = _forced(tools, tool_choice)
    if not allowed:
        return None
    if parser == 'hermes':
        return StructuredOutputs(grammar=_hermes_grammar(allowed, repeat=tool_choice == 'required' and parallel))
    if isinstance(tool_choice, NamedToolChoice):
        return StructuredOutputs(json=_parameters(allowed[0]))
    calls, defs = _calls(allowed, 'parameters')
    for one in calls:
        del one['type']  # vLLM's has none: the array's items are objects
    schema = {'type': 'array', 'minItems': 1, 'items': {'type': 'object', 'anyOf': calls}}
    if not parallel:
        schema['maxItems'] = 1
    if defs:
        schema['$defs'] = defs
    return StructuredOutputs(json=schema)


def call(name: str, arguments: Union[str, dict]) -> dict:
    """One OpenAI tool call."""
    arguments = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {'id': f'chatcmpl-tool-{uuid.uuid4().hex}', 'type': 'function',
            'function': {'name': name, 'arguments': arguments}}


def read_calls(text: str, tools, tool_choice, tokenizer, parser: Optional[str]) -> tuple[Optional[str], list[dict]]:
    """(content, tool calls) of an answer."""
    if tool_choice == 'none' or not tools:
        return text, []
    if parser != 'hermes' and isinstance(tool_choice, NamedToolChoice):
        return None, [call(tool_choice.function.name, text)]
    if parser != 'hermes' and tool_choice == 'required':
        try:
            return None, [call(c['name'], c['parameters']) for c in json.loads(text)]
        except (ValueError, KeyError, TypeError):  # cut short by max_tokens: not JSON yet
            return text, []
    if parser is None:
        raise SettingsError("tool_choice 'auto' needs the model's tool-call format: name its vLLM tool parser "
                            "(serve(..., tool_call_parser='hermes'), or engine.tool_parser = 'hermes')", 'tool_choice')
    from vllm.tool_parsers import ToolParserManager
    found = ToolParserManager.get_tool_parser(parser)(tokenizer).extract_tool_calls(text, request=None)
    if not found.tools_called:
        return text, []
    return found.content, [call(c.function.name, c.function.arguments) for c in found.tool_calls]
