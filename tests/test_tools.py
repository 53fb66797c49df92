"""The grammar a forced tool_choice puts on the pt backend's answer, against vLLM's own: swiftnb/tools.py writes
vLLM's JSON schema again (the pt server imports no vLLM), so this compares the two on the same requests."""
import copy

import pytest
from pydantic import BaseModel
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.tool_parsers.utils import get_json_schema_from_tools

from swiftnb import tools as tool_calls
from swiftnb.errors import SettingsError


class Item(BaseModel):
    name: str
    count: int


class Order(BaseModel):  # a nested model: its JSON schema holds $defs, as LangChain's tools from pydantic do
    items: list[Item]


def function(name, parameters=None):
    return {'type': 'function', 'function': {'name': name, **({'parameters': parameters} if parameters else {})}}


TOOLS = [function('weather', {'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}),
         function('order', Order.model_json_schema()), function('now')]


@pytest.mark.parametrize('parallel_tool_calls', [None, True, False])
@pytest.mark.parametrize('tool_choice', ['required', {'type': 'function', 'function': {'name': 'order'}},
                                         {'type': 'function', 'function': {'name': 'now'}}, 'auto', 'none'])
def test_forced_tool_calls_get_vllms_json_schema(tool_choice, parallel_tool_calls):
    tools, choice = tool_calls.check(copy.deepcopy(TOOLS), tool_choice)
    ours = tool_calls.constraint(tools, choice, parallel=parallel_tool_calls is not False)
    request = ChatCompletionRequest(messages=[{'role': 'user', 'content': 'hi'}], tools=copy.deepcopy(TOOLS),
                                    tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls)
    theirs = get_json_schema_from_tools(request.tool_choice, request.tools, request.parallel_tool_calls)
    assert (ours.json_schema if ours else None) == theirs


def test_two_tools_that_define_one_name_two_ways_are_refused_in_one_line():
    other = function('other', {'type': 'object', 'properties': {'x': {'$ref': '#/$defs/Item'}},
                                '$defs': {'Item': {'type': 'string'}}})
    tools, choice = tool_calls.check([*copy.deepcopy(TOOLS), other], 'required')
    with pytest.raises(SettingsError, match="tools: the definition 'Item' has two schemas among the tools") as error:
        tool_calls.constraint(tools, choice)
    assert error.value.param == 'tools'


@pytest.mark.parametrize('tool_choice', ['required', {'type': 'function', 'function': {'name': 'order'}}])
def test_a_hermes_model_gets_a_grammar_for_tools_whose_parameters_hold_defs(tool_choice):
    """The hermes grammar (xgrammar from the calls' JSON schema) finds the nested model's definition at the root."""
    tools, choice = tool_calls.check(copy.deepcopy(TOOLS), tool_choice)
    grammar = tool_calls.constraint(tools, choice, 'hermes').grammar
    assert '<tool_call>' in grammar and 'defs_Item' in grammar and '\\"count\\"' in grammar  # Item's, from $defs
