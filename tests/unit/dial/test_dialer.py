"""The attempt loop against loopback mock upstreams (no mitmproxy involved)."""

import asyncio
import json
import logging
import re

import pytest
from pydantic import SecretStr

from ccswitch.dial import pump as pump_module
from ccswitch.dial.dialer import Dialer
from ccswitch.routing.health import HealthBoard
from ccswitch.wire.sse import SSEParser
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B, MemorySink, make_job, rules_for
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import (
    MockUpstream,
    cut_after,
    error_event_after,
    error_json_200,
    hang_before_headers,
    heartbeats_after,
    html_200,
    ok,
    stall_after,
    status,
)

FAST = """
timeouts: {connect: 2s, first_byte: 500ms, total: 2s, idle: 500ms}
failover: {retry_backoff: 10ms, hold_back: 2s}
"""


def two(mock_a, mock_b, extra=FAST, **kw):
    return rules_for(("a", "anthropic", mock_a.base_url), ("b", "anthropic", mock_b.base_url), extra=extra, **kw)


async def run(rules, health=None, *, job=None, sink=None, **job_kw):
    """(job, sink, health) once the dialer is done with `job` (default: one made from `rules`)."""
    health = health or HealthBoard()
    dialer = Dialer(health, allow_url=loopback_url)
    job = job or make_job(rules, **job_kw)
    sink = sink or MemorySink()
    try:
        await dialer.run(job, sink)
    finally:
        await dialer.aclose()
    return job, sink, health


def event_types(body: bytes):
    return [e.type for e in SSEParser().feed(body)]


def text_of(body: bytes) -> str:
    return "".join(e.json()["delta"].get("text", "") for e in SSEParser().feed(body)
                   if e.type == "content_block_delta")


async def test_stream_swaps_key_model_and_keeps_client_headers(mock_a, mock_b):
    rules = rules_for(("a", "anthropic", mock_a.base_url + "/api"), extra="""
upstreams:
""".replace("upstreams:\n", ""))
    job, sink, _ = await run(rules)
    assert sink.status == 200 and sink.ended
    assert sink.headers["x-ccswitch-upstream"] == "a" and sink.headers["x-ccswitch-attempts"] == "1"
    assert event_types(sink.body)[-1] == "message_stop"
    seen = mock_a.last()
    assert seen.path == "/api/v1/messages"
    assert seen.headers["x-api-key"] == KEY_A
    assert seen.headers["anthropic-beta"] == "fine-grained-tool-streaming-2025-05-14"
    assert CLIENT_KEY not in json.dumps(seen.headers)
    assert job.status == 200 and job.upstream == "a" and job.error is None


async def test_model_rename(mock_a):
    from ccswitch.config.load import parse_rules
    rules = parse_rules(f"""
upstreams:
  - name: a
    protocol: anthropic
    base_url: {mock_a.base_url}
    api_key: {KEY_A}
    models: {{"claude-x": "renamed-exact", "*": "fallback"}}
routes: {{claude: [a]}}
""")
    job, sink, _ = await run(rules)
    assert mock_a.last().json["model"] == "renamed-exact" and job.upstream_model == "renamed-exact"


@pytest.mark.parametrize("behaviour", [status(529), status(503), status(429), status(401),
                                       hang_before_headers(3), error_event_after(1), cut_after(1),
                                       html_200(), error_json_200()],
                         ids=["529", "503", "429", "401", "hang", "error-event", "cut", "html", "errjson"])
async def test_fails_over_invisibly_before_content(mock_a, mock_b, behaviour):
    mock_a.script(behaviour)
    job, sink, health = await run(two(mock_a, mock_b))
    assert sink.status == 200
    assert sink.headers["x-ccswitch-upstream"] == "b" and sink.headers["x-ccswitch-attempts"] == "2"
    types = event_types(sink.body)
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types.count("message_start") == 1          # nothing of A's reached the client
    assert text_of(sink.body) == "Hello from mock B"
    assert health.get("a").failures == 1 and health.get("b").failures == 0
    assert mock_b.last().headers["x-api-key"] == KEY_B


LATIN1_JSON = b'{"type": "message", "role": "assistant", "content": [{"type": "text", "text": "caf\xe9"}]}'


@pytest.mark.parametrize("path,route", [("/v1/messages", "claude"), ("/v1/chat/completions", "chat")],
                         ids=["passthrough", "converted"])
async def test_a_2xx_body_that_is_not_utf8_is_named_so(mock_a, mock_b, path, route):
    mock_a.script(status(200, body=LATIN1_JSON, headers={"content-type": "application/json"}))
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    job, sink, _ = await run(two(mock_a, mock_b, routes={route: ["a", "b"]}), path=path, body=body)
    assert sink.status == 200 and sink.headers["x-ccswitch-upstream"] == "b"
    assert job.attempts[0].error == "a 2xx body that is not UTF-8"


@pytest.mark.parametrize(("route", "protocol", "said"), [
    ("claude", "anthropic", "an anthropic"), ("chat", "openai-chat", "an openai-chat")])
async def test_a_2xx_json_body_of_another_shape_is_named_so(mock_a, mock_b, route, protocol, said):
    mock_a.script(status(200, body={"x": 1}, headers={"content-type": "application/json"}))
    rules = rules_for(("a", protocol, mock_a.base_url), ("b", protocol, mock_b.base_url), extra=FAST,
                      routes={route: ["a", "b"]})
    path = "/v1/messages" if route == "claude" else "/v1/chat/completions"
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    job, sink, _ = await run(rules, path=path, body=body)
    assert sink.headers["x-ccswitch-upstream"] == "b"
    assert job.attempts[0].error == f"a 2xx body that is not {said} response"


