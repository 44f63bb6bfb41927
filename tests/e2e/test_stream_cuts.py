"""End to end: an upstream stream that breaks after content was sent (cut in the middle
of an event, or one event too large to trust) reaches the client as whole events
followed by one separate error event, so the official SDKs raise an API error,
never a JSON decoding error."""

import json

import anthropic
import httpx
import openai
import pytest

from ccswitch.wire.sse import parse_all
from tests.support.helpers import CLIENT_KEY, KEY_A
from tests.support.mock_upstream import MockUpstream, cut_mid_event, huge_event
from tests.support.proxy_process import Proxy

HUGE = 20 * 1024 * 1024     # over the parser's 16 MiB limit for one event
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cuts")
    with MockUpstream("A") as a:
        rules = tmp / "rules.yaml"
        rules.write_text(f"""
upstreams:
  - {{name: claude-a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}', only_models: ["claude-*"]}}
  - {{name: resp-a, protocol: openai-responses, base_url: '{a.base_url}/v1', api_key: '{KEY_A}'}}
  - {{name: chat-a, protocol: openai-chat, base_url: '{a.base_url}/v1', api_key: '{KEY_A}', only_models: ["gpt-*"]}}
routes: {{claude: [claude-a], codex: [resp-a], chat: [chat-a, claude-a]}}
""")
        with Proxy(rules, tmp) as proxy:
            yield proxy, a


@pytest.fixture(autouse=True)
def clean(world):
    world[1].clear()


def wire(proxy, path: str, body: dict) -> bytes:
    """The client's raw response body."""
    with httpx.stream("POST", proxy.reverse_url + path, json=body, timeout=60,
                      headers={"x-api-key": CLIENT_KEY, "authorization": f"Bearer {CLIENT_KEY}"}) as r:
        assert r.status_code == 200
        return b"".join(r.iter_bytes())


# (client path, model, behaviour): the cut falls inside a content event, after content was sent
CUTS = {
    "anthropic": ("/v1/messages", "claude-x", cut_mid_event(4)),
    "anthropic-huge-event": ("/v1/messages", "claude-x", huge_event(4, HUGE)),
    "responses": ("/v1/responses", "gpt-x", cut_mid_event(5)),
    "chat": ("/v1/chat/completions", "gpt-x", cut_mid_event(2)),
    "chat-from-anthropic": ("/v1/chat/completions", "claude-x", cut_mid_event(4)),
}


@pytest.mark.parametrize("case", CUTS)
def test_a_broken_stream_reaches_the_client_as_whole_events_and_a_last_error_event(world, case):
    proxy, a = world
    path, model, behaviour = CUTS[case]
    a.script(behaviour)
    body = {"model": model, "stream": True, "max_tokens": 20, "messages": MESSAGES}
    if path == "/v1/responses":
        body = {"model": model, "stream": True, "input": "hi"}
    raw = wire(proxy, path, body)
    assert len(raw) < 1024 * 1024           # nothing of the oversized event was passed on
    assert raw.endswith(b"\n\n")
    events = [e for e in parse_all(raw) if e.data]
    for event in events:                     # every event whole: its data is JSON
        assert event.data == "[DONE]" or event.json() is not None, event.raw[:200]
    assert b"Hello" in raw                   # the content before the failure was sent
    last = events[-1].json()
    if path == "/v1/responses":      # the response it began, failed (Codex reads no `error` event)
        assert last["type"] == "response.failed" and last["response"]["status"] == "failed"
        error = last["response"]["error"]
        assert "upstream" in error["message"] and error["code"] == "server_error"
        return
    error = last.get("error") or last
    assert "upstream" in error["message"] and error.get("type", last.get("type")) in ("error", "api_error",
                                                                                     "server_error")


def anthropic_stream_text(proxy) -> tuple[str, BaseException]:
    client = anthropic.Anthropic(api_key=CLIENT_KEY, base_url=proxy.reverse_url, max_retries=0)
    got = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="claude-x", max_tokens=20, messages=MESSAGES) as stream:
            got.extend(stream.text_stream)
    return "".join(got), caught.value


def test_anthropic_sdk_raises_an_api_error_when_the_upstream_cuts_mid_event(world):
    proxy, a = world
    a.script(cut_mid_event(4))
    text, error = anthropic_stream_text(proxy)
    assert text == "Hello" and "upstream claude-a" in str(error)


def test_anthropic_sdk_raises_an_api_error_on_an_event_over_16_mib(world):
    proxy, a = world
    a.script(huge_event(4, HUGE))
    text, error = anthropic_stream_text(proxy)
    assert text == "Hello" and "16 MiB" in str(error)


@pytest.mark.parametrize("model", ["gpt-x", "claude-x"], ids=["chat", "chat-from-anthropic"])
def test_openai_sdk_raises_an_api_error_when_the_upstream_cuts_mid_event(world, model):
    proxy, a = world
    a.script(cut_mid_event(2 if model == "gpt-x" else 4))
    client = openai.OpenAI(api_key=CLIENT_KEY, base_url=proxy.reverse_url + "/v1", max_retries=0)
    got = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            got.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(got) == "Hello" and "upstream" in str(caught.value)
    assert not isinstance(caught.value.__cause__ or caught.value.__context__, json.JSONDecodeError)
