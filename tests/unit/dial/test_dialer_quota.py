"""The dialer's part in quota and affinity: what it learns from rate-limit headers, how a 429
cools an upstream, and sessions bound after a 2xx (loopback mocks, no mitmproxy)."""

import asyncio
import json
import time
from datetime import datetime

import pytest

from ccswitch.dial.dialer import Dialer
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.plan import plan
from ccswitch.routing.quota import QuotaBoard
from tests.support.helpers import MemorySink, make_job, rules_for
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import ok, status

FAST = """
timeouts: {connect: 2s, first_byte: 2s, total: 2s, idle: 2s}
failover: {retry_backoff: 10ms, hold_back: 2s, threshold: 3, cooldown: 10m}
"""


def two(mock_a, mock_b, route="[a, b]"):
    rules = rules_for(("a", "anthropic", mock_a.base_url), ("b", "anthropic", mock_b.base_url), extra=FAST)
    if route != "[a, b]":
        from ccswitch.config.load import parse_rules
        text = "\n".join(f"  - {{name: {n}, protocol: anthropic, base_url: '{m.base_url}', api_key: k-{n}-00000000}}"
                         for n, m in (("a", mock_a), ("b", mock_b)))
        rules = parse_rules(f"upstreams:\n{text}\nroutes:\n  claude: {route}\n{FAST}")
    return rules


def dialer() -> Dialer:
    return Dialer(HealthBoard(), allow_url=loopback_url, quota=QuotaBoard(), sessions=SessionBindings())


async def serve(d: Dialer, rules, session=None, bound_to=None):
    job = make_job(rules)
    job.session, job.bound_to = session, bound_to
    sink = MemorySink()
    await d.run(job, sink)
    return job, sink


async def test_a_429_cools_at_once_until_the_rejecting_windows_reset_not_the_latest(mock_a, mock_b):
    now = time.time()
    mock_a.script(status(429, headers={
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-5h-utilization": "1.0", "anthropic-ratelimit-unified-5h-status": "rejected",
        "anthropic-ratelimit-unified-5h-reset": str(int(now + 120)),
        "anthropic-ratelimit-unified-7d-utilization": "0.4", "anthropic-ratelimit-unified-7d-reset": str(int(now + 5 * 86400)),
        "anthropic-ratelimit-unified-reset": str(int(now + 120))}))
    d = dialer()
    try:
        job, sink = await serve(d, two(mock_a, mock_b))
    finally:
        await d.aclose()
    assert sink.status == 200 and job.upstream == "b"            # failed over at once
    state = d.health.get("a")
    left = d.health.cooling_until("a") - d.health.clock()
    assert state.rate_limited and 100 < left <= 121              # threshold 3 did not wait; 5h, not 7d
    assert d.quota.full("a", 0.95).name == "5h"


async def test_a_429_without_a_reset_cools_for_the_configured_cooldown(mock_a, mock_b):
    mock_a.script(status(429))
    d = dialer()
    try:
        await serve(d, two(mock_a, mock_b))
    finally:
        await d.aclose()
    left = d.health.cooling_until("a") - d.health.clock()
    assert not d.health.get("a").rate_limited and 590 < left <= 600


async def test_every_answer_teaches_utilization(mock_a, mock_b):
    mock_a.script(ok(headers={"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "25",
                              "x-ratelimit-reset-requests": "6m0s"}))
    d = dialer()
    try:
        await serve(d, two(mock_a, mock_b))
    finally:
        await d.aclose()
    value, window = d.quota.utilization("a")
    assert value == 0.75 and window.name == "requests" and 350 < window.resets_at - time.time() <= 360


async def test_a_session_is_bound_after_a_2xx_and_moved_by_a_failover(mock_a, mock_b):
    d = dialer()
    rules = two(mock_a, mock_b)
    try:
        job, _ = await serve(d, rules, session="s1")
        assert job.upstream == "a" and job.affinity == "new" and d.sessions.bound("claude", "s1") == "a"
        mock_a.script(status(503))
        job, _ = await serve(d, rules, session="s1", bound_to="a")
        assert job.upstream == "b" and job.affinity == "moved" and d.sessions.bound("claude", "s1") == "b"
        mock_a.script(status(400))                                  # a `pass` status: no 2xx, no binding
        job, _ = await serve(d, rules, session="s2")
        assert job.status == 400 and d.sessions.bound("claude", "s2") is None
    finally:
        await d.aclose()