async def test_an_error_under_a_2xx_as_the_last_word_is_told_as_that_error(mock_a):
    # a relay's 200 that carries Anthropic's overloaded error: Claude Code sees a 529 it retries,
    # with the relay's own words, not a 502 of ccswitch's that hides them
    mock_a.script(error_json_200())
    job, sink, health = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST),
                                  body={"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert sink.status == 529
    error = json.loads(sink.body)
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    assert job.attempts[0].error == "HTTP 529 under a 2xx" and health.get("a").failures == 1


async def test_a_failed_responses_object_reaches_a_chat_client_as_its_error(mock_a):
    failed = {"id": "resp_1", "object": "response", "status": "failed", "output": [],
              "error": {"code": "rate_limit_exceeded", "message": "Rate limit reached for gpt-5"}}
    mock_a.script(status(200, body=failed, headers={"content-type": "application/json"}))
    rules = rules_for(("r", "openai-responses", mock_a.base_url + "/v1"), routes={"chat": ["r"]}, extra=FAST)
    job, sink, _ = await run(rules, path="/v1/chat/completions",
                             body={"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]})
    assert sink.status == 429
    error = json.loads(sink.body)["error"]
    assert error["message"] == "Rate limit reached for gpt-5" and error["code"] == "rate_limit_exceeded"
    assert job.status == 429


async def test_refused_connection_fails_over(mock_b):
    dead = f"http://127.0.0.1:{MockUpstream.closed_port()}"
    rules = rules_for(("a", "anthropic", dead), ("b", "anthropic", mock_b.base_url), extra=FAST)
    job, sink, health = await run(rules)
    assert sink.headers["x-ccswitch-upstream"] == "b"
    assert job.attempts[0].error == "connection refused"


async def test_the_last_word_names_the_upstreams_before_it_and_an_https_url_for_a_plain_port(mock_b):
    # the last upstream's words alone read as if it were the only one; a TLS mistake in the rules
    # is met again by every retry of the client's: it is told not to
    dead = f"http://127.0.0.1:{MockUpstream.closed_port()}"
    plain_as_https = mock_b.base_url.replace("http://", "https://")
    rules = rules_for(("a", "anthropic", dead), ("b", "anthropic", plain_as_https), extra=FAST)
    job, sink, _ = await run(rules)
    assert sink.status == 502 and sink.headers["x-should-retry"] == "false"
    said = json.loads(sink.body)["error"]["message"]
    assert said == ("upstream b: TLS error: wrong version number (an https:// base_url for a plain-HTTP port? "
                    "then give it as http://) (before it: a: connection refused)")
    job, sink, _ = await run(rules_for(("b", "anthropic", plain_as_https), ("a", "anthropic", dead), extra=FAST))
    assert sink.headers["x-should-retry"] == "true"       # the last word a refused connection: worth a retry
    assert json.loads(sink.body)["error"]["message"].endswith("(before it: b: TLS error: wrong version number "
                                                              "(an https:// base_url for a plain-HTTP port? then "
                                                              "give it as http://))")


async def test_a_request_that_cannot_go_on_the_wire_is_the_client_s_400_and_no_upstream_s_failure(mock_a, mock_b):
    # admission refuses such heads first; this is the dialer's own line behind it
    headers = [("x-api-key", CLIENT_KEY), ("content-type", "application/json"), ("x-bad", "a\x01b")]
    job, sink, health = await run(two(mock_a, mock_b), headers=headers)
    assert sink.status == 400 and "cannot send this request" in json.loads(sink.body)["error"]["message"]
    assert mock_a.requests == [] and mock_b.requests == []
    assert health.get("a").failures == 0 and health.get("b").failures == 0


async def test_non_stream_failover(mock_a, mock_b):
    mock_a.script(status(500))
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    job, sink, _ = await run(two(mock_a, mock_b), body=body)
    assert sink.status == 200 and json.loads(sink.body)["type"] == "message"
    assert sink.length == len(sink.body)


async def test_after_commit_a_cut_ends_with_an_error_event_and_counts(mock_a, mock_b):
    mock_a.script(cut_after(4))
    job, sink, health = await run(two(mock_a, mock_b))
    types = event_types(sink.body)
    assert sink.headers["x-ccswitch-upstream"] == "a"
    assert "content_block_delta" in types and types[-1] == "error"   # never a silent truncation
    assert health.get("a").failures == 1 and len(mock_b.requests) == 0


async def test_after_commit_an_idle_stall_ends_with_an_error_event(mock_a, mock_b):
    mock_a.script(stall_after(4, 3))
    job, sink, health = await run(two(mock_a, mock_b))
    assert event_types(sink.body)[-1] == "error" and "idle timeout" in job.error
    last = SSEParser().feed(sink.body)[-1].json()
    assert last["error"]["type"] == "timeout_error"      # Anthropic's word for a timeout, as its 504 says


@pytest.mark.parametrize("grace, connections", [(2.0, 1), (0.2, 2)], ids=["end-within-grace", "end-too-late"])
async def test_a_stream_waits_for_its_bodys_end_behind_the_last_event_and_keeps_its_connection(
        mock_a, grace, connections, monkeypatch):
    """Upstreams send a chunked body's end a moment after the last event.  The client has every
    event at once; the answer's end waits for the body's (as a plain proxy's does), at most the
    grace, so the connection is back in the pool before the client can send its next request."""
    monkeypatch.setattr(pump_module, "_BODY_END_GRACE", grace)
    mock_a.script(stall_after(99, 0.5))          # every event, then 0.5 s before the body's end
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    rules = rules_for(("a", "anthropic", mock_a.base_url), extra=FAST)
    sinks = [MemorySink(), MemorySink()]
    try:
        first = asyncio.ensure_future(dialer.run(make_job(rules), sinks[0]))
        while b"message_stop" not in sinks[0].body:
            await asyncio.sleep(0.01)
        assert not sinks[0].ended            # every event is there; the answer's end waits for the body's
        await first
        await dialer.run(make_job(rules), sinks[1])
    finally:
        await dialer.aclose()
    assert [event_types(sink.body)[-1] for sink in sinks] == ["message_stop"] * 2
    assert all(sink.ended for sink in sinks) and mock_a.connections_accepted == connections


async def test_hold_back_commits_after_its_time_without_content_when_no_other_upstream_could_serve(mock_a):
    mock_a.script(stall_after(1, 0.6))   # message_start, then silence longer than hold_back
    extra = FAST.replace("hold_back: 2s", "hold_back: 200ms").replace("idle: 500ms", "idle: 2s")
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=extra))
    assert sink.headers["x-ccswitch-upstream"] == "a" and job.ttfb_ms < 550
    assert event_types(sink.body)[-1] == "message_stop"


async def test_hold_back_0_commits_at_once_so_an_error_before_content_is_the_clients_even_with_another_upstream(
        mock_a, mock_b):
    """`hold_back: 0` commits every answer at once (docs/rules.md), also while another upstream could
    take the request: an error event before any content then ends the client's stream, no failover."""
    mock_a.script(error_event_after(1))     # message_start, then an overloaded error, no content
    job, sink, health = await run(two(mock_a, mock_b, extra=FAST.replace("hold_back: 2s", "hold_back: 0s")))
    assert sink.headers["x-ccswitch-upstream"] == "a" and event_types(sink.body) == ["message_start", "error"]
    assert not mock_b.requests and len(job.attempts) == 1 and job.error.startswith("stream error: ")
    assert health.get("a").failures == 1


async def test_a_stream_silent_after_its_opening_fails_over_while_another_upstream_could_serve(mock_a, mock_b):
    """A relay that opens and then hangs: not committed at the hold-back, its first content has
    `first_byte`, then the next upstream serves, unseen by the client."""
    mock_a.script(stall_after(1, 5))
    extra = FAST.replace("hold_back: 2s", "hold_back: 200ms").replace("idle: 500ms", "idle: 2s")
    job, sink, _ = await run(two(mock_a, mock_b, extra=extra))
    assert sink.headers["x-ccswitch-upstream"] == "b" and job.error is None
    types = event_types(sink.body)
    assert types.count("message_start") == 1 and types[-1] == "message_stop"
    assert job.attempts[0].error == "first_byte timeout (no content after the opening events)"


async def test_while_a_probe_s_stream_has_only_opened_others_still_skip_the_upstream(mock_a, mock_b):
    # its head and opening events released the probe: every request arriving then went to the
    # upstream too, and each waited `first_byte` for content that never came
    health = HealthBoard()
    health.record_failure("a", "HTTP 529", threshold=1, cooldown=60)
    health.get("a").cooling_until = health.clock()                # the cooldown is over: the next one probes
    mock_a.script(stall_after(1, 5))                              # opens, then nothing
    extra = FAST.replace("hold_back: 2s", "hold_back: 100ms").replace("first_byte: 500ms", "first_byte: 1s")
    rules = two(mock_a, mock_b, extra=extra)
    dialer = Dialer(health, allow_url=loopback_url)
    try:
        probe = asyncio.ensure_future(dialer.run(make_job(rules), MemorySink()))
        while not mock_a.requests:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)                                  # its head and message_start are in
        other = make_job(rules)
        await dialer.run(other, MemorySink())
        await probe
    finally:
        await dialer.aclose()
    assert [a.upstream for a in other.attempts] == ["b"] and len(mock_a.requests) == 1


@pytest.mark.parametrize("beat", [b'event: ping\ndata: {"type": "ping"}\n\n', b": keepalive\n\n", b"\n"],
                         ids=["pings", "comments", "line ends"])
async def test_a_committed_anthropic_stream_of_heartbeats_alone_ends_at_idle(mock_a, beat):
    # a relay that keeps the stream alive with pings and nothing else held its client for good
    # (claude -p hung; `idle` counted the pings' bytes)
    mock_a.script(heartbeats_after(3, 5, 0.1, beat=beat))
    extra = FAST.replace("hold_back: 2s", "hold_back: 100ms")      # idle: 500ms
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=extra))
    assert event_types(sink.body)[-1] == "error" and job.attempts[0].ms < 2500
    assert job.attempts[0].error == "idle timeout"


