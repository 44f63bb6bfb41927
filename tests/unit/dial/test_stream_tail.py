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


async def serve_once(body: bytes) -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("tail", [b"\n\n", b"\n", b""], ids=["blank-line", "line-end", "bare"])
@pytest.mark.parametrize(("protocol", "events", "tokens"), [
    ("openai-responses", RESPONSES, (1234, 56)), ("anthropic", ANTHROPIC, (40, 9))], ids=["responses", "anthropic"])
async def test_the_last_event_counts_without_its_blank_line(protocol, events, tokens, tail):
    server, port = await serve_once(b"".join(events)[:-2] + tail)
    path, route, body = (("/v1/responses", "codex", {"model": "gpt-5", "stream": True, "input": "hi"})
                         if protocol == "openai-responses" else ("/v1/messages", "claude", None))
    rules = rules_for(("a", protocol, f"http://127.0.0.1:{port}/v1"), routes={route: ["a"]})
    job = make_job(rules, path=path, body=body)
    sink, dialer = MemorySink(), Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        await dialer.run(job, sink)
    finally:
        await dialer.aclose()
        server.close()
    assert sink.status == 200 and job.error is None
    parser = SSEParser()
    passed_on = [e.type for e in parser.feed(sink.body) + parser.flush() if e.event]
    assert passed_on[-1] in ("response.completed", "message_stop")
    row = request_row(job)
    assert (row["input_tokens"], row["output_tokens"]) == tokens
