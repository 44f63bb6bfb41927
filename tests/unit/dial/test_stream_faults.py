"""A relay's stream faults the hold-back must catch: nothing at all after a 200 head (not
committed as an empty stream at the hold-back, so the next upstream can still take it), and an
event whose data is not JSON (never passed on: the client's SDK fails parsing it)."""

import asyncio

import pytest

from ccswitch.dial.dialer import Dialer
from ccswitch.routing.health import HealthBoard
from tests.support.helpers import MemorySink, make_job, rules_for
from tests.support.mock_upstream import stall_after
from tests.unit.dial.test_dialer import FAST, event_types, run, text_of, two
from tests.unit.dial.test_stream_tail import ANTHROPIC

SILENT = "first_byte timeout (no event after the response head)"


async def test_a_stream_silent_after_its_head_is_not_committed_empty_and_fails_over(mock_a, mock_b):
    mock_a.script(stall_after(0, 3))     # 200 and its head, then nothing
    extra = FAST.replace("hold_back: 2s", "hold_back: 200ms").replace("idle: 500ms", "idle: 5s")
    loop = asyncio.get_running_loop()
    start = loop.time()
    job, sink, health = await run(two(mock_a, mock_b, extra=extra))
    took = loop.time() - start
    assert sink.headers["x-ccswitch-upstream"] == "b" and text_of(sink.body)     # the client saw only b
    assert (job.attempts[0].status, job.attempts[0].error) == (200, SILENT) and health.get("a").failures == 1
    assert 0.45 < took < 1.5         # first_byte (500 ms) after the head, not idle (5 s)


async def test_bytes_after_the_head_still_commit_at_the_hold_back_on_a_last_chance(mock_a, mock_b):
    # with another upstream to go to, content has `first_byte` to come instead (test_dialer)
    mock_a.script(stall_after(1, 0.8))   # message_start, then quiet past the hold-back
    extra = FAST.replace("hold_back: 2s", "hold_back: 200ms").replace("idle: 500ms", "idle: 5s")
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=extra))
    assert sink.headers["x-ccswitch-upstream"] == "a" and job.ttfb_ms < 600 and job.error is None


CUT = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_de\n\n'


async def serve_in_two(first: bytes, second: bytes) -> tuple[asyncio.Server, int]:
    """An SSE upstream that writes `first`, waits a moment (the client has it), then `second`."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(first) + len(second), first))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(second)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def dial_a_then_b(first: bytes, second: bytes, mock_b):
    """(job, sink) of a request whose upstream a writes `first`, then `second`; b is the mock."""
    server, port = await serve_in_two(first, second)
    rules = rules_for(("a", "anthropic", f"http://127.0.0.1:{port}"), ("b", "anthropic", mock_b.base_url),
                      extra=FAST)
    try:
        job, sink, _ = await run(rules)
    finally:
        server.close()
    return job, sink


@pytest.mark.parametrize("before", ["opening only", "after content"])
async def test_an_event_that_is_not_json_is_never_passed_on(mock_b, before):
    opening = ANTHROPIC[0] if before == "opening only" else ANTHROPIC[0] + ANTHROPIC[1]
    job, sink = await dial_a_then_b(opening, CUT + b"".join(ANTHROPIC[1:]), mock_b)
    assert b"text_de\n" not in sink.body and "not JSON" in job.attempts[0].error
    if before == "opening only":      # nothing was committed: b takes it, unseen
        assert sink.headers["x-ccswitch-upstream"] == "b" and job.error is None and len(job.attempts) == 2
    else:                             # the client has a's text: the stream ends with an error event
        assert sink.headers["x-ccswitch-upstream"] == "a" and event_types(sink.body)[-1] == "error"
        assert "not JSON" in job.error and len(job.attempts) == 1


async def test_our_error_event_on_a_responses_stream_follows_its_sequence_numbers(mock_a):
    from tests.support.mock_upstream import cut_after
    mock_a.script(cut_after(4))         # response.created … some text, then the connection drops
    rules = rules_for(("a", "openai-responses", f"{mock_a.base_url}/v1"), routes={"codex": ["a"]},
                      extra=FAST.replace("hold_back: 2s", "hold_back: 0s"))
    job, sink, _ = await run(rules, path="/v1/responses", body={"model": "gpt-5", "stream": True, "input": "hi"})
    from ccswitch.wire.sse import SSEParser
    events = [e.json() for e in SSEParser().feed(sink.body)]
    # the response it began ends failed, with the reason where Codex reads it
    assert events[-1]["type"] == "response.failed" and job.error
    failed = events[-1]["response"]
    assert failed["id"] == events[0]["response"]["id"] and failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": f"upstream a: {job.error}"}
    numbers = [e["sequence_number"] for e in events]
    assert numbers[-1] == max(numbers[:-1]) + 1, numbers


async def test_good_events_in_the_same_read_as_a_cut_line_still_reach_the_client(mock_b):
    # committed on "hi"; the next read holds " there" and then a cut line: " there" is the client's
    delta = ANTHROPIC[1].replace(b'"hi"', b'" there"')
    job, sink = await dial_a_then_b(ANTHROPIC[0] + ANTHROPIC[1], delta + CUT, mock_b)
    assert text_of(sink.body) == "hi there" and event_types(sink.body)[-1] == "error"


async def test_a_chat_stream_silent_after_its_head_is_committed_at_the_hold_back_as_before(mock_a, mock_b):
    # a Chat reasoning model may send nothing until its first token: no failover (and a second bill)
    mock_a.script(stall_after(0, 1.0))
    rules = rules_for(("a", "openai-chat", f"{mock_a.base_url}/v1"), ("b", "openai-chat", f"{mock_b.base_url}/v1"),
                      routes={"chat": ["a", "b"]},
                      extra=FAST.replace("hold_back: 2s", "hold_back: 200ms").replace("idle: 500ms", "idle: 5s"))
    body = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    job, sink, _ = await run(rules, path="/v1/chat/completions", body=body)
    assert sink.headers["x-ccswitch-upstream"] == "a" and len(job.attempts) == 1 and job.error is None


async def test_a_silent_stream_waits_first_byte_even_when_idle_is_shorter(mock_a, mock_b):
    """idle 200 ms, first_byte 600 ms: the idle timer fired first and committed the empty stream,
    which then ended with an error event, b never tried."""
    mock_a.script(stall_after(0, 3))
    extra = ("timeouts: {connect: 2s, first_byte: 600ms, total: 3s, idle: 200ms}\n"
             "failover: {retry_backoff: 10ms, hold_back: 100ms}\n")
    job, sink, _ = await run(two(mock_a, mock_b, extra=extra))
    assert sink.headers["x-ccswitch-upstream"] == "b" and text_of(sink.body)
    assert (job.attempts[0].status, job.attempts[0].error) == (200, SILENT)


async def test_a_piece_of_a_first_event_then_silence_is_not_committed_empty(mock_a, mock_b):
    server, port = await serve_in_pieces([b"event: mes"], then_wait=3)
    try:
        extra = FAST.replace("hold_back: 2s", "hold_back: 200ms").replace("idle: 500ms", "idle: 5s")
        rules = rules_for(("a", "anthropic", f"http://127.0.0.1:{port}"), ("b", "anthropic", mock_b.base_url),
                          extra=extra)
        job, sink, _ = await run(rules)
    finally:
        server.close()
    assert sink.headers["x-ccswitch-upstream"] == "b" and text_of(sink.body)
    assert job.attempts[0].error == SILENT


async def serve_in_pieces(pieces: list[bytes], then_wait: float) -> tuple[asyncio.Server, int]:
    """An SSE upstream (chunked) that writes each piece, then keeps the connection quiet."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
        await asyncio.sleep(then_wait)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_after_the_first_event_idle_applies_before_the_commit_too(mock_a, mock_b):
    mock_a.script(stall_after(1, 3))     # message_start, then quiet: idle (200 ms) comes before the hold-back
    extra = ("timeouts: {connect: 2s, first_byte: 2s, total: 4s, idle: 200ms}\n"
             "failover: {retry_backoff: 10ms, hold_back: 1s}\n")
    job, sink, _ = await run(two(mock_a, mock_b, extra=extra))
    assert sink.headers["x-ccswitch-upstream"] == "b" and text_of(sink.body)     # unseen, uncommitted
    assert job.attempts[0].error == "idle timeout"