async def test_a_chat_stream_s_comments_keep_it_alive_as_a_reasoning_model_s_may(mock_a):
    mock_a.script(heartbeats_after(0, 1.2, 0.1))
    extra = FAST.replace("hold_back: 2s", "hold_back: 100ms")      # idle: 500ms
    job, _, _ = await run(rules_for(("a", "openai-chat", mock_a.base_url + "/v1"), extra=extra, routes={"chat": ["a"]}),
                          path="/v1/chat/completions",
                          body={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert job.attempts[0].ms >= 1100 and job.attempts[0].error != "idle timeout"


async def test_content_late_but_within_first_byte_stays_with_its_upstream(mock_a, mock_b):
    mock_a.script(stall_after(1, 0.3))
    extra = FAST.replace("hold_back: 2s", "hold_back: 100ms").replace("idle: 500ms", "idle: 2s")
    job, sink, _ = await run(two(mock_a, mock_b, extra=extra))
    assert sink.headers["x-ccswitch-upstream"] == "a" and job.ttfb_ms >= 290 and mock_b.requests == []
    assert event_types(sink.body)[-1] == "message_stop"


async def test_the_silence_that_ends_a_stream_counts_from_its_last_bytes_not_from_the_commit(mock_a, mock_b):
    """Quiet after its opening event: the hold-back commits it, and `idle` after that event (not
    after the commit) it ends with the idle timeout."""
    mock_a.script(stall_after(1, 5))
    extra = FAST.replace("hold_back: 2s", "hold_back: 400ms").replace("idle: 500ms", "idle: 700ms")
    loop = asyncio.get_running_loop()
    start = loop.time()
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=extra))
    took = loop.time() - start
    assert sink.headers["x-ccswitch-upstream"] == "a" and "idle timeout" in job.error
    assert 0.6 < took < 0.95        # about 0.7 s, where it used to be 0.4 + 0.7 s


async def test_a_stream_that_breaks_before_its_commit_keeps_its_status_on_the_attempt(mock_a, mock_b):
    mock_a.script(stall_after(1, 3))     # 200 and message_start, then silence past idle within hold_back
    # a first byte may take long on a busy machine: only the silence after it is this test's
    job, sink, _ = await run(two(mock_a, mock_b, extra=FAST.replace("first_byte: 500ms", "first_byte: 2500ms")))
    first = job.attempts[0]
    assert (first.upstream, first.status, first.error) == ("a", 200, "idle timeout")
    assert sink.headers["x-ccswitch-upstream"] == "b"


async def test_a_stream_typed_in_other_letter_case_is_streamed_as_a_stream(mock_a, mock_b):
    mock_a.script(ok(text="hi", headers={"content-type": "Text/Event-Stream; Charset=UTF-8"}))
    job, sink, _ = await run(two(mock_a, mock_b))
    assert sink.status == 200 and sink.headers["x-ccswitch-upstream"] == "a"
    assert event_types(sink.body)[-1] == "message_stop" and text_of(sink.body) == "hi"
    assert job.error is None and job.attempts[-1].usage.output_tokens > 0


@pytest.mark.parametrize("stream", [True, False])
async def test_an_upstreams_own_ccswitch_headers_are_not_passed_on_beside_ours(mock_a, stream):
    mock_a.script(ok(headers={"x-ccswitch-upstream": "their-relay", "X-Ccswitch-Attempts": "3"}))
    body = {"model": "claude-x", "max_tokens": 10, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    sent = []

    class Sink(MemorySink):
        async def start(self, status, headers, length):
            sent.extend(headers)     # as sent, repeats included
            await super().start(status, headers, length)

    await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST), body=body, sink=Sink())
    ours = [(k.lower(), v) for k, v in sent if k.lower().startswith("x-ccswitch-")]
    assert sorted(ours) == [("x-ccswitch-attempts", "1"), ("x-ccswitch-upstream", "a")]


async def test_every_attempt_fails_client_gets_last_status_and_body(mock_a, mock_b):
    mock_a.script(status(503))
    mock_b.script(status(529))
    job, sink, health = await run(two(mock_a, mock_b))
    assert sink.status == 529 and json.loads(sink.body)["error"]["type"] == "overloaded_error"
    assert sink.headers["x-ccswitch-attempts"] == "2" and sink.headers["x-ccswitch-upstream"] == "b"


async def test_last_failure_network_gives_502_and_timeout_504(mock_a):
    dead = f"http://127.0.0.1:{MockUpstream.closed_port()}"
    rules = rules_for(("a", "anthropic", dead), extra=FAST)
    _, sink, _ = await run(rules)
    assert sink.status == 502 and json.loads(sink.body)["type"] == "error"
    mock_a.script(hang_before_headers(3))
    _, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST))
    assert sink.status == 504 and json.loads(sink.body)["error"]["type"] == "timeout_error"


async def test_pass_status_is_returned_without_counting(mock_a, mock_b):
    mock_a.script(status(400))
    job, sink, health = await run(two(mock_a, mock_b))
    assert sink.status == 400 and len(mock_b.requests) == 0
    assert health.get("a").failures == 0
    assert (job.status, job.error) == (400, "HTTP 400")   # not a success: the ledger's error says so


async def test_an_error_answer_s_own_words_are_kept_for_the_live_page_scrubbed(mock_a, mock_b):
    """Passed on (a 400) or failed over (a 529): the attempt keeps what the upstream said, whose
    echo of its key, cut at the limit or not, never shows."""
    said = "x" * 285 + " bad key " + KEY_A
    mock_a.script(status(400, body={"type": "error", "error": {"type": "invalid_request_error", "message": said}}))
    job, _, _ = await run(two(mock_a, mock_b))
    assert job.attempts[0].said == "x" * 285 + " bad key [reda…"
    mock_a.script(status(529, body={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    job, sink, _ = await run(two(mock_a, mock_b))
    assert sink.status == 200 and [(a.status, a.said) for a in job.attempts] == [(529, "Overloaded"), (200, None)]


async def test_retry_same_upstream_then_switch(mock_a, mock_b):
    mock_a.script(status(408), status(408), status(408))
    job, sink, _ = await run(two(mock_a, mock_b))
    assert [a.upstream for a in job.attempts] == ["a", "a", "a", "b"]
    assert sink.headers["x-ccswitch-upstream"] == "b"
    assert len(mock_a.requests) == 3          # each 408 (keeping its connection) an answer, sent once


async def test_max_attempts_caps_everything(mock_a, mock_b):
    mock_a.script(status(408), status(408), status(408))
    extra = FAST + "\n" if False else FAST.replace("failover: {", "failover: {max_attempts: 2, ")
    job, sink, _ = await run(two(mock_a, mock_b, extra=extra))
    assert len(job.attempts) == 2 and sink.status == 408


async def test_count_tokens_404_is_not_a_failure(mock_a, mock_b):
    mock_a.script(status(404))
    body = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}
    job, sink, health = await run(two(mock_a, mock_b), path="/v1/messages/count_tokens", body=body)
    assert sink.status == 200 and "input_tokens" in json.loads(sink.body)
    assert health.get("a").failures == 0
    assert mock_b.last().path == "/v1/messages/count_tokens"


def unsendable(job, index=0):
    """Give one candidate a key that cannot be rendered (the rules loader refuses such a key;
    a RenderError of any kind takes the same path)."""
    bad = job.candidates[index].model_copy(update={"api_key": SecretStr(KEY_A + "\u2014")})
    job.candidates[index] = bad


async def test_an_upstream_that_cannot_render_the_request_fails_over_to_the_next(mock_a, mock_b):
    health = HealthBoard()
    dialer = Dialer(health, allow_url=loopback_url)
    job, sink = make_job(two(mock_a, mock_b)), MemorySink()
    unsendable(job)
    try:
        await dialer.run(job, sink)
    finally:
        await dialer.aclose()
    assert sink.status == 200 and job.upstream == "b" and event_types(sink.body)[-1] == "message_stop"
    assert not mock_a.requests and health.get("a").failures == 0
    assert "beyond latin-1" in job.attempts[0].error and KEY_A not in job.attempts[0].error


async def test_when_no_upstream_can_render_the_request_the_client_gets_the_reason(mock_a):
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    job, sink = make_job(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST)), MemorySink()
    unsendable(job)
    try:
        await dialer.run(job, sink)
    finally:
        await dialer.aclose()
    error = json.loads(sink.body)["error"]
    assert sink.status == 500 and "x-api-key header" in error["message"] and KEY_A not in sink.body.decode()
    assert not mock_a.requests


async def test_threshold_cools_down_and_cooling_upstream_is_skipped(mock_a, mock_b):
    from datetime import datetime

    from ccswitch.routing.plan import plan
    health = HealthBoard()
    rules = two(mock_a, mock_b, extra=FAST.replace("failover: {", "failover: {threshold: 2, "))
    for _ in range(2):
        mock_a.script(status(503))
        await run(rules, health=health)
    assert health.cooling_until("a") is not None
    chosen = plan(rules, "claude", "claude-x", health, datetime.now(rules.tz))
    assert [u.name for u in chosen.candidates] == ["b"]


async def test_compressed_upstream_stream_reaches_the_client_decoded():
    import asyncio
    import gzip

    from tests.support import mock_payloads as P
    sse = b"".join(P.sse(e) for e in P.anthropic_events(P.Reply("m", P.split("zipped hello"))))
    zipped = gzip.compress(sse)

    async def serve(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
                     b"content-length: %d\r\n\r\n" % len(zipped) + zipped)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        rules = rules_for(("a", "anthropic", f"http://127.0.0.1:{port}"), extra=FAST)
        dialer = Dialer(HealthBoard())
        job, sink = make_job(rules), MemorySink()
        await dialer.run(job, sink)
        await dialer.aclose()
    finally:
        server.close()
    assert "content-encoding" not in sink.headers
    assert sink.body == sse and text_of(sink.body) == "zipped hello"


async def test_upstream_tls_is_verified(tmp_path, mock_b):
    """A self-signed upstream certificate is a TLS failure, and failover moves on."""
    import asyncio

    from tests.support.helpers import localhost_tls_server_context
    ctx, _ = localhost_tls_server_context(tmp_path)

    async def serve(reader, writer):
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        rules = rules_for(("a", "anthropic", f"https://localhost:{port}"), ("b", "anthropic", mock_b.base_url),
                          extra=FAST)
        job, sink, health = await run(rules)
    finally:
        server.close()
    assert re.fullmatch(r"TLS error: certificate verify failed: self[- ]signed certificate", job.attempts[0].error)
    assert sink.headers["x-ccswitch-upstream"] == "b"


@pytest.mark.parametrize("behaviour", [status(503), hang_before_headers(3), cut_after(1), html_200(),
                                       error_json_200(), stall_after(1, 3)],
                         ids=["503", "hang", "cut", "html", "errjson", "stall"])
async def test_non_stream_fails_over_on_every_kind_of_failure(mock_a, mock_b, behaviour):
    mock_a.script(behaviour)
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    job, sink, health = await run(two(mock_a, mock_b), body=body)
    assert sink.status == 200 and json.loads(sink.body)["content"][0]["text"] == "Hello from mock B"
    assert health.get("a").failures == 1 and sink.headers["x-ccswitch-attempts"] == "2"


async def test_in_stream_invalid_request_error_is_passed_not_failed_over(mock_a, mock_b):
    mock_a.script(error_event_after(1))
    from tests.support import mock_payloads
    original = mock_payloads.error_body
    mock_payloads.error_body = lambda protocol, code: {"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long"}}
    try:
        job, sink, health = await run(two(mock_a, mock_b))
    finally:
        mock_payloads.error_body = original
    assert sink.headers["x-ccswitch-upstream"] == "a" and event_types(sink.body)[-1] == "error"
    assert health.get("a").failures == 0 and not mock_b.requests


