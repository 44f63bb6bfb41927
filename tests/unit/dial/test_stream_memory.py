"""What a stream holds while it runs: once committed, nothing of the request that cannot be
sent again; between two pieces, nothing of the last one (a stream can last minutes)."""

import asyncio
import gc
import types

import pytest

from ccswitch.dial.dialer import Dialer
from ccswitch.ledger.rows import request_row
from ccswitch.routing.health import HealthBoard
from ccswitch.translate import translation_for
from ccswitch.wire.sse import Event
from tests.support.helpers import MemorySink, make_job, rules_for
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import stall_after, status
from tests.unit.dial.test_dialer import FAST, event_types, run, two


@pytest.mark.parametrize("shown", [True, False], ids=["flows shown", "no one looks"])
async def test_a_committed_stream_lets_the_request_go_and_keeps_what_its_record_needs(mock_a, mock_b, shown):
    mock_a.script(status(503))
    body = {"model": "claude-x", "stream": True, "messages": [{"role": "user", "content": "hi " * 1000}]}
    job = make_job(two(mock_a, mock_b, routes={"chat": ["a", "b"]}), path="/v1/chat/completions", body=body)
    job.shown = shown
    b = job.rules.upstream("b")
    converted = translation_for(job.request.client_protocol, b.protocol).request(job.request, b, job.rules)
    job.converted["b"] = {**converted, "metadata": {}}
    _, sink, _ = await run(job.rules, job=job)
    assert sink.headers["x-ccswitch-upstream"] == "b" and mock_b.last().json["metadata"] == {}
    assert mock_a.last().json["messages"][0]["content"][0]["text"] == "hi " * 1000   # the failover had it all
    # the stream could last minutes: its parsed body, headers and conversions are not kept for them
    req = job.request
    assert (req.json, req.headers, req.body, job.converted) == (None, [], b"", {})
    assert (req.route, req.model, req.stream, req.url) == ("chat", "claude-x", True,
                                                           "https://api.anthropic.com/v1/chat/completions")
    row = request_row(job)
    assert (row["route"], row["model"], row["stream"], row["upstream"]) == ("chat", "claude-x", 1, "b")
    assert "chat → anthropic" in job.comment()
    # what went upstream stays for the flow's view, when there is one
    assert (job.sent_body == mock_b.last().body) if shown else job.sent_body is None


async def test_while_a_committed_stream_runs_nothing_holds_the_request_body(mock_a):
    job = make_job(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST))
    job.shown, raw = False, job.request.body
    holders: list[list[str]] = []

    class Probe(MemorySink):
        async def write(self, data):
            if not holders:   # the stream is committed and going on
                holders.append([type(r).__name__ for r in gc.get_referrers(raw)])
            await super().write(data)
    _, sink, _ = await run(job.rules, job=job, sink=Probe())
    assert sink.ended and mock_a.last().body == raw
    assert holders == [["cell"]]    # the probe's own `raw`: nothing of the dialer's


def reachable_from(root) -> list:
    """Every object reachable from `root`, short of modules, classes and functions (whose
    globals would take in the whole process)."""
    seen, todo, found = {id(root)}, [root], []
    while todo:
        obj = todo.pop()
        found.append(obj)
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, (type, types.ModuleType, types.FunctionType)):
                seen.add(id(ref))
                todo.append(ref)
    return found


@pytest.mark.parametrize("path,route", [("/v1/messages", "claude"), ("/v1/chat/completions", "chat")],
                         ids=["passthrough", "converted"])
async def test_while_a_stream_waits_for_its_next_piece_nothing_of_the_last_one_is_held(mock_a, path, route):
    mock_a.script(stall_after(5, 0.4))     # the opening events and two deltas, then nothing for a while
    dialer, sink = Dialer(HealthBoard(), allow_url=loopback_url), MemorySink()
    body = {"model": "claude-x", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    job = make_job(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST, routes={route: ["a"]}), path=path,
                   body=body)
    run = asyncio.create_task(dialer.run(job, sink))
    try:
        while job.upstream is None:             # committed: the client has the head
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert not run.done()
        held = reachable_from(run)
        # the events parsed from the last read (their JSON too) and the upstream's response
        # headers: a stream can wait minutes for its next piece
        assert [o for o in held if type(o) is Event] == []
        assert not [o for o in held if type(o) is list and any(
            type(h) is tuple and len(h) == 2 and h[0] == "content-type" and "event-stream" in h[1] for h in o)]
        assert not [o for o in held if type(o) is dict and "messages" in o]    # the request, as sent or converted
        assert any(o is job for o in held)      # the walk does reach what the stream holds
        await run
    finally:
        await dialer.aclose()
    assert sink.ended and (event_types(sink.body)[-1] == "message_stop" or sink.body.endswith(b"[DONE]\n\n"))


async def test_what_is_held_back_before_content_is_capped_by_committing_early():
    # an upstream that pads its opening (pings, here) for all of a long hold-back: the stream
    # commits once a held megabyte is reached, as when its time is up, instead of holding more
    started = asyncio.Event()
    content_after_commit = []
    opening = b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",' \
              b'"role":"assistant","model":"m","content":[],"usage":{"input_tokens":1,"output_tokens":0}}}\n\n'
    ping = b'event: ping\ndata: {"type":"ping","pad":"' + b"x" * 1000 + b'"}\n\n'
    rest = (b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
            b'"content_block":{"type":"text","text":""}}\n\n'
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
            b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
            b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
            b'"usage":{"output_tokens":1}}\n\n'
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n')

    async def padded(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n" + opening)
        for _ in range(1500):       # 1.5 MB of pings
            writer.write(ping)
            await writer.drain()
        try:
            await asyncio.wait_for(started.wait(), 5)
        except TimeoutError:
            pass
        content_after_commit.append(started.is_set())
        writer.write(rest)
        await writer.drain()
        writer.close()

    class Sink(MemorySink):
        async def start(self, status, headers, length):
            await super().start(status, headers, length)
            started.set()

    server = await asyncio.start_server(padded, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        extra = FAST.replace("hold_back: 2s", "hold_back: 60s").replace("idle: 500ms", "idle: 10s") \
            .replace("total: 2s", "total: 20s")
        job, sink, _ = await run(rules_for(("a", "anthropic", url), extra=extra), sink=Sink())
    finally:
        server.close()
    assert content_after_commit == [True]
    assert sink.status == 200 and event_types(sink.body)[-1] == "message_stop"
    assert sink.body.count(b"event: ping") == 1500 and job.error is None
