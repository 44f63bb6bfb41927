"""A stream whose last event comes without its blank line: the body's end completes it, and
whatever it carries counts (Responses relays end with the usage-bearing response.completed so)."""

import asyncio
import json

import pytest

from ccswitch.dial.dialer import Dialer
from ccswitch.ledger.rows import request_row
from ccswitch.routing.health import HealthBoard
from ccswitch.wire.sse import SSEParser
from tests.support.helpers import MemorySink, make_job, rules_for
from tests.support.loopback_guard import loopback_url


def event(obj: dict) -> bytes:
    return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n".encode()


RESPONSES = [
    event({"type": "response.created", "response": {"id": "r1", "status": "in_progress", "usage": None}}),
    event({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "hi"}),
    event({"type": "response.completed", "response": {"id": "r1", "status": "completed", "output": [], "usage": {
        "input_tokens": 1234, "output_tokens": 56, "total_tokens": 1290}}}),
]
ANTHROPIC = [
    event({"type": "message_start", "message": {"id": "m", "model": "claude-x", "usage": {"input_tokens": 40,
                                                                                      "output_tokens": 1}}}),
    event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
    event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}),
    event({"type": "message_stop"}),
]


async def serve(answer: bytes, *, drop: bool = False) -> tuple[asyncio.Server, int]:
    """An upstream that reads one request and writes `answer`, then closes (or drops) the connection."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(answer)
        await writer.drain()
        if drop:
            writer.transport.abort()
        else:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def serve_once(body: bytes) -> tuple[asyncio.Server, int]:
    return await serve(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                       % (len(body), body))


async def dial(job, server: asyncio.Server) -> MemorySink:
    """The dialer's answer to `job`, its one upstream `server` closed after."""
    sink, dialer = MemorySink(), Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        await dialer.run(job, sink)
    finally:
        await dialer.aclose()
        server.close()
    return sink


@pytest.mark.parametrize("tail", [b"\n\n", b"\n", b""], ids=["blank-line", "line-end", "bare"])
@pytest.mark.parametrize(("protocol", "events", "tokens"), [
    ("openai-responses", RESPONSES, (1234, 56)), ("anthropic", ANTHROPIC, (40, 9))], ids=["responses", "anthropic"])
async def test_the_last_event_counts_without_its_blank_line(protocol, events, tokens, tail):
    server, port = await serve_once(b"".join(events)[:-2] + tail)
    path, route, body = (("/v1/responses", "codex", {"model": "gpt-5", "stream": True, "input": "hi"})
                         if protocol == "openai-responses" else ("/v1/messages", "claude", None))
    prefix = "/v1" if protocol == "openai-responses" else ""
    rules = rules_for(("a", protocol, f"http://127.0.0.1:{port}{prefix}"), routes={route: ["a"]})
    job = make_job(rules, path=path, body=body)
    sink = await dial(job, server)
    assert sink.status == 200 and job.error is None
    parser = SSEParser()
    passed_on = [e.type for e in parser.feed(sink.body) + parser.flush() if e.event]
    assert passed_on[-1] in ("response.completed", "message_stop")
    row = request_row(job)
    assert (row["input_tokens"], row["output_tokens"]) == tokens