async def test_a_failed_last_stream_is_recorded_as_an_error_even_under_200(mock_a):
    mock_a.script(error_event_after(1))
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST))
    assert sink.status == 200 and event_types(sink.body)[-1] == "error"
    assert job.error and "stream error" in job.error


async def test_non_stream_waits_total_not_idle(mock_a):
    mock_a.script(hang_before_headers(1.0))
    extra = "timeouts: {connect: 2s, first_byte: 500ms, total: 3s, idle: 300ms}"
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=extra), body=body)
    assert sink.status == 200 and job.attempts[0].ms >= 900


async def test_in_stream_error_text_is_scrubbed_before_it_is_recorded(mock_a, mock_b, monkeypatch):
    from tests.support import mock_payloads
    monkeypatch.setattr(mock_payloads, "error_body", lambda protocol, code: {"type": "error", "error": {
        "type": "authentication_error", "message": f"bad key {KEY_A}"}})
    mock_a.script(error_event_after(1))
    job, sink, _ = await run(two(mock_a, mock_b))
    recorded = json.dumps([a.describe() for a in job.attempts]) + str(job.error) + job.comment()
    assert KEY_A not in recorded and "[redacted]" in recorded


def test_an_upstream_being_probed_is_still_tried_when_nothing_else_is_left():
    from datetime import datetime

    from ccswitch.routing.plan import plan
    rules = rules_for(("a", "anthropic", "http://127.0.0.1:9"))
    health = HealthBoard()
    health.begin_probe("a")
    assert [u.name for u in plan(rules, "claude", "m", health, datetime.now(rules.tz)).candidates] == ["a"]


