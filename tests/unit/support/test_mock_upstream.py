"""The mock upstream speaks valid Anthropic / Responses / Chat and each behaviour works."""

from __future__ import annotations

import itertools
import json
import threading
import time

import anthropic
import httpx
import openai
import pytest

from tests.support.mock_upstream import (
    MockUpstream,
    cut_after,
    error_event_after,
    error_json_200,
    hang_before_headers,
    html_200,
    ok,
    slow_stream,
    stall_after,
    status,
)

MSG = [{"role": "user", "content": "hi"}]
TOOL = ("Bash", {"command": "echo hi", "description": "say hi"})


@pytest.fixture
def up():
    with MockUpstream("A") as m:
        yield m


def claude(up: MockUpstream, prefix: str = "") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=up.base_url + prefix, api_key="k", max_retries=0)


def oai(up: MockUpstream, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=up.base_url + prefix, api_key="k", max_retries=0)


def sse_events(resp: httpx.Response) -> list[tuple[str | None, object]]:
    """Parse a (fully read) SSE body into (event, data) pairs."""
    out = []
    for block in resp.text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        data = fields.get("data", "")
        out.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
    return out


ANTHROPIC_BODY = {"model": "claude-x", "max_tokens": 10, "messages": MSG, "stream": True}
RESPONSES_BODY = {"model": "gpt-x", "input": "hi", "stream": True}


# ------------------------------------------------------------------ SDK parsing
def test_anthropic_sdk_nonstream(up):
    msg = claude(up).messages.create(model="claude-x", max_tokens=10, messages=MSG)
    assert msg.content[0].text == "Hello from mock A" and msg.model == "claude-x"
    assert msg.stop_reason == "end_turn"
    u = msg.usage
    assert (u.input_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens, u.output_tokens) == (25, 10, 100, 4)
    assert up.last().path == "/v1/messages" and up.last().json["messages"] == MSG


def test_anthropic_sdk_stream_with_prefix(up):
    with claude(up, "/api").messages.stream(model="claude-x", max_tokens=10, messages=MSG) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert final.content[0].text == "Hello from mock A"
    assert final.usage.output_tokens == 4 and final.usage.cache_read_input_tokens == 100
    for k in ("message_start", "content_block_start", "content_block_delta", "content_block_stop",
              "message_delta", "message_stop"):
        assert k in kinds
    assert up.last().path == "/api/v1/messages"
    raw = httpx.post(up.base_url + "/v1/messages", json=ANTHROPIC_BODY)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["transfer-encoding"] == "chunked"
    assert sum(1 for e in sse_events(raw) if e[0] == "content_block_delta") >= 3


def test_anthropic_tool_use(up):
    up.script(ok(tool=TOOL))
    msg = claude(up).messages.create(model="m", max_tokens=10, messages=MSG)
    assert msg.stop_reason == "tool_use" and msg.content[0].name == "Bash" and msg.content[0].input == TOOL[1]
    up.tool = TOOL
    with claude(up).messages.stream(model="m", max_tokens=10, messages=MSG) as s:
        final = s.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == TOOL[1]


def test_count_tokens(up):
    assert claude(up).messages.count_tokens(model="m", messages=MSG).input_tokens == 25
    assert up.last().protocol == "count_tokens"


def test_responses_sdk(up):
    r = oai(up).responses.create(model="gpt-x", input="hi")
    assert r.output_text == "Hello from mock A" and r.status == "completed"
    assert r.usage.input_tokens == 125 and r.usage.input_tokens_details.cached_tokens == 100
    assert r.usage.output_tokens_details.reasoning_tokens == 4
    kinds = [e.type for e in oai(up, "/openai/v1").responses.create(model="gpt-x", input="hi", stream=True)]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert up.last().path == "/openai/v1/responses"
    with oai(up).responses.stream(model="gpt-x", input="hi") as s:
        final = s.get_final_response()
    assert final.output_text == "Hello from mock A" and final.usage.total_tokens == 125 + 8
    seqs = [d["sequence_number"] for _, d in sse_events(httpx.post(up.base_url + "/responses", json=RESPONSES_BODY))]
    assert seqs == list(range(len(seqs)))


