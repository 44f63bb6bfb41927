"""What OpenAI refuses with its 400 is refused alike on the way to an Anthropic and a Responses
upstream, not left out or mended unsaid by either conversion."""

import pytest

from ccswitch.wire.exchange import RenderError
from tests.unit.translate.test_chat_anthropic import chat, user
from tests.unit.translate.test_chat_responses import convert


def to_anthropic(**extra):
    return chat(user(), **extra)


def to_responses(**extra):
    return convert(**extra)


SCHEMA = {"type": "object", "properties": {"x": {"type": "string"}}}


@pytest.mark.parametrize("to", [to_anthropic, to_responses], ids=["anthropic", "responses"])
@pytest.mark.parametrize("extra, message", [
    ({"stop": 5}, "stop must be a string or an array of strings"),
    ({"stop": ["END", 1]}, "stop must be a string or an array of strings"),
    ({"response_format": {"type": "yaml"}}, 'response_format.type must be one of text, json_object, json_schema, '
                                            'not "yaml"'),
    ({"response_format": "json"}, "response_format.type must be one of text, json_object, json_schema, not null"),
    ({"response_format": {"type": "json_schema"}}, r"response_format\.json_schema must be an object \(its name and schema\)"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
     r"tools\[0\]\.function\.parameters must be a JSON Schema object"),
    ({"reasoning_effort": "ultra"}, "reasoning_effort must be one of none, minimal, low, medium, high"),
])
def test_a_value_openai_would_refuse_is_refused_on_the_way_to_either_upstream(to, extra, message):
    with pytest.raises(RenderError, match=message):
        to(**extra)


@pytest.mark.parametrize("to", [to_anthropic, to_responses], ids=["anthropic", "responses"])
def test_the_shapes_openai_takes_pass(to):
    to(stop="END", response_format={"type": "text"})
    to(stop=["END", "STOP"], response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}})
    to(response_format={"type": "json_object"}, reasoning_effort="low",
       tools=[{"type": "function", "function": {"name": "f"}},
              {"type": "function", "function": {"name": "g", "parameters": SCHEMA}}])