async def test_a_gateway_bug_mid_stream_ends_with_an_error_event_not_a_cut(mock_a):
    import asyncio

    from ccswitch.dial.relay import JOB_HEADER, Relay

    class Exploding:
        def __init__(self):
            self.n = 0

        def feed(self, event):
            self.n += 1
            if self.n > 3:
                raise KeyError("boom")
            return event.raw

        def finish(self):
            return b""

    from ccswitch.translate import base as translate
    from tests.support.mock_upstream import slow_stream
    mock_a.script(slow_stream(8, 0.03))   # paced, so the bug strikes after the first content went out
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    recorded = []
    relay = Relay(dialer.run, on_done=recorded.append)
    await relay.start()
    job = make_job(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST))
    relay.register(job)
    original = translate.Passthrough.stream
    translate.Passthrough.stream = lambda self, req, upstream: Exploding()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        body = json.dumps(job.request.json).encode()
        writer.write(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n" + f"{JOB_HEADER}: {job.token}\r\n".encode()
                     + f"content-length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        out = b""
        while not out.endswith(b"0\r\n\r\n"):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            out += chunk
        writer.close()
    finally:
        translate.Passthrough.stream = original
        await relay.stop()
        await dialer.aclose()
    assert b"event: error" in out and b"internal error" in out and out.endswith(b"0\r\n\r\n")
    assert recorded == [job] and job.error == "internal error: KeyError"


@pytest.mark.parametrize("failure", [error_event_after(1), cut_after(1)], ids=["error-event", "cut"])
async def test_an_aggregated_codex_backend_failure_fails_over_for_a_plain_client(mock_a, mock_b, failure):
    """The Codex backend always streams; for a non-streamed chat client ccswitch aggregates the
    stream.  A stream that fails inside a 200 is a failed attempt like any other, not the answer."""
    mock_a.script(failure)
    rules = rules_for(("codex", "openai-responses", mock_a.base_url + "/backend-api/codex"),
                      ("b", "anthropic", mock_b.base_url), routes={"chat": ["codex", "b"]}, extra=FAST)
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
    job, sink, health = await run(rules, path="/v1/chat/completions", body=body)
    assert mock_a.last().json["stream"] is True
    assert sink.status == 200, sink.body
    assert json.loads(sink.body)["choices"][0]["message"]["content"] == "Hello from mock B"
    assert [a.upstream for a in job.attempts] == ["codex", "b"] and health.get("codex").failures == 1


async def test_the_api_of_the_body_sent_is_the_one_the_last_attempts_upstream_takes(mock_a, mock_b):
    # the flow shows that body: a replay of an edit of it must know it is no request of the client's API
    mock_a.script(cut_after(1))
    rules = rules_for(("codex", "openai-responses", mock_a.base_url + "/backend-api/codex"),
                      ("b", "anthropic", mock_b.base_url), routes={"chat": ["codex", "b"]}, extra=FAST)
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
    job, sink, _ = await run(rules, path="/v1/chat/completions", body=body)
    assert sink.status == 200 and [a.upstream for a in job.attempts] == ["codex", "b"]
    sent = json.loads(job.sent_body)
    assert job.sent_protocol == "anthropic" and "messages" in sent and "input" not in sent     # b's, not codex's


async def test_an_aggregated_codex_backend_client_error_is_passed_not_failed_over(mock_a, mock_b, monkeypatch):
    from tests.support import mock_payloads as P

    def context_too_long(protocol, reply, seq):
        resp = P.responses_object(reply, "failed", [], usage=False,
                                  error={"code": "context_length_exceeded", "message": "context too long"})
        return "response.failed", {"type": "response.failed", "sequence_number": seq, "response": resp}
    monkeypatch.setattr(P, "error_event", context_too_long)
    mock_a.script(error_event_after(1))
    rules = rules_for(("codex", "openai-responses", mock_a.base_url + "/backend-api/codex"),
                      ("b", "anthropic", mock_b.base_url), routes={"chat": ["codex", "b"]}, extra=FAST)
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
    job, sink, health = await run(rules, path="/v1/chat/completions", body=body)
    assert sink.status == 400 and "context too long" in json.loads(sink.body)["error"]["message"]
    assert not mock_b.requests and health.get("codex").failures == 0


async def test_the_dialer_runs_over_the_clients_connect_seam_without_sockets():
    """The upstream client's `connect` seam: a whole attempt against an in-memory upstream
    (its host is never resolved), the request rendered for it and the answer judged."""
    from ccswitch.net import http1
    from tests.support.memory_upstream import MemoryUpstream

    answer = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                         "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                         "usage": {"input_tokens": 3, "output_tokens": 1}}).encode()
    upstream = MemoryUpstream(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                              + str(len(answer)).encode() + b"\r\n\r\n" + answer)
    dialer = Dialer(HealthBoard(), client=http1.UpstreamClient(connect=upstream))
    job = make_job(rules_for(("a", "anthropic", "http://upstream.invalid:8000/api"), extra=FAST),
                   body={"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    sink = MemorySink()
    try:
        await dialer.run(job, sink)
    finally:
        await dialer.aclose()
    assert upstream.dialed == [("upstream.invalid", 8000)]
    sent = bytes(upstream.transports[0].sent)
    assert sent.startswith(b"POST /api/v1/messages HTTP/1.1") and KEY_A.encode() in sent
    assert CLIENT_KEY.encode() not in sent
    assert sink.status == 200 and json.loads(sink.body)["content"][0]["text"] == "hi"
    assert job.upstream == "a" and job.status == 200 and job.attempts[0].usage.output_tokens == 1


async def test_a_non_streamed_answer_is_parsed_once_for_its_usage_and_its_check(mock_a, monkeypatch):
    from ccswitch.wire import exchange
    parses = []
    real = exchange.json.loads
    monkeypatch.setattr(exchange.json, "loads", lambda data, *a, **kw: parses.append(data) or real(data, *a, **kw))
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST), body=body)
    assert sink.status == 200 and job.attempts[0].usage.input_tokens == 25
    assert len([p for p in parses if isinstance(p, bytes) and b'"usage"' in p]) == 1


async def test_an_error_event_whose_message_holds_a_lone_surrogate_is_judged_like_any(mock_a, mock_b):
    # its text went through a plain .encode() to be scrubbed: a UnicodeEncodeError, a 500 of ours
    stream = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
              b'"role":"assistant","content":[],"model":"claude-x","usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
              b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy \\ud83d"}}\n\n')
    mock_a.script(status(200, body=stream, headers={"content-type": "text/event-stream"}))
    job, sink, health = await run(two(mock_a, mock_b))
    assert sink.status == 200 and sink.headers["x-ccswitch-upstream"] == "b"
    assert job.attempts[0].error == "stream error: overloaded_error: busy ?" and health.get("a").failures == 1


async def test_an_attempt_whose_client_is_gone_on_a_write_ends_as_client_closed_with_its_time(mock_a, mock_b):
    from ccswitch.dial.job import CLIENT_CLOSED
    from ccswitch.dial.relay import ClientGone

    class LeavingSink(MemorySink):
        async def write(self, data):
            await asyncio.sleep(0.05)
            raise ClientGone("the proxy closed the relay connection")
    job = make_job(two(mock_a, mock_b))
    with pytest.raises(ClientGone):
        await run(two(mock_a, mock_b), job=job, sink=LeavingSink())
    [attempt] = job.attempts
    assert attempt.ms >= 50 and attempt.describe() == f"a: 200 {CLIENT_CLOSED} ({attempt.ms} ms)"


@pytest.mark.parametrize("ended_by", ["the dialer", "the flow's end"])
async def test_an_attempt_cut_by_a_kill_in_mitmproxy_reads_killed_not_client_closed(mock_a, mock_b, ended_by):
    # the comment in mitmweb, the attempts table and the live page say what the user did
    from ccswitch.dial.job import KILLED
    from ccswitch.dial.relay import ClientGone

    class KilledSink(MemorySink):
        async def write(self, data):
            job.killed = True
            if ended_by == "the flow's end":
                job.flow_ended_first()
                assert job.attempts[-1].error == KILLED     # said at once, before the relay cancels
            raise ClientGone("the proxy closed the relay connection")
    job = make_job(two(mock_a, mock_b))
    with pytest.raises(ClientGone):
        await run(two(mock_a, mock_b), job=job, sink=KilledSink())
    [attempt] = job.attempts
    assert attempt.error == KILLED and f"a: 200 {KILLED}" in job.comment()


FOREIGN_REASONING_400 = {"error": {"message": "The encrypted content for item rs_A1 could not be verified.",
                                   "type": "invalid_request_error", "param": None,
                                   "code": "invalid_encrypted_content"}}


def codex_turn(*reasoning):
    """A Codex request whose input carries earlier turns' reasoning, sealed by whoever made it."""
    return {"model": "gpt-5-codex", "stream": True, "store": False, "include": ["reasoning.encrypted_content"],
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]},
                      *({"type": "reasoning", "summary": [], "encrypted_content": sealed} for sealed in reasoning),
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "two"}]}]}


def responses_pair(mock_a, mock_b, extra=FAST):
    return rules_for(("a", "openai-responses", mock_a.base_url), ("b", "openai-responses", mock_b.base_url),
                     routes={"codex": ["a", "b"]}, extra=extra)


async def codex_turns(*turns) -> list:
    """Each (rules, body, turn or None) as a Codex request through one dialer, whose memory of
    sealed reasoning lasts from one to the next; their jobs."""
    from ccswitch.wire.ws_chain import for_upstream
    dialer, jobs = Dialer(HealthBoard(), allow_url=loopback_url), []
    try:
        for rules, body, turn in turns:
            job = make_job(rules, path="/v1/responses", body=body, host="api.openai.com")
            if turn is not None:
                job.turn, job.converted["a"] = turn, for_upstream(turn, "a")
            await dialer.run(job, MemorySink())
            jobs.append(job)
    finally:
        await dialer.aclose()
    return jobs


async def test_reasoning_another_account_sealed_is_left_out_when_the_upstream_refuses_it(mock_a, mock_b):
    """After a failover, Codex's next request carries the first account's reasoning to the
    second, which refuses the whole request: it goes again, at once, without the sealed items."""
    mock_a.script(status(400, body=FOREIGN_REASONING_400))
    job, sink, health = await run(responses_pair(mock_a, mock_b), path="/v1/responses",
                                  body=codex_turn("ENC-B-1", "ENC-B-2"), host="api.openai.com")
    assert sink.status == 200 and sink.headers["x-ccswitch-upstream"] == "a"
    first, again = (r.json["input"] for r in mock_a.requests)
    assert [item.get("encrypted_content") for item in first if item["type"] == "reasoning"] == ["ENC-B-1", "ENC-B-2"]
    assert [item["type"] for item in again] == ["message", "message"] and mock_b.requests == []
    assert [(a.upstream, a.status) for a in job.attempts] == [("a", 400), ("a", 200)]
    assert job.attempts[0].error == "reasoning encrypted by another account: sent again without it"
    assert job.status == 200 and job.error is None and health.get("a").failures == 0


