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