async def test_concurrent_requests_of_one_session_never_flap_under_weighted(mock_a, mock_b):
    rules = two(mock_a, mock_b, route="{upstreams: [a, b], strategy: weighted}")
    d = dialer()

    async def one(session):
        chosen = plan(rules, "claude", "claude-x", d.health, datetime.now(), quota=d.quota,
                      sessions=d.sessions, session=session)
        job = make_job(rules)
        job.candidates, job.session, job.bound_to = chosen.candidates, session, chosen.bound_to
        await d.run(job, MemorySink())
        return job.upstream

    try:
        for session in ("alpha", "beta", "gamma", "delta"):
            served = await asyncio.gather(*(one(session) for _ in range(12)))
            assert len(set(served)) == 1, served
            assert d.sessions.bound("claude", session) == served[0]
    finally:
        await d.aclose()


async def test_a_count_tokens_answer_never_binds_nor_moves_a_session(mock_a, mock_b):
    d = dialer()
    rules = two(mock_a, mock_b)
    count = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}
    try:
        job, _ = await serve(d, rules, session="s1")
        assert job.upstream == "a" and d.sessions.bound("claude", "s1") == "a"
        mock_a.script(status(404))          # a has no count_tokens: b counts, the session stays on a
        job = make_job(rules, path="/v1/messages/count_tokens", body=count)
        job.session, job.bound_to = "s1", "a"
        await d.run(job, MemorySink())
        assert job.upstream == "b" and job.status == 200
        assert d.sessions.bound("claude", "s1") == "a" and job.affinity is None
        job = make_job(rules, path="/v1/messages/count_tokens", body=count)   # a session's first request
        job.session = "s2"
        await d.run(job, MemorySink())
        assert d.sessions.bound("claude", "s2") is None and job.affinity is None
    finally:
        await d.aclose()


async def test_a_session_is_moved_only_when_another_upstream_served_it(mock_a, mock_b):
    d = dialer()
    rules = two(mock_a, mock_b)
    try:
        await serve(d, rules, session="s1")
        for b_answer in (400, 503):       # passed on, or failed too: nobody else served the session
            mock_a.script(status(503))
            mock_b.script(status(b_answer))
            job, _ = await serve(d, rules, session="s1", bound_to="a")
            assert job.upstream == "b" and job.status == b_answer
            assert job.affinity == "kept" and d.sessions.bound("claude", "s1") == "a"
    finally:
        await d.aclose()


def _sse(*events) -> str:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


async def test_a_429_cools_until_a_reset_reported_without_a_window_a_stream_not_for_its_heads_routine_reset(
        mock_a, mock_b):
    now = time.time()
    mock_a.script(status(429, headers={"anthropic-ratelimit-unified-reset": str(int(now + 120))}))
    started = {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": None,
        "usage": {"input_tokens": 1, "output_tokens": 0}}}
    delta = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "hel"}}
    limited = {"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited"}}
    # a subscription's usual head: its window serving (12 %), resetting in 4 hours
    mock_b.script(status(200, body=_sse(started, delta, limited), headers={
        "content-type": "text/event-stream", "anthropic-ratelimit-unified-status": "allowed",
        "anthropic-ratelimit-unified-5h-utilization": "0.12",
        "anthropic-ratelimit-unified-reset": str(int(now + 4 * 3600))}))
    d = dialer()
    try:
        job, _ = await serve(d, two(mock_a, mock_b))
    finally:
        await d.aclose()
    assert job.upstream == "b" and job.error and "rate limited" in job.error
    cooldown = two(mock_a, mock_b).failover.cooldown
    for name, reset, known in (("a", 120, True), ("b", cooldown, False)):   # b: the cooldown, not 4 hours
        left = d.health.cooling_until(name) - d.health.clock()
        assert d.health.get(name).rate_limited is known and reset - 2 < left <= reset, name