async def test_a_chat_client_s_sealed_reasoning_another_account_refuses_is_left_out_likewise(mock_a, mock_b):
    """The chat route carries a Responses upstream's sealed reasoning back (`reasoning_items`):
    the converted request another account refuses goes again without it, as Codex's does."""
    mock_a.script(status(400, body=FOREIGN_REASONING_400))
    rules = rules_for(("a", "openai-responses", mock_a.base_url), ("b", "openai-responses", mock_b.base_url),
                      routes={"chat": ["a", "b"]}, extra=FAST)
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    body = {"model": "gpt-5", "reasoning_effort": "low", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call],
         "reasoning_items": [{"index": 0, "type": "reasoning", "summary": [], "encrypted_content": "ENC-B-1"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}
    from ccswitch.translate import convert_for_candidates
    job = make_job(rules, path="/v1/chat/completions", body=body, host="api.openai.com")
    job.converted, _ = convert_for_candidates(job.request, job.candidates, job.rules)   # as the planner does
    job, sink, _ = await run(rules, job=job)
    assert sink.status == 200 and sink.headers["x-ccswitch-upstream"] == "a"
    first, again = ([item["type"] for item in r.json["input"]] for r in mock_a.requests)
    assert first == ["message", "reasoning", "function_call", "function_call_output"]
    assert again == ["message", "function_call", "function_call_output"] and mock_b.requests == []


@pytest.mark.parametrize("case", ["another 400", "no sealed reasoning"])
async def test_other_refusals_reach_the_client_as_they_are(mock_a, mock_b, case):
    refusal = {"error": {"message": "bad input", "type": "invalid_request_error", "param": None,
                         "code": "invalid_value"}} if case == "another 400" else FOREIGN_REASONING_400
    mock_a.script(status(400, body=refusal))
    body = codex_turn() if case == "no sealed reasoning" else codex_turn("ENC-B-1")
    job, sink, _ = await run(responses_pair(mock_a, mock_b), path="/v1/responses", body=body,
                             host="api.openai.com")
    assert sink.status == 400 and json.loads(sink.body)["error"]["code"] == refusal["error"]["code"]
    assert len(mock_a.requests) == 1 and len(job.attempts) == 1


async def test_a_codex_socket_turn_sent_again_without_sealed_reasoning_is_kept_so_in_its_chain(mock_a, mock_b):
    """The chain keeps the input its upstream was sent: had it kept the refused items, every
    later turn would be refused once more, and its retry would drop the upstream's own reasoning."""
    from ccswitch.wire.ws_chain import Turn, chained_input
    mock_a.script(status(400, body=FOREIGN_REASONING_400))
    body = codex_turn("ENC-B-1")
    job = make_job(responses_pair(mock_a, mock_b), path="/v1/responses", body=body, host="api.openai.com")
    job.turn = Turn(body=body, input=body["input"], upstream_hint=None)
    await run(None, job=job)
    assert job.status == 200 and [item["type"] for item in chained_input(job.turn, "a")] == ["message", "message"]


async def test_a_codex_socket_turn_refused_keeps_in_its_chain_the_reasoning_another_upstream_made(mock_a, mock_b):
    """`a` refuses an item of unknown make: the chain forgets it, and keeps `b`'s own (which `a`
    was not sent), for a later turn that `b` serves."""
    from ccswitch.wire.reasoning import seal_of
    from ccswitch.wire.ws_chain import Turn, chained_input, for_upstream
    mock_a.script(status(400, body=FOREIGN_REASONING_400))
    body = codex_turn("ENC-X", "ENC-B-1")
    by_b = body["input"][2]
    turn = Turn(body=body, input=body["input"], upstream_hint=None, made_by={seal_of(by_b): "b"})
    job = make_job(responses_pair(mock_a, mock_b), path="/v1/responses", body=body, host="api.openai.com")
    job.turn, job.converted["a"] = turn, for_upstream(turn, "a")
    await run(None, job=job)
    assert job.status == 200 and [seals_sent(r) for r in mock_a.requests] == [["ENC-X"], []]
    kept = chained_input(turn, "a")
    assert [item.get("encrypted_content") for item in kept if item["type"] == "reasoning"] == ["ENC-B-1"]


async def test_a_codex_socket_turn_an_upstream_refused_keeps_in_its_chain_what_the_one_that_served_was_sent(
        mock_a, mock_b):
    """`a` refuses ENC-X and then fails; `b` serves the turn with it: the chain keeps it for `b`."""
    from ccswitch.wire.ws_chain import Turn, chained_input
    mock_a.script(status(400, body=FOREIGN_REASONING_400), status(503))
    body = codex_turn("ENC-X")
    turn = Turn(body=body, input=body["input"], upstream_hint=None)
    job = make_job(responses_pair(mock_a, mock_b), path="/v1/responses", body=body, host="api.openai.com")
    job.turn = turn
    await run(None, job=job)
    assert job.status == 200 and [seals_sent(r) for r in mock_b.requests] == [["ENC-X"]]
    assert [item.get("encrypted_content") for item in chained_input(turn, "b") if item["type"] == "reasoning"] \
        == ["ENC-X"]


async def test_a_codex_socket_turn_sent_without_what_its_upstream_refused_before_keeps_it_out_of_its_chain(
        mock_a, mock_b):
    """Left out before sending (`a` refused it on an earlier turn), the item is no more in the
    turn's input: the chain does not count it as read by `a`, which was never sent it."""
    from ccswitch.wire.ws_chain import Turn
    mock_a.script(status(400, body=FOREIGN_REASONING_400))
    rules = responses_pair(mock_a, mock_b)
    body = codex_turn("ENC-X")
    turn = Turn(body=body, input=body["input"], upstream_hint=None)
    _, job = await codex_turns((rules, codex_turn("ENC-X"), None), (rules, body, turn))
    assert job.status == 200 and [seals_sent(r) for r in mock_a.requests] == [["ENC-X"], [], []]
    from ccswitch.wire.ws_chain import chained_input, sent_input
    assert [item["type"] for item in sent_input(turn, "a")] == ["message", "message"]
    assert [item["type"] for item in chained_input(turn, "a")] == ["message", "message"]


async def test_a_later_turn_goes_without_the_reasoning_its_upstream_refused_and_keeps_its_own(mock_a, mock_b):
    """Codex resends every earlier reasoning item: after one refusal, the next turns leave out
    what `a` refused at once (no refused round trip each) and keep what `a` sealed itself."""
    mock_a.script(status(400, body=FOREIGN_REASONING_400))
    rules = responses_pair(mock_a, mock_b)
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        for turn in (codex_turn("ENC-B-1"), codex_turn("ENC-B-1", "ENC-A-1")):
            job = make_job(rules, path="/v1/responses", body=turn, host="api.openai.com")
            await dialer.run(job, MemorySink())
            assert job.status == 200
    finally:
        await dialer.aclose()
    sent = [[item.get("encrypted_content") for item in r.json["input"] if item["type"] == "reasoning"]
            for r in mock_a.requests]
    assert sent == [["ENC-B-1"], [], ["ENC-A-1"]] and len(job.attempts) == 1


async def test_a_refusal_is_sent_again_also_on_the_route_s_last_attempt(mock_a, mock_b):
    """Sending it again is not one more of the route's attempts: with `max_attempts: 2`, `a`
    failing and `b` refusing `a`'s reasoning, `b` still serves it (Codex would end on a 400)."""
    mock_a.script(status(503))
    mock_b.script(status(400, body=FOREIGN_REASONING_400))
    extra = FAST.replace("failover: {", "failover: {max_attempts: 2, ")
    job, sink, _ = await run(responses_pair(mock_a, mock_b, extra), path="/v1/responses",
                             body=codex_turn("ENC-A-1"), host="api.openai.com")
    assert sink.status == 200 and [(a.upstream, a.status) for a in job.attempts] == [("a", 503), ("b", 400), ("b", 200)]


async def test_a_refusal_on_the_route_s_only_attempt_is_mended_and_remembered_for_the_next_turn(mock_a, mock_b):
    mock_a.script(status(400, body=FOREIGN_REASONING_400))
    extra = FAST.replace("failover: {", "failover: {max_attempts: 1, ")
    rules = responses_pair(mock_a, mock_b, extra)
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        statuses = []
        for _ in range(2):
            job = make_job(rules, path="/v1/responses", body=codex_turn("ENC-B-1"), host="api.openai.com")
            await dialer.run(job, MemorySink())
            statuses.append(job.status)
    finally:
        await dialer.aclose()
    assert statuses == [200, 200]        # the next turn goes without the item at once
    assert [len(r.json["input"]) for r in mock_a.requests] == [3, 2, 2]


async def test_an_upstream_given_another_key_by_a_reload_starts_with_nothing_refused(mock_a, mock_b):
    mock_a.script(status(400, body=FOREIGN_REASONING_400))
    rules = responses_pair(mock_a, mock_b)
    rekeyed = rules.model_copy(update={"upstreams": [
        u.model_copy(update={"api_key": SecretStr("fake-another-account-key-0000")}) if u.name == "a" else u
        for u in rules.upstreams]})
    await codex_turns((rules, codex_turn("ENC-B-1"), None), (rekeyed, codex_turn("ENC-B-1"), None))
    assert [len(r.json["input"]) for r in mock_a.requests] == [3, 2, 3]     # sent whole to the new account


def seals_sent(request) -> list:
    return [item.get("encrypted_content") for item in request.json["input"] if item["type"] == "reasoning"]


@pytest.mark.parametrize("stream", [True, False])
async def test_a_conversation_back_from_another_account_keeps_the_reasoning_its_upstream_sealed(
        mock_a, mock_b, stream):
    """A → B → A: `a` refuses the turn that carries `b`'s reasoning, and takes it again with its
    own (read from its answers, streamed or whole), not without any."""
    mock_a.script(ok(sealed="ENC-A-1"), status(503), status(400, body=FOREIGN_REASONING_400))
    mock_b.script(status(400, body=FOREIGN_REASONING_400), ok(sealed="ENC-B-1"))
    rules = responses_pair(mock_a, mock_b)
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        for sealed in ((), ("ENC-A-1",), ("ENC-A-1", "ENC-B-1")):
            job = make_job(rules, path="/v1/responses", body={**codex_turn(*sealed), "stream": stream},
                           host="api.openai.com")
            await dialer.run(job, MemorySink())
            assert job.status == 200
    finally:
        await dialer.aclose()
    assert [seals_sent(r) for r in mock_b.requests] == [["ENC-A-1"], []]
    assert [seals_sent(r) for r in mock_a.requests] == [[], ["ENC-A-1"], ["ENC-A-1", "ENC-B-1"], ["ENC-A-1"]]


async def test_an_upstream_that_refuses_its_own_reasoning_too_is_sent_none_at_last(mock_a, mock_b):
    """Its key changed hands at the provider: what it made before is no longer its own."""
    mock_a.script(ok(sealed="ENC-A-1"), status(400, body=FOREIGN_REASONING_400),
                  status(400, body=FOREIGN_REASONING_400))
    rules = responses_pair(mock_a, mock_b)
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        for sealed in ((), ("ENC-A-1", "ENC-B-1")):
            job = make_job(rules, path="/v1/responses", body=codex_turn(*sealed), host="api.openai.com")
            await dialer.run(job, MemorySink())
            assert job.status == 200
    finally:
        await dialer.aclose()
    assert [seals_sent(r) for r in mock_a.requests] == [[], ["ENC-A-1", "ENC-B-1"], ["ENC-A-1"], []]
    assert mock_b.requests == []


async def test_reasoning_an_upstream_read_in_a_request_it_served_is_its_own_when_the_conversation_comes_back(
        mock_a, mock_b):
    """ENC-X came with the client (made before ccswitch saw it); `a` served a request holding it,
    so it is `a`'s: back from `b`, `a`'s refusal of `b`'s reasoning keeps it."""
    mock_a.script(ok(), status(503), status(400, body=FOREIGN_REASONING_400))
    mock_b.script(status(400, body=FOREIGN_REASONING_400), ok(sealed="ENC-B-1"))
    rules = responses_pair(mock_a, mock_b)
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        for sealed in (("ENC-X",), ("ENC-X",), ("ENC-X", "ENC-B-1")):
            job = make_job(rules, path="/v1/responses", body=codex_turn(*sealed), host="api.openai.com")
            await dialer.run(job, MemorySink())
            assert job.status == 200
    finally:
        await dialer.aclose()
    assert [seals_sent(r) for r in mock_b.requests] == [["ENC-X"], []]
    assert [seals_sent(r) for r in mock_a.requests] == [["ENC-X"], ["ENC-X"], ["ENC-X", "ENC-B-1"], ["ENC-X"]]


async def test_reasoning_left_out_of_what_an_upstream_was_sent_does_not_become_its_own(mock_a, mock_b):
    """A socket's turn goes to `a` without `b`'s reasoning: serving it makes only what `a` was
    sent its own, so `a`'s later refusal of `b`'s reasoning still keeps `a`'s."""
    from ccswitch.wire.reasoning import seal_of
    from ccswitch.wire.ws_chain import Turn, for_upstream
    mock_a.script(ok(), status(400, body=FOREIGN_REASONING_400))
    rules = responses_pair(mock_a, mock_b)
    body = codex_turn("ENC-A-1", "ENC-B-1")
    turn = Turn(body=body, input=body["input"], upstream_hint=None, made_by={seal_of(body["input"][2]): "b"})
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        job = make_job(rules, path="/v1/responses", body=body, host="api.openai.com")
        job.turn, job.converted["a"] = turn, for_upstream(turn, "a")
        await dialer.run(job, MemorySink())
        job = make_job(rules, path="/v1/responses", body=codex_turn("ENC-A-1", "ENC-B-1"), host="api.openai.com")
        await dialer.run(job, MemorySink())
        assert job.status == 200
    finally:
        await dialer.aclose()
    assert [seals_sent(r) for r in mock_a.requests] == [["ENC-A-1"], ["ENC-A-1", "ENC-B-1"], ["ENC-A-1"]]
    assert mock_b.requests == []


async def test_reasoning_an_upstream_sealed_in_a_stream_that_then_failed_is_still_its_own(mock_a, mock_b):
    """Its reasoning item reached the client before the stream's error event: whatever became of
    the stream, `a` made it, so `a`'s refusal of another's reasoning keeps it."""
    from dataclasses import replace
    mock_a.script(replace(error_event_after(4), sealed="ENC-A-1"), status(400, body=FOREIGN_REASONING_400))
    rules = rules_for(("a", "openai-responses", mock_a.base_url), routes={"codex": ["a"]}, extra=FAST)
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        statuses = []
        for sealed in ((), ("ENC-A-1", "ENC-B-1")):
            job = make_job(rules, path="/v1/responses", body=codex_turn(*sealed), host="api.openai.com")
            await dialer.run(job, MemorySink())
            statuses.append(job.status)
    finally:
        await dialer.aclose()
    assert statuses == [200, 200]     # the first one's error came in its stream, after the item
    assert [seals_sent(r) for r in mock_a.requests] == [[], ["ENC-A-1", "ENC-B-1"], ["ENC-A-1"]]


async def test_a_compaction_another_account_made_is_left_out_when_the_upstream_refuses_it(mock_a, mock_b):
    """Codex's compacted history, sealed by the account that compacted it, after a failover."""
    mock_a.script(status(400, body=FOREIGN_REASONING_400))
    body = codex_turn()
    body["input"].insert(1, {"type": "compaction", "id": "cmp_1", "encrypted_content": "ENC-B-compacted"})
    job, sink, _ = await run(responses_pair(mock_a, mock_b), path="/v1/responses", body=body, host="api.openai.com")
    assert sink.status == 200 and [(a.upstream, a.status) for a in job.attempts] == [("a", 400), ("a", 200)]
    assert [item["type"] for item in mock_a.requests[1].json["input"]] == ["message", "message"]


class RawHeadersSink(MemorySink):
    """A sink that keeps the answer's headers as sent: a header twice is seen twice."""

    async def start(self, status, headers, length):
        self.raw_headers = list(headers)
        await super().start(status, headers, length)


REFUSED_KEY = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}


