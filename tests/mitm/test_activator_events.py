"""`activation_failed`: announced once when a day's probe and all its retries failed."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

from ccswitch.mitm.activator import Activator
from ccswitch.net.http1 import UpstreamClient
from tests.support.helpers import KEY_A, eventually
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import MockUpstream

PORT = MockUpstream.closed_port()
RULES = f"""
timezone: UTC
usage_db: usage.db
activation: {{retries: 2, retry_interval: 1m, grace: 15m}}
upstreams:
  - {{name: relay, protocol: anthropic, base_url: 'http://127.0.0.1:{PORT}', api_key: '{KEY_A}',
     activate_at: ["06:00"]}}
routes: {{claude: [relay]}}
"""


class Clock:
    def __init__(self):
        self.now = datetime(2026, 11, 25, 6, 0, 5, tzinfo=UTC)

    def __call__(self):
        return self.now


async def test_the_last_failed_retry_of_a_slot_is_announced_once(gateway):
    clock = Clock()
    gateway.allow_url = loopback_url
    activator = Activator(gateway, clock=clock)
    activator.client = UpstreamClient()
    heard = []
    gateway.events.subscribe(heard.append)
    try:
        results = []
        for _ in range(6):              # 3 tries (the first and 2 retries), then nothing is due
            for task in activator.tick():
                results.append(await task)
            clock.now += timedelta(seconds=61)
    finally:
        await activator.client.aclose()
    assert len(results) == 3 and not any(r.ok for r in results)
    [event] = heard
    assert (event.kind, event.upstream, event.route) == ("activation_failed", "relay", None)
    assert event.episode == "2026-11-25 06:00"
    assert event.reason.startswith("the 06:00 activation probe of 2026-11-25 failed 3 time(s), the last with: ")
    assert KEY_A not in event.reason


async def test_a_probe_sent_by_command_is_no_slot_and_never_announced(gateway):
    activator = Activator(gateway, clock=Clock())
    activator.client = UpstreamClient()
    gateway.allow_url = loopback_url
    heard = []
    gateway.events.subscribe(heard.append)
    try:
        result = await activator._probe(gateway.rules.upstream("relay"), None)
    finally:
        await activator.client.aclose()
    assert not result.ok and heard == []


async def test_a_probe_that_fails_inside_ccswitch_is_a_failed_try_retried_like_any(gateway, monkeypatch, caplog):
    import ccswitch.mitm.activator as module

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(module, "send_probe", broken)
    clock = Clock()
    activator = Activator(gateway, clock=clock)
    heard = []
    gateway.events.subscribe(heard.append)
    results = []
    for _ in range(4):
        for task in activator.tick():
            results.append(await task)
        clock.now += timedelta(seconds=61)
    assert [r.error for r in results] == ["internal error: RuntimeError"] * 3       # the slot's tries go on
    assert [e.kind for e in heard] == ["activation_failed"] and "a bug of ours" in caplog.text


async def test_a_probe_connects_within_the_rules_connect_timeout_as_requests_do(gateway, monkeypatch):
    import ccswitch.mitm.activator as module
    asked = []

    async def recording(client, upstream, **kwargs):
        asked.append(kwargs["connect_timeout"])
        raise RuntimeError("recorded")

    monkeypatch.setattr(module, "send_probe", recording)
    await Activator(gateway, clock=Clock())._probe(gateway.rules.upstream("relay"), None)
    assert asked == [gateway.rules.timeouts.connect]


async def test_a_probe_in_flight_when_the_proxy_stops_ends_with_its_row(tmp_path, mock_a, caplog):
    # the router's drain waits for it as for a request, within the same grace, before the ledger
    # closes: one that reached the upstream and left no row would be sent again after the restart
    from ccswitch.ledger.reading import open_reader
    from ccswitch.mitm.router import Router
    from tests.mitm.conftest import open_gateway
    from tests.support.mock_upstream import hang_before_headers
    gateway = open_gateway(tmp_path, RULES.replace(f"http://127.0.0.1:{PORT}", mock_a.base_url))
    gateway.allow_url = loopback_url
    gateway.open_ledger(True)
    mock_a.script(hang_before_headers(0.5), hang_before_headers(5))
    activator, router = Activator(gateway, clock=Clock()), Router(gateway)
    activator.client = UpstreamClient()
    try:
        probe = activator._spawn(gateway.rules.upstream("relay"), None)
        await asyncio.sleep(0.1)
        assert router._in_flight() == 1
        await router.shutdown.drain(router._in_flight, 3.0, router._cut)
        assert probe.done() and not probe.cancelled()
        late = activator._spawn(gateway.rules.upstream("relay"), None)    # past the grace: cut
        await asyncio.sleep(0.1)
        await Router(gateway).shutdown.drain(router._in_flight, 0.2, router._cut)
        assert late.cancelled()
    finally:
        await activator._stop()
    gateway.close()
    with open_reader(gateway.rules.usage_db) as reader:      # the one cut, too, like a request cut there
        assert list(reader.execute("SELECT upstream, ok, error FROM activations ORDER BY id")) == [
            ("relay", 1, None), ("relay", 0, "shutdown: not finished within the grace period")]
    assert "activation probe for relay failed: shutdown: not finished within the grace period" in caplog.text


async def test_the_ledger_read_for_probes_that_already_fired_holds_up_nothing(gateway, monkeypatch):
    # a PostgreSQL ledger that takes seconds to answer: mitmproxy's start (and every request
    # on the loop) goes on; the first probes are started only once the read is done
    import threading

    from mitmproxy.test import taddons

    from ccswitch.mitm import activator as module
    reading, ticks = threading.Event(), []
    monkeypatch.setattr(module, "seed_from_ledger", lambda schedule, rules, now: reading.wait(5) and [])
    activator = Activator(gateway, clock=Clock())
    monkeypatch.setattr(activator, "tick", lambda: ticks.append(1) or [])
    with taddons.context(activator):
        activator.running()
        await asyncio.sleep(0.1)
        assert ticks == []
        reading.set()
        await eventually(lambda: ticks)                 # the read ends in its thread, then the first tick
        assert ticks == [1]
        activator._task.cancel()


async def test_a_ledger_the_probes_that_fired_cannot_be_read_from_still_lets_probes_go(gateway, monkeypatch, caplog):
    from mitmproxy.test import taddons

    from ccswitch.mitm import activator as module

    def odd_rows(schedule, rules, now):
        raise ValueError("Invalid isoformat string: 'yesterday'")      # a ts another tool wrote
    monkeypatch.setattr(module, "seed_from_ledger", odd_rows)
    ticks = []
    activator = Activator(gateway, clock=Clock())
    monkeypatch.setattr(activator, "tick", lambda: ticks.append(1) or [])
    with taddons.context(activator):
        activator.running()
        await eventually(lambda: ticks)                 # the read fails in its thread, then the first tick
        assert ticks == [1] and "could not read past activations" in caplog.text
        activator._task.cancel()


async def ticks_failing_at(gateway, monkeypatch, failing: set[int]) -> list:
    """Run the activator's loop, quickly, with its ticks numbered `failing` raising, until it made two
    ticks past the last of them (5 s at most): the ticks it made."""
    from mitmproxy.test import taddons

    from ccswitch.mitm import activator as module

    monkeypatch.setattr(module, "seed_from_ledger", lambda schedule, rules, now: [])
    monkeypatch.setattr(module, "TICK_EVERY", 0.01)
    ticks = []

    def tick():
        ticks.append(1)
        if len(ticks) in failing:
            raise RuntimeError("a bug")
        return []
    activator = Activator(gateway, clock=Clock())
    monkeypatch.setattr(activator, "tick", tick)
    with taddons.context(activator):
        activator.running()
        await eventually(lambda: len(ticks) > max(failing) + 1)    # the ledger read in its thread, a tick each 10 ms
        assert not activator._task.done()
        activator._task.cancel()
    return ticks


async def test_a_schedule_that_fails_once_is_looked_at_again(gateway, monkeypatch, caplog):
    # the loop had no guard: one exception in a tick and no probe went out until a restart
    assert len(await ticks_failing_at(gateway, monkeypatch, {1, 2, 3})) > 4
    assert caplog.text.count("activation schedule failed") == 1      # once, not each tick


async def test_a_probe_goes_through_the_routers_client_once_it_runs(gateway):
    """One pool per upstream: its `max_connections` caps probes and requests together."""
    gateway.allow_url = loopback_url
    activator = Activator(gateway, clock=Clock())
    activator.client = UpstreamClient()
    shared = gateway.upstream_client = UpstreamClient()
    with MockUpstream("relay") as up:
        upstream = gateway.rules.upstream("relay").model_copy(update={"base_url": up.base_url, "max_connections": 1})
        try:
            result = await activator._probe(upstream, None)
            counts = shared.connection_counts()
        finally:
            await activator.client.aclose()
            await shared.aclose()
    assert result.ok and counts == {"relay": (1, 0)} and activator.client.connection_counts() == {}


async def probes(gateway, *answers, between=lambda result: None):
    """One activation probe of `relay` per scripted answer of its mock; `between` sees each result."""
    gateway.allow_url = loopback_url
    activator = Activator(gateway, clock=Clock())
    activator.client = UpstreamClient()
    results = []
    with MockUpstream("relay") as up:
        upstream = gateway.rules.upstream("relay").model_copy(update={"base_url": up.base_url})
        up.script(*answers)
        try:
            for _ in answers:
                results.append(await activator._probe(upstream, None))
                between(results[-1])
        finally:
            await activator.client.aclose()
    return results


async def test_a_probes_answer_teaches_its_rate_limits_and_its_429_cools_the_upstream_down(gateway):
    from tests.support.mock_upstream import ok, status
    reset = int(time.time() + 3 * 3600)
    heard, seen = [], []
    gateway.events.subscribe(heard.append)

    def after_each(served):     # the first: 97 % used, full for a route draining at 95 %, not cooling
        seen.append((gateway.quota.full("relay", 0.95), gateway.health.cooling_until("relay")))

    served, refused = await probes(gateway, ok(headers={"anthropic-ratelimit-unified-5h-utilization": "0.97",
                                                        "anthropic-ratelimit-unified-5h-reset": str(reset)}),
                                   status(429, headers={"anthropic-ratelimit-unified-status": "rejected",
                                                        "anthropic-ratelimit-unified-reset": str(reset)}),
                                   between=after_each)
    window, cooling_then = seen[0]
    assert served.ok and cooling_then is None
    assert window is not None and window.utilization == 0.97
    # a probe's answer is news like a request's: the hooks hear the upstream is full, once
    assert [(e.kind, e.upstream) for e in heard if e.kind == "full"] == [("full", "relay")]
    assert not refused.ok and refused.status == 429
    cooling = gateway.health.cooling_until("relay") - gateway.health.clock()
    assert abs(cooling - (reset - time.time())) < 5                   # until the window's own reset


async def test_a_probes_answer_past_the_routes_drain_at_is_told_as_full_though_it_still_serves(gateway):
    """The probe's answer is judged by `failover.drain_at` (95 % here), as a request's is, not only
    once a window is spent or rejecting."""
    from tests.support.mock_upstream import ok
    reset = int(time.time() + 3 * 3600)
    heard = []
    gateway.events.subscribe(heard.append)
    [served] = await probes(gateway, ok(headers={"anthropic-ratelimit-unified-5h-utilization": "0.97",
                                                 "anthropic-ratelimit-unified-5h-reset": str(reset)}))
    assert served.ok
    [full] = [e for e in heard if e.kind == "full"]
    assert full.upstream == "relay" and "at 97% (drain_at 95%)" in full.reason


def test_a_scheduled_probe_refused_with_a_429_is_retried_after_the_reset_it_reported(gateway):
    """Sooner than the reset, the retry would only be refused again (and cool the upstream once more)."""
    from ccswitch.activation.probe import ProbeResult, Slot
    clock = Clock()
    activator = Activator(gateway, clock=clock)
    slot = Slot("relay", clock.now.date(), "06:00")
    for wait, expected in ((600, 600), (10, 60)):           # retry_interval is 1m
        refused = ProbeResult("relay", False, 429, "HTTP 429", 5, clock.now, (("retry-after", str(wait)),))
        gateway.health.record_success("relay")                # not cooling before it
        activator._record(gateway.rules.upstream("relay"), slot, refused)
        next_try = activator.schedule.slots[slot].next_try
        assert abs((next_try - clock.now).total_seconds() - expected) < 2, (wait, next_try)
    failed = ProbeResult("relay", False, 503, "HTTP 503", 5, clock.now)
    activator._record(gateway.rules.upstream("relay"), slot, failed)
    assert activator.schedule.slots[slot].next_try - clock.now == timedelta(seconds=60)


def test_a_probe_answer_to_a_key_a_reload_replaced_meanwhile_is_not_the_new_key_s(gateway):
    from pydantic import SecretStr

    from ccswitch.activation.probe import ProbeResult
    gateway.sync_upstreams()
    sent_with_old_key = gateway.rules.upstream("relay").model_copy(update={"api_key": SecretStr("the-old-key")})
    refused = ProbeResult("relay", False, 429, "HTTP 429", 5, Clock()(), (("retry-after", "600"),))
    Activator(gateway, clock=Clock())._record(sent_with_old_key, None, refused)
    assert gateway.health.cooling_until("relay") is None
    Activator(gateway, clock=Clock())._record(gateway.rules.upstream("relay"), None, refused)
    assert gateway.health.cooling_until("relay") is not None         # the same answer to the key in force


async def test_a_schedule_that_fails_again_after_working_is_said_again(gateway, monkeypatch, caplog):
    # said once per failure, not once per run: the same bug back after a good tick is news again
    assert len(await ticks_failing_at(gateway, monkeypatch, {1, 2, 4, 5})) > 5
    assert caplog.text.count("activation schedule failed") == 2


async def test_a_cooldown_a_probe_ends_is_told_as_ended_by_the_probe(gateway):
    from tests.support.mock_upstream import ok, status
    heard = []
    gateway.events.subscribe(heard.append)
    served, refused, again = await probes(gateway, ok(), status(429, headers={"retry-after": "1"}), ok())
    assert served.ok and not refused.ok and again.ok
    [recovered] = [e for e in heard if e.kind == "recovered"]
    assert recovered.reason == "answered with a 2xx again to its activation probe after its cooldown"