async def test_a_rate_limit_error_after_the_commit_ends_the_stream_and_cools_for_what_the_head_said(mock_b):
    """Committed on its first content, a stream then says it is rate limited: the client's stream
    ends with that error (no failover: it has a's text), and a cools down at once for as long as
    its head's retry-after said: kept past the commit, where the rest of the head is let go (the
    quota board knows a head's windows, not its retry-after)."""
    started = {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": None,
        "usage": {"input_tokens": 1, "output_tokens": 0}}}
    delta = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "hel"}}
    limited = {"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited"}}
    committed = asyncio.Event()

    class Sink(MemorySink):
        async def write(self, data):
            await super().write(data)
            committed.set()

    def chunk(text: str) -> bytes:
        return b"%x\r\n%s\r\n" % (len(text.encode()), text.encode())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                     b"retry-after: 90\r\n\r\n" + chunk(_sse(started, delta)))
        await writer.drain()
        await asyncio.wait_for(committed.wait(), 5)     # the client has "hel": the error comes after the commit
        writer.write(chunk(_sse(limited)) + b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    rules = rules_for(("a", "anthropic", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"),
                      ("b", "anthropic", mock_b.base_url), extra=FAST)
    d, job, sink = dialer(), make_job(rules), Sink()
    try:
        await d.run(job, sink)
    finally:
        await d.aclose()
        server.close()
    events = [json.loads(line[6:]) for line in sink.body.decode().splitlines() if line.startswith("data: ")]
    assert sink.headers["x-ccswitch-upstream"] == "a" and not mock_b.requests
    assert [e["type"] for e in events] == ["message_start", "content_block_start", "error"]
    assert job.error == "stream error: rate_limit_error: rate limited"
    left = d.health.cooling_until("a") - d.health.clock()
    assert d.health.get("a").rate_limited is True and 88 < left <= 90     # not the 10 min cooldown


MODELS_APART = """
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{a}', api_key: k-a-00000000, only_models: [claude-opus-*]}}
  - {{name: c, protocol: anthropic, base_url: '{a}', api_key: k-c-00000000, only_models: [claude-opus-*]}}
  - {{name: b, protocol: anthropic, base_url: '{b}', api_key: k-b-00000000, only_models: [claude-haiku-*]}}
routes: {{claude: {{upstreams: [a, c, b], strategy: weighted}}}}
"""


async def ask_as_session(d, rules, model):
    """One request of session s1 for `model`, planned and served: (bound to before, served by, affinity)."""
    chosen = plan(rules, "claude", model, d.health, datetime.now(), quota=d.quota, sessions=d.sessions, session="s1")
    job = make_job(rules, body={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    job.candidates, job.session, job.bound_to, job.binding = chosen.candidates, "s1", chosen.bound_to, chosen.binding
    await d.run(job, MemorySink())
    return chosen.bound_to, job.upstream, job.affinity


@pytest.mark.parametrize("first", ["claude-opus-4-5", "claude-haiku-4-5"])
async def test_each_model_of_a_session_keeps_its_own_upstream_when_the_models_are_served_apart(mock_a, mock_b, first):
    """Claude Code's small-model requests beside its main model's, each model on upstreams of its
    own: neither model's requests move the other's binding (and its prompt cache), whichever came first."""
    from ccswitch.config.load import parse_rules
    rules = parse_rules(MODELS_APART.format(a=mock_a.base_url, b=mock_b.base_url) + FAST)
    d = dialer()
    try:
        other = "claude-haiku-4-5" if first == "claude-opus-4-5" else "claude-opus-4-5"
        assert (await ask_as_session(d, rules, first))[2] == "new"
        assert (await ask_as_session(d, rules, other))[2] == "new"
        opus = [await ask_as_session(d, rules, model) for model in ["claude-opus-4-5", "claude-haiku-4-5"] * 6]
        served_opus = {served for _, served, _ in opus[::2]}
        assert len(served_opus) == 1 and served_opus <= {"a", "c"}       # weighted, yet always the same one
        assert {served for _, served, _ in opus[1::2]} == {"b"}
        assert {affinity for _, _, affinity in opus} == {"kept"}
    finally:
        await d.aclose()


async def test_a_session_bound_to_an_upstream_the_rules_no_longer_have_is_bound_to_the_one_that_served(mock_a, mock_b):
    d = dialer()
    try:
        job, _ = await serve(d, two(mock_a, mock_b), session="s1", bound_to="gone")
    finally:
        await d.aclose()
    assert job.upstream == "a" and d.sessions.bound("claude", "s1") == "a"


async def test_with_sticky_off_a_session_s_request_has_no_affinity_to_record(mock_a, mock_b):
    # every row said `new`, as if each request had moved its session
    d = dialer()
    rules = two(mock_a, mock_b, route="{upstreams: [a, b], sticky: off}")
    try:
        for _ in range(2):
            job, _ = await serve(d, rules, session="s1")
            assert job.upstream == "a" and job.affinity is None
    finally:
        await d.aclose()