@pytest.mark.parametrize("code", [401, 403])
async def test_an_upstreams_refusal_of_the_rules_key_tells_the_client_once_not_to_retry(mock_a, code):
    mock_a.script(*[status(code, body=REFUSED_KEY, headers={"x-should-retry": "true"})] * 3)
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST), sink=RawHeadersSink())
    assert sink.status == code
    assert [v for k, v in sink.raw_headers if k.lower() == "x-should-retry"] == ["false"]


async def test_an_upstreams_refusal_of_the_clients_own_key_keeps_the_upstreams_retry_advice(mock_a):
    from ccswitch.config.load import parse_rules
    mock_a.script(*[status(401, body=REFUSED_KEY, headers={"x-should-retry": "true"})] * 3)
    rules = parse_rules(f"""
{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', auth: client}}
routes: {{claude: [a]}}
""")
    job, sink, _ = await run(rules, sink=RawHeadersSink())
    assert sink.status == 401
    assert [v for k, v in sink.raw_headers if k.lower() == "x-should-retry"] == ["true"]


@pytest.mark.parametrize("answer", ["rate_limited", "full", "failing"])
async def test_an_answer_to_a_key_a_reload_replaced_meanwhile_is_not_the_new_key_s_health(mock_a, mock_b, answer):
    """The request left with the old key; the reload gave `a` a fresh one before the answer came:
    its 429, its full window or its failures belong to the old key, not to the new."""
    from ccswitch.routing.quota import QuotaBoard
    rules = two(mock_a, mock_b, extra=FAST.replace("failover: {", "failover: {threshold: 1, "))
    full = {"anthropic-ratelimit-unified-status": "allowed", "anthropic-ratelimit-unified-5h-utilization": "0.99",
            "anthropic-ratelimit-unified-5h-reset": "9999999999"}
    mock_a.script({"rate_limited": status(429, retry_after=3600), "full": ok(headers=full),
                   "failing": status(503)}[answer])
    health, quota = HealthBoard(), QuotaBoard()
    renewed = {u.name: u.fingerprint() for u in rules.upstreams}
    health.sync({**renewed, "a": ("another key",)})        # the reload, before the answer
    dialer = Dialer(health, allow_url=loopback_url, quota=quota)
    try:
        await dialer.run(make_job(rules), MemorySink())
    finally:
        await dialer.aclose()
    assert health.cooling_until("a") is None and health.get("a").failures == 0
    assert quota.full("a", 0.95) is None
    health.sync(renewed)                                     # the same answer to the key in force counts
    mock_a.script({"rate_limited": status(429, retry_after=3600), "full": ok(headers=full),
                   "failing": status(503)}[answer])
    dialer = Dialer(health, allow_url=loopback_url, quota=quota)
    try:
        await dialer.run(make_job(rules), MemorySink())
    finally:
        await dialer.aclose()
    assert (health.cooling_until("a") is not None) if answer != "full" else quota.full("a", 0.95) is not None


