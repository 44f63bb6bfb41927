"""The chat route end to end: the official `openai` SDK -> mitmdump + ccswitch ->
a mock Anthropic upstream or a mock Responses upstream, converted both ways."""

import base64

import openai
import pytest

from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, status
from tests.support.proxy_process import Proxy

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat")
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp / "rules.yaml"
        rules.write_text(f"""
upstreams:
  - {{name: anth, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}', only_models: ["claude-*"]}}
  - {{name: resp, protocol: openai-responses, base_url: '{b.base_url}/v1', api_key: '{KEY_B}',
     only_models: ["gpt-*", "claude-*"]}}
  - {{name: codex-backend, protocol: openai-responses, base_url: '{b.base_url}/backend-api/codex',
     api_key: '{KEY_B}', only_models: ["codex-*"]}}
routes: {{chat: [anth, resp, codex-backend]}}
""")
        with Proxy(rules, tmp) as proxy:
            yield proxy, a, b


@pytest.fixture
def client(world):
    proxy, a, b = world
    a.clear(), b.clear()
    a.tool = b.tool = None
    return openai.OpenAI(api_key=CLIENT_KEY, base_url=proxy.reverse_url + "/v1", max_retries=0)


def ask(**extra):
    return {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize("model,upstream", [("claude-x", "A"), ("gpt-x", "B")])
def test_stream_with_usage(world, client, model, upstream):
    proxy, a, b = world
    chunks = list(client.chat.completions.create(model=model, stream=True, stream_options={"include_usage": True},
                                                 **ask()))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"Hello from mock {upstream}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    # Anthropic's 25 + 10 written + 100 read; the Responses mock reports 125 with 100 cached
    assert chunks[-1].choices == [] and usage.prompt_tokens == (135 if upstream == "A" else 125)
    assert usage.prompt_tokens_details.cached_tokens == 100
    mock = a if upstream == "A" else b
    seen = mock.last()
    assert seen.path == ("/v1/messages" if upstream == "A" else "/v1/responses")
    assert CLIENT_KEY not in str(seen.headers)


@pytest.mark.parametrize("model,upstream", [("claude-x", "A"), ("gpt-x", "B")])
def test_non_stream(world, client, model, upstream):
    done = client.chat.completions.create(model=model, **ask())
    assert done.choices[0].message.content == f"Hello from mock {upstream}"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.prompt_tokens == (135 if upstream == "A" else 125)


@pytest.mark.parametrize("model", ["claude-x", "gpt-x"])
def test_streamed_tool_call_accumulates_in_the_sdk_helper(world, client, model):
    proxy, a, b = world
    a.tool = b.tool = ("get_weather", {"city": "Paris"})
    with client.chat.completions.stream(model=model, tools=[WEATHER_TOOL], **ask()) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.parsed_arguments in (None, {"city": "Paris"})
    assert __import__("json").loads(call.function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"


def test_image_reaches_anthropic_as_base64_block(world, client):
    proxy, a, _ = world
    content = [{"type": "text", "text": "what is this?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    client.chat.completions.create(model="claude-x", messages=[{"role": "user", "content": content}])
    blocks = a.last().json["messages"][0]["content"]
    image = next(b for b in blocks if b["type"] == "image")
    assert image["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}


def test_failover_across_protocols(world, client):
    proxy, a, b = world
    a.script(status(529))
    chunks = list(client.chat.completions.create(model="claude-x", stream=True, **ask()))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from mock B"
    assert b.last().path == "/v1/responses" and b.last().headers["authorization"] == f"Bearer {KEY_B}"


def test_a_request_no_upstream_can_take_is_400_before_any_upstream_call(world, client):
    proxy, a, b = world
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model="claude-x", n=2, **ask())
    assert not a.requests and not b.requests


def test_an_upstream_that_cannot_take_a_request_is_left_out_and_the_next_serves_it(world, client):
    proxy, a, b = world
    tiff = [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]
    answer = client.chat.completions.create(model="claude-x", messages=[{"role": "user", "content": tiff}])
    assert answer.choices[0].message.content == "Hello from mock B"
    assert not a.requests and b.last().path == "/v1/responses"


def test_upstream_error_is_converted_to_openai_format(world, client):
    proxy, a, b = world
    a.script(status(400))
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="claude-x", **ask())
    assert err.value.body["type"] == "invalid_request_error"


def test_codex_backend_streams_upstream_and_is_aggregated_for_a_plain_client(world, client):
    proxy, _, b = world
    done = client.chat.completions.create(model="codex-mini", max_tokens=50, **ask())
    assert done.choices[0].message.content == "Hello from mock B" and done.choices[0].finish_reason == "stop"
    sent = b.last()
    assert sent.path == "/backend-api/codex/responses"
    assert sent.json["stream"] is True and sent.json["store"] is False and "max_output_tokens" not in sent.json
