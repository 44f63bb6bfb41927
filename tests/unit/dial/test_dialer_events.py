"""What the dialer announces on the event bus: an upstream whose answer made it full (once per
window), and — through the health board — the cooldown and recovery of a failing upstream."""

import time
from datetime import UTC, datetime

from ccswitch.dial.dialer import Dialer
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.events import Events, news_slot
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.limits import learn_windows
from ccswitch.routing.quota import QuotaBoard
from tests.support.helpers import MemorySink, make_job, rules_for
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import ok, status

FAST = """
timeouts: {connect: 2s, first_byte: 2s, total: 2s, idle: 2s}
failover: {retry_backoff: 10ms, threshold: 1, cooldown: 10m, drain_at: 0.9}
"""


def dialer() -> tuple[Dialer, list]:
    events, heard = Events(), []
    events.subscribe(heard.append)
    d = Dialer(HealthBoard(events=events), allow_url=loopback_url, quota=QuotaBoard(),
               sessions=SessionBindings(), events=events)
    return d, heard


def utilization(used: float, reset: int) -> dict:
    return {"anthropic-ratelimit-unified-status": "allowed",
            "anthropic-ratelimit-unified-5h-utilization": str(used),
            "anthropic-ratelimit-unified-5h-reset": str(reset)}


async def serve(d: Dialer, rules):
    job, sink = make_job(rules), MemorySink()
    await d.run(job, sink)
    return job, sink


async def test_full_is_announced_when_an_answer_crosses_drain_at_once_per_window(mock_a, mock_b):
    reset = int(time.time()) + 3600
    mock_a.script(ok(headers=utilization(0.5, reset)), ok(headers=utilization(0.93, reset)),
                  ok(headers=utilization(0.97, reset)))
    rules = rules_for(("a", "anthropic", mock_a.base_url), ("b", "anthropic", mock_b.base_url), extra=FAST)
    d, heard = dialer()
    try:
        for _ in range(3):    # the dialer is handed `a` each time: plan() would skip it once full
            await serve(d, rules)
    finally:
        await d.aclose()
    [event] = heard
    assert (event.kind, event.upstream, event.route) == ("full", "a", None)
    assert event.until == datetime.fromtimestamp(reset, UTC)
    assert event.episode == f"5h:{news_slot(reset)}" and event.claim == f"full:a:5h:{news_slot(reset)}"
    assert event.reason == "its 5h window is at 93% (drain_at 90%): skipped until it resets"


async def test_a_window_full_again_after_its_reset_is_a_new_episode(mock_a, mock_b):
    first, second = int(time.time()) + 3600, int(time.time()) + 7200
    mock_a.script(ok(headers=utilization(0.95, first)), ok(headers=utilization(0.1, second)),
                  ok(headers=utilization(0.99, second)))
    rules = rules_for(("a", "anthropic", mock_a.base_url), ("b", "anthropic", mock_b.base_url), extra=FAST)
    d, heard = dialer()
    try:
        for _ in range(3):
            await serve(d, rules)
    finally:
        await d.aclose()
    assert [(e.kind, e.episode) for e in heard] == [("full", f"5h:{news_slot(first)}"),
                                                    ("full", f"5h:{news_slot(second)}")]


async def test_answers_without_rate_limit_headers_announce_nothing(mock_a, mock_b):
    rules = rules_for(("a", "anthropic", mock_a.base_url), ("b", "anthropic", mock_b.base_url), extra=FAST)
    d, heard = dialer()
    try:
        await serve(d, rules)
    finally:
        await d.aclose()
    assert heard == []


async def test_a_failing_upstream_is_announced_once_and_its_recovery_after(mock_a, mock_b):
    mock_a.script(status(503), status(503), ok())
    rules = rules_for(("a", "anthropic", mock_a.base_url), ("b", "anthropic", mock_b.base_url), extra=FAST)
    d, heard = dialer()
    try:
        job, sink = await serve(d, rules)                  # a fails (cooldown), b answers
        assert sink.status == 200 and job.upstream == "b"
        d.health.get("a").cooling_until = d.health.clock()   # the cooldown is over: the next one probes
        await serve(d, rules)                              # the probe fails: the same outage
        d.health.get("a").cooling_until = d.health.clock()
        job, _ = await serve(d, rules)                     # the probe succeeds
        assert job.upstream == "a"
    finally:
        await d.aclose()
    assert [(e.kind, e.upstream) for e in heard] == [("cooldown", "a"), ("recovered", "a")]
    assert heard[0].reason == "cooling down for 600s after 1 consecutive failure(s) (last: HTTP 503)"
    assert heard[0].episode == heard[1].episode


def test_a_dialer_without_a_bus_learns_windows_all_the_same():
    d = Dialer(HealthBoard(), quota=QuotaBoard())
    learn_windows(d.quota, d.events, "a", list(utilization(0.99, int(time.time()) + 60).items()), 0.9)
    assert d.quota.full("a", 0.9) is not None


def _told(events: list) -> list:
    """What the webhooks hear of `events`: the first of each occurrence."""
    from ccswitch.notify.dedupe import Deduper

    dedupe = Deduper()
    return [e for e in events if dedupe.first(e)]


def test_a_bucket_refilled_again_and_again_is_news_once_a_quarter_hour():
    # a tokens-per-minute bucket names a new reset on every answer: each was a webhook
    now = [1_800_000_000.0]      # on a quarter hour: two minutes stay inside one
    quota, events, heard = QuotaBoard(clock=lambda: now[0]), Events(), []
    events.subscribe(heard.append)
    bucket = [("x-ratelimit-limit-tokens", "30000"), ("x-ratelimit-remaining-tokens", "1000"),
              ("x-ratelimit-reset-tokens", "1.5s")]
    for _ in range(60):
        learn_windows(quota, events, "relay", bucket, 0.95)
        now[0] += 2.0
    assert len(heard) == 60 and len(_told(heard)) == 1     # full again after each reset; told once
    now[0] += 900
    learn_windows(quota, events, "relay", bucket, 0.95)
    assert len(_told(heard)) == 2                          # a quarter hour on, it is news again


def test_an_end_that_moves_is_named_for_the_end_of_its_quarter_hour():
    # the episode's text reads as a time: the end of the slot the news holds for, not its start
    start = datetime(2027, 1, 15, 10, 0, tzinfo=UTC).timestamp()
    assert news_slot(start + 1) == news_slot(start + 899) == "2027-01-15T10:15"
    assert news_slot(start) == "2027-01-15T10:00"               # on the grid: the slot it ends
    assert news_slot(start + 1, 3600) == "2027-01-15T11:00"


def test_a_rejecting_window_without_a_reset_is_news_once_an_hour():
    now = [1_800_000_001.0]    # just past an hour: two hours of probes in two
    quota, events, heard = QuotaBoard(clock=lambda: now[0]), Events(), []
    events.subscribe(heard.append)
    rejected = [("anthropic-ratelimit-unified-status", "rejected")]
    for _ in range(12):                                    # seen again at each probe, 10 minutes apart
        learn_windows(quota, events, "relay", rejected, 0.95)
        now[0] += 600
    assert len(heard) == 12 and len(_told(heard)) == 2, [e.episode for e in heard]