@pytest.mark.parametrize("agent,kept", [("codex_exec/0.169.0 (Debian 12.0.0; x86_64)", False),
                                        ("OpenAI/Python 2.8.1", True)])
async def test_an_upstream_s_long_retry_after_is_not_passed_on_to_codex_which_would_wait_it_out(mock_a, mock_b,
                                                                                               agent, kept):
    """Codex waits out any retry-after; the last upstream's own 429 keeps its status and body."""
    limited = {"error": {"type": "rate_limit_error", "message": "try in two hours"}}
    for mock in (mock_a, mock_b):
        mock.script(status(429, body=limited, retry_after=7200))
    body = {"model": "gpt-5", "input": "hi", "stream": True}
    job = make_job(responses_pair(mock_a, mock_b), path="/v1/responses", body=body, host="api.openai.com",
                   headers=[("authorization", f"Bearer {CLIENT_KEY}"), ("user-agent", agent),
                            ("content-type", "application/json")])
    _, sink, _ = await run(None, job=job)
    assert sink.status == 429 and json.loads(sink.body) == limited
    assert ("retry-after" in sink.headers) is kept
    # the others are told not to retry, as ccswitch's own answers tell them (an SDK waited 2 × 120 s)
    assert (sink.headers.get("x-should-retry") == "false") is kept


async def test_an_upstream_s_redirect_is_a_failure_never_passed_on_for_a_client_to_follow(mock_a, mock_b):
    # the Anthropic SDK followed a relay's 307 past ccswitch, prompt and all (no ledger row, no failover)
    moved = {"location": "https://relay.example/v1/messages"}
    mock_a.script(status(307, headers=moved))
    job, sink, health = await run(two(mock_a, mock_b))
    assert sink.status == 200 and job.upstream == "b" and health.get("a").failures == 1
    assert job.attempts[0].error.startswith("redirected (HTTP 307 to https://relay.example/v1/messages)")
    mock_a.script(status(301, headers=moved))                    # the last word: a 502 saying where it pointed
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST),
                             body={"model": "claude-x", "max_tokens": 5, "messages": []})
    body = json.loads(sink.body)
    assert sink.status == 502 and "location" not in {k.lower() for k in sink.headers}
    assert sink.headers["x-should-retry"] == "false"            # the SDKs retried it twice, to the same end
    assert body["error"]["message"].startswith("upstream a: redirected (HTTP 301 to https://relay.example")
    # the base_url to give: the Location without the path ccswitch appends (`check` refuses it with)
    assert body["error"]["message"].endswith("; set its base_url to https://relay.example")
    mock_a.script(status(304))                                   # no location: no base_url to advise
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST),
                             body={"model": "claude-x", "max_tokens": 5, "messages": []})
    assert sink.status == 502 and job.attempts[0].error == "HTTP 304 without a location: no answer to pass on"
    mock_a.script(status(302, headers=moved))                    # on_status says pass: passed on
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url),
                                       extra=FAST.replace("hold_back: 2s}", "hold_back: 2s, on_status: {'3xx': pass}}")))
    assert sink.status == 302


async def test_only_a_2xx_responses_answer_leaves_an_id_to_continue(mock_a, mock_b):
    # an error body that happens to carry an id is no stored response: its upstream is no issuer
    mock_a.script(status(400, body={"id": "resp_refused", "error": {"message": "bad input",
                                                                    "type": "invalid_request_error"}}))
    body = {"model": "gpt-x", "input": "hi"}
    job, sink, _ = await run(responses_pair(mock_a, mock_b), path="/v1/responses", body=body,
                             host="api.openai.com")
    assert sink.status == 400 and [a.response_id for a in job.attempts] == [None]
    job, sink, _ = await run(responses_pair(mock_a, mock_b), path="/v1/responses", body=body,
                             host="api.openai.com")
    assert sink.status == 200 and job.attempts[-1].response_id is not None


async def test_a_429_with_its_reset_to_a_request_sent_while_the_upstream_cooled_down_for_failures_stands(
        mock_a, mock_b):
    # the route's last upstream, tried while it cools down after 500s, answers 429 retry-after 20:
    # it is rate limited until then (the route's own 429 meanwhile), not left to be called again
    rules = two(mock_a, mock_b, extra=FAST.replace("failover: {", "failover: {threshold: 1, cooldown: 600, "))
    health = HealthBoard()
    health.record_failure("a", "HTTP 500", threshold=1, cooldown=600)
    mock_a.script(status(429, retry_after=20))
    dialer = Dialer(health, allow_url=loopback_url)
    try:
        job = make_job(rules)
        job.candidates = [rules.upstream("a")]      # the route's last upstream, cooling down
        await dialer.run(job, MemorySink())
    finally:
        await dialer.aclose()
    assert health.get("a").rate_limited and 15 < health.cooling_until("a") - health.clock() <= 20


async def test_a_bare_404_passed_on_names_the_path_the_upstream_lacks_and_its_base_url(mock_a, mock_b, caplog):
    # a relay's base_url without its /v1: the 404 reached the client, and the ledger and the live
    # page said only "HTTP 404"
    caplog.set_level(logging.WARNING, logger="ccswitch")
    rules = two(mock_a, mock_b)
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        for _ in range(2):
            mock_a.script(status(404, body="404 page not found"))
            job, sink = make_job(rules), MemorySink()
            await dialer.run(job, sink)
            assert sink.status == 404 and job.upstream == "a"
            assert job.error == "HTTP 404 (a has no /v1/messages: check its base_url)"
        assert caplog.text.count("upstream a answered 404 for /v1/messages") == 1       # once an upstream
        # an API's own 404 says what is missing (a model, most often): no word of the base_url
        mock_a.script(status(404, body={"type": "error", "error": {"type": "not_found_error",
                                                                    "message": "model: claude-x"}}))
        job = make_job(rules)
        await dialer.run(job, MemorySink())
        assert job.error == "HTTP 404"
        mock_a.script(status(404))
        mock_b.script(status(404))
        counting = make_job(rules, path="/v1/messages/count_tokens", body={"model": "claude-x", "messages": []})
        await dialer.run(counting, MemorySink())       # a relay without count_tokens: a 404 to expect
        assert "base_url" not in counting.error        # its own word: count_tokens not supported
    finally:
        await dialer.aclose()
