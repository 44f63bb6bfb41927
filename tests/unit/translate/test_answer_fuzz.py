"""Any JSON an upstream may send back: the chat route's answer converters turn a recorded
stream or a whole answer with one value somewhere in it replaced by a value of another JSON
type into chat chunks or a completion, or end it with an error the client can read. An
exception instead left the client with "ccswitch internal error", the upstream neither
counted as failing nor failed over.

Seeded, so a failure names the case that reproduces it."""

from __future__ import annotations

import copy
import json
import random

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ccswitch.config.models import Upstream
from ccswitch.translate import translation_for
from ccswitch.translate.chat.responses import UpstreamFailed
from ccswitch.vocab import Protocol
from ccswitch.wire.exchange import ClientRequest
from ccswitch.wire.sse import SSEParser, format_event
from tests.support import FIXTURES
from tests.support.json_places import places, replaced

CASES = 1500
ODD_VALUES = [None, "x", "", 7, -1, 1.5, True, [], [1], {}, {"type": "x"}, "\u0000"]

ANTHROPIC = Upstream(name="anth", protocol=Protocol.ANTHROPIC, base_url="https://anthropic.example",
                     models={"gpt-4o": "claude-sonnet-4-5"})
RESPONSES = Upstream(name="resp", protocol=Protocol.RESPONSES, base_url="https://api.openai.com/v1")
STREAMS = {ANTHROPIC.name: FIXTURES / "anthropic/thinking_text_two_tools.sse",
           RESPONSES.name: FIXTURES / "responses/reasoning_text_two_calls.sse"}
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "high",
        "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
                  {"type": "function", "function": {"name": "get_time"}}]}


def chat_request(stream: bool, **extra) -> ClientRequest:
    body = {**BODY, "stream": stream, **extra}
    return ClientRequest(route="chat", endpoint="chat", method="POST", url="https://api.openai.com/v1/chat/completions",
                         headers=[], body=json.dumps(body).encode(), json=body, model="gpt-4o", stream=stream,
                         client_protocol="openai-chat")


def recorded_events(upstream: Upstream) -> list[dict]:
    events = SSEParser().feed(STREAMS[upstream.name].read_bytes())
    return [event.json() for event in events if isinstance(event.json(), dict)]


def whole_answer(upstream: Upstream) -> dict:
    """The recorded stream's answer as one body: Anthropic's message, the Responses `response`."""
    events = recorded_events(upstream)
    if upstream is RESPONSES:
        return next(e["response"] for e in events if e.get("type") == "response.completed")
    message = copy.deepcopy(next(e["message"] for e in events if e.get("type") == "message_start"))
    message["content"] = [{"type": "thinking", "thinking": "hm", "signature": "sig"}, {"type": "text", "text": "Hi"},
                          {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]
    message["stop_reason"] = "tool_use"
    return message


def check_chunks(out: bytes) -> None:
    """What the client gets: SSE data lines, each a chunk the SDK reads, an error or `[DONE]`."""
    for event in SSEParser().feed(out):
        chunk = event.json()
        if event.data != "[DONE]" and "error" not in chunk:
            ChatCompletionChunk.model_validate(chunk)


@pytest.mark.parametrize("upstream", [ANTHROPIC, RESPONSES], ids=lambda u: u.protocol)
def test_a_stream_with_an_odd_value_anywhere_converts_or_ends_in_an_error(upstream):
    events = recorded_events(upstream)
    spots = [(i, path) for i, event in enumerate(events) for path in places(event) if path != ("type",)]
    rng = random.Random(f"stream-{upstream.protocol}")
    translation = translation_for("openai-chat", upstream.protocol)
    for case in range(CASES):
        i, path = rng.choice(spots)
        odd = rng.choice(ODD_VALUES)
        stream = [*events[:i], replaced(events[i], path, odd), *events[i + 1:]]
        converter = translation.stream(chat_request(True), upstream)
        try:
            out = b"".join(converter.feed(event) for event in SSEParser().feed(
                b"".join(format_event(e, e.get("type")) for e in stream))) + converter.finish()
        except Exception as exc:
            pytest.fail(f"case {case}: event {i} ({events[i].get('type')}) at {path!r} = {odd!r}: {exc!r}")
        try:
            check_chunks(out)
        except ValueError as exc:
            pytest.fail(f"case {case}: event {i} ({events[i].get('type')}) at {path!r} = {odd!r}: {exc}")


@pytest.mark.parametrize("upstream", [ANTHROPIC, RESPONSES], ids=lambda u: u.protocol)
def test_a_whole_answer_with_an_odd_value_anywhere_converts(upstream):
    answer = whole_answer(upstream)
    spots = list(places(answer))
    rng = random.Random(f"whole-{upstream.protocol}")
    translation = translation_for("openai-chat", upstream.protocol)
    for case in range(CASES):
        path, odd = rng.choice(spots), rng.choice(ODD_VALUES)
        body = json.dumps(replaced(answer, path, odd)).encode()
        try:
            done = translation.convert_response(body, chat_request(False), upstream)
        except UpstreamFailed:
            continue            # the client's error: a failed answer, as the odd value may say
        except Exception as exc:
            pytest.fail(f"case {case}: at {path!r} = {odd!r}: {exc!r}")
        ChatCompletion.model_validate(json.loads(json.dumps(done)))