def chunk(obj: dict) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def chat_piece(delta: dict, finish: str | None = None) -> bytes:
    return chunk({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


CHAT_CONTENT = [chat_piece({"role": "assistant", "content": ""}), chat_piece({"content": "hi"})]
CHAT_FINISH = chat_piece({}, "stop")
CHAT_USAGE = chunk({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                    "usage": {"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333}})


async def run_chat(body: bytes, serve=serve_once):
    server, port = await serve(body)
    rules = rules_for(("a", "openai-chat", f"http://127.0.0.1:{port}/v1"), routes={"chat": ["a"]})
    job = make_job(rules, path="/v1/chat/completions", body={
        "model": "m", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}]})
    return job, await dial(job, server)


@pytest.mark.parametrize("done", [b"data: [DONE]\n\n", b""], ids=["with-done", "without-done"])
async def test_a_chat_stream_whole_up_to_its_finish_ends_with_one_done_whether_the_upstream_sent_it(done):
    """Some OpenAI-compatible relays end the body after the finish and the usage without `[DONE]`:
    the answer is whole, so it is no failure, and the client gets its `[DONE]` all the same."""
    job, sink = await run_chat(b"".join([*CHAT_CONTENT, CHAT_FINISH, CHAT_USAGE]) + done)
    assert sink.status == 200 and job.error is None
    assert sink.body.endswith(b"data: [DONE]\n\n") and sink.body.count(b"[DONE]") == 1
    row = request_row(job)
    assert (row["input_tokens"], row["output_tokens"]) == (321, 12)


async def test_a_chat_stream_that_ends_before_its_finish_is_still_cut_short():
    job, sink = await run_chat(b"".join(CHAT_CONTENT))
    assert job.error == "stream ended before its terminal event"
    assert b"[DONE]" not in sink.body and b'"error"' in sink.body


async def serve_cut(body: bytes) -> tuple[asyncio.Server, int]:
    """A chunked answer whose connection drops after `body`, without the body's last chunk."""
    return await serve(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                       + b"%x\r\n%s\r\n" % (len(body), body), drop=True)


@pytest.mark.parametrize(("pieces", "whole"), [([*CHAT_CONTENT, CHAT_FINISH, CHAT_USAGE], True),
                                              ([*CHAT_CONTENT], False)], ids=["after-finish", "before-finish"])
async def test_a_chat_stream_whose_connection_drops_is_whole_only_after_its_finish(pieces, whole):
    job, sink = await run_chat(b"".join(pieces), serve=serve_cut)
    assert (job.error is None) is whole
    assert sink.body.endswith(b"data: [DONE]\n\n") is whole


async def run_anthropic(body: bytes, serve=serve_once):
    server, port = await serve(body)
    rules = rules_for(("a", "anthropic", f"http://127.0.0.1:{port}"), routes={"claude": ["a"]})
    job = make_job(rules)
    return job, await dial(job, server)


@pytest.mark.parametrize("serving", [serve_once, serve_cut], ids=["body-ends", "connection-drops"])
async def test_an_anthropic_stream_whole_up_to_its_stop_reason_ends_with_its_message_stop(serving):
    """As a Chat stream without `[DONE]`: a relay that ends after `message_delta` (the stop reason
    and the final usage sent) lost nothing; it is no failure, and the client gets `message_stop`."""
    job, sink = await run_anthropic(b"".join(ANTHROPIC[:-1]), serve=serving)
    assert sink.status == 200 and job.error is None
    parser = SSEParser()
    passed_on = [e.type for e in parser.feed(sink.body) + parser.flush() if e.event]
    assert passed_on[-2:] == ["message_delta", "message_stop"] and passed_on.count("message_stop") == 1
    assert (request_row(job)["input_tokens"], request_row(job)["output_tokens"]) == (40, 9)


async def test_an_anthropic_stream_that_ends_before_its_stop_reason_is_still_cut_short():
    no_reason = event({"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 9}})
    job, sink = await run_anthropic(b"".join(ANTHROPIC[:2]) + no_reason)
    assert job.error == "stream ended before its terminal event"
    assert b"message_stop" not in sink.body and b"event: error" in sink.body


async def test_the_message_stop_added_to_a_whole_anthropic_stream_is_a_named_event_as_anthropic_sends_it():
    """The SDKs dispatch on the `event:` line: a bare `data:` message_stop would not end the message."""
    job, sink = await run_anthropic(b"".join(ANTHROPIC[:-1]))
    assert job.error is None
    assert sink.body.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


async def test_an_anthropic_stream_stays_whole_once_its_stop_reason_came_whatever_delta_follows():
    """The stop reason once given stands: a later `message_delta` without one (a relay's usage
    update) does not take it back."""
    usage_only = event({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 9}})
    job, sink = await run_anthropic(b"".join(ANTHROPIC[:-1]) + usage_only)
    assert sink.status == 200 and job.error is None
    assert sink.body.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


async def test_a_body_that_ends_inside_its_last_event_is_a_cut_not_a_whole_answer():
    """The last event's data cut short where the body ends: dropped (never passed on), and the
    answer, without its stop reason, is cut short."""
    cut = b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_rea\n'
    job, sink = await run_anthropic(b"".join(ANTHROPIC[:2]) + cut)
    assert job.error == "stream ended before its terminal event"
    assert b"stop_rea" not in sink.body and b"event: error" in sink.body