def test_responses_function_call(up):
    up.tool = TOOL
    r = oai(up).responses.create(model="m", input="hi")
    assert r.output[0].type == "function_call" and json.loads(r.output[0].arguments) == TOOL[1]
    with oai(up).responses.stream(model="m", input="hi") as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and final.output[0].name == "Bash"
    assert json.loads(final.output[0].arguments) == TOOL[1]


def test_chat_sdk(up):
    c = oai(up).chat.completions.create(model="gpt-x", messages=MSG)
    assert c.choices[0].message.content == "Hello from mock A"
    assert c.usage.prompt_tokens == 125 and c.usage.prompt_tokens_details.cached_tokens == 100
    chunks = list(oai(up).chat.completions.create(model="gpt-x", messages=MSG, stream=True,
                                                  stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Hello from mock A"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert chunks[-2].choices[0].finish_reason == "stop"
    plain = list(oai(up).chat.completions.create(model="gpt-x", messages=MSG, stream=True))
    assert all(ch.choices and ch.usage is None for ch in plain)


def test_chat_tool_calls(up):
    up.tool = TOOL
    c = oai(up).chat.completions.create(model="m", messages=MSG)
    assert c.choices[0].finish_reason == "tool_calls"
    assert json.loads(c.choices[0].message.tool_calls[0].function.arguments) == TOOL[1]
    with oai(up).chat.completions.stream(model="m", messages=MSG) as s:
        final = s.get_final_completion()
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == TOOL[1]


# ------------------------------------------------------------------ recording
def test_recording_and_404(up):
    r = httpx.get(up.base_url + "/api/claude_code/settings?x=1&y=", headers={"X-Foo": "Bar"})
    assert r.status_code == 404 and "error" in r.json()
    up.script(status(500))
    assert httpx.get(up.base_url + "/v1/models").status_code == 404
    assert up.pending() == 1  # unknown paths don't consume behaviours
    rec = up.requests[0]
    assert (rec.method, rec.path, rec.query, rec.headers["x-foo"], rec.json) == \
        ("GET", "/api/claude_code/settings", {"x": "1", "y": ""}, "Bar", None)
    httpx.post(up.base_url + "/v1/messages?beta=true", json={**ANTHROPIC_BODY, "stream": False})
    assert up.last().query == {"beta": "true"} and up.last().body.startswith(b"{")
    assert up.paths() == ["/api/claude_code/settings", "/v1/models", "/v1/messages"]
    up.clear()
    assert up.requests == [] and up.pending() == 0


def test_keep_alive_and_configured_text():
    with MockUpstream("B", text="custom reply text") as m, httpx.Client(base_url=m.base_url) as c:
        for _ in range(3):
            assert c.post("/chat/completions", json={"model": "m", "messages": MSG}).json()[
                "choices"][0]["message"]["content"] == "custom reply text"
        assert len(m._server.conns) == 1
        assert c.post("/v1/messages", json={"model": "m"}).json()["usage"]["output_tokens"] == 3


# ------------------------------------------------------------------ behaviours
def test_status_bodies(up):
    up.script(status(529), status(429, retry_after=3), status(502, body="bad gateway"))
    r = httpx.post(up.base_url + "/v1/messages", json=ANTHROPIC_BODY)
    assert r.status_code == 529
    assert r.json() == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    r = httpx.post(up.base_url + "/responses", json=RESPONSES_BODY)
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert r.json()["error"]["code"] == "rate_limit_exceeded" and "message" in r.json()["error"]
    r = httpx.post(up.base_url + "/chat/completions", json={"model": "m"})
    assert (r.status_code, r.text) == (502, "bad gateway")
    assert httpx.post(up.base_url + "/chat/completions", json={"model": "m"}).status_code == 200
    up.default = status(500)
    with pytest.raises(anthropic.InternalServerError):
        claude(up).messages.create(model="m", max_tokens=1, messages=MSG)


def test_hang_before_headers(up):
    up.script(hang_before_headers(0.5), hang_before_headers(0.1))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(up.base_url + "/v1/messages", json=ANTHROPIC_BODY, timeout=0.1)
    t = time.monotonic()
    assert httpx.post(up.base_url + "/responses", json=RESPONSES_BODY).status_code == 200
    assert time.monotonic() - t >= 0.1


def test_stop_is_prompt_while_hanging():
    m = MockUpstream().start()
    m.default = hang_before_headers(30)
    errors = []

    def call() -> None:
        with pytest.raises(httpx.HTTPError) as raised:
            httpx.post(m.base_url + "/v1/messages", json=ANTHROPIC_BODY, timeout=5)
        errors.append(raised)
    th = threading.Thread(target=call)
    th.start()
    while not m.requests:
        time.sleep(0.01)
    t = time.monotonic()
    m.stop()
    th.join(2)
    assert time.monotonic() - t < 1.5 and errors and not th.is_alive()


def test_stall_after(up):
    up.script(stall_after(2, 0.25))
    stamps = []
    with httpx.stream("POST", up.base_url + "/v1/messages", json=ANTHROPIC_BODY) as r:
        for line in r.iter_lines():
            if line.startswith("event:"):
                stamps.append(time.monotonic())
    assert len(stamps) == len(sse_events(httpx.post(up.base_url + "/v1/messages", json=ANTHROPIC_BODY)))
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # the stall is where it was put, whatever else a loaded machine delays
    assert gaps[1] >= 0.2 and gaps.index(max(gaps)) == 1


def test_error_event_after(up):
    up.script(error_event_after(2), error_event_after(3))
    evs = sse_events(httpx.post(up.base_url + "/v1/messages", json=ANTHROPIC_BODY))
    assert [e for e, _ in evs] == ["message_start", "content_block_start", "error"]
    assert evs[-1][1]["error"]["type"] == "overloaded_error"
    evs = sse_events(httpx.post(up.base_url + "/responses", json=RESPONSES_BODY))
    assert [e for e, _ in evs][-1] == "response.failed" and len(evs) == 4
    assert evs[-1][1]["sequence_number"] == 3 and evs[-1][1]["response"]["status"] == "failed"
    up.script(error_event_after(2), error_event_after(4))
    assert list(oai(up).responses.create(model="m", input="hi", stream=True))[-1].type == "response.failed"
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        with claude(up).messages.stream(model="m", max_tokens=10, messages=MSG) as s:
            s.get_final_message()


def test_cut_after(up):
    up.script(cut_after(3), cut_after(1))
    got = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", up.base_url + "/responses", json=RESPONSES_BODY) as r:
            got.extend(line for line in r.iter_lines() if line.startswith("data:"))
    assert len(got) == 3
    with pytest.raises(httpx.RemoteProtocolError):  # non-streaming: half a JSON body
        httpx.post(up.base_url + "/v1/messages", json={**ANTHROPIC_BODY, "stream": False})
    assert httpx.post(up.base_url + "/v1/messages", json=ANTHROPIC_BODY).status_code == 200


def test_html_and_error_json_200(up):
    up.script(html_200(), error_json_200(), error_json_200())
    r = httpx.post(up.base_url + "/v1/messages", json=ANTHROPIC_BODY)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and b"<html" in r.content
    r = httpx.post(up.base_url + "/v1/messages", json=ANTHROPIC_BODY)
    assert r.status_code == 200 and r.json()["type"] == "error"
    r = httpx.post(up.base_url + "/responses", json=RESPONSES_BODY)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json" and "error" in r.json()


def test_slow_stream(up):
    up.script(slow_stream(5, 0.03))
    t = time.monotonic()
    evs = sse_events(httpx.post(up.base_url + "/responses", json=RESPONSES_BODY))
    assert time.monotonic() - t >= 0.14
    deltas = [d["delta"] for e, d in evs if e == "response.output_text.delta"]
    assert deltas == [f"tok{i} " for i in range(5)] and evs[-1][1]["response"]["usage"]["output_tokens"] == 5 + 4


def test_closed_port():
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{MockUpstream.closed_port()}/", timeout=1)