async def a_then_b_in_one_read_each(a_body: bytes):
    """(job, sink, health) of a request to in-memory upstreams a and b, each answering its SSE
    body whole in one read: a `a_body`, b a whole answer of "from b"."""
    from ccswitch.net import http1
    from tests.support.memory_upstream import MemoryUpstream
    bodies = {"a.invalid": a_body, "b.invalid": b"".join(ANTHROPIC).replace(b'"hi"', b'"from b"')}
    upstreams = {host: MemoryUpstream(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                      b"content-length: %d\r\n\r\n%s" % (len(body), body))
                 for host, body in bodies.items()}

    async def connect(protocol_factory, host, port, context):
        return await upstreams[host](protocol_factory, host, port, context)

    rules = rules_for(("a", "anthropic", "http://a.invalid"), ("b", "anthropic", "http://b.invalid"), extra=FAST)
    health = HealthBoard()
    job, sink, dialer = make_job(rules), MemorySink(), Dialer(health, client=http1.UpstreamClient(connect=connect))
    try:
        await dialer.run(job, sink)
    finally:
        await dialer.aclose()
    return job, sink, health


@pytest.mark.parametrize("fault", ["error event", "not JSON"])
async def test_a_fault_behind_the_first_content_in_the_same_read_comes_after_the_commit(fault):
    """The first content commits the stream, whether the error behind it comes in the same upstream
    read or a later one: how the bytes happened to be cut does not decide what the client sees
    (a's text, then the error event) nor whether another upstream is tried and billed."""
    from tests.unit.dial.test_stream_tail import event

    behind = (event({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
              if fault == "error event" else CUT)
    job, sink, health = await a_then_b_in_one_read_each(ANTHROPIC[0] + ANTHROPIC[1] + behind)
    assert sink.headers["x-ccswitch-upstream"] == "a" and text_of(sink.body) == "hi"
    assert event_types(sink.body) == ["message_start", "content_block_delta", "error"]
    assert len(job.attempts) == 1 and health.get("a").failures == 1
    assert job.error == ("stream error: overloaded_error: busy" if fault == "error event" else job.attempts[0].error)
    assert b"text_de\n" not in sink.body           # the cut line itself is never passed on


async def test_an_error_before_any_content_in_one_read_still_fails_over_unseen():
    from tests.unit.dial.test_stream_tail import event

    overloaded = event({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    job, sink, health = await a_then_b_in_one_read_each(ANTHROPIC[0] + overloaded + ANTHROPIC[1])
    assert sink.headers["x-ccswitch-upstream"] == "b" and text_of(sink.body) == "from b"
    assert job.attempts[0].error == "stream error: overloaded_error: busy" and job.error is None
    assert health.get("a").failures == 1
