"""The half-open probe after a cooldown: one request at a time tests the upstream."""

import asyncio

from ccswitch.dial.dialer import Dialer
from ccswitch.routing.health import HealthBoard
from tests.support.helpers import MemorySink, make_job, rules_for
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import hang_before_headers, ok


async def test_a_request_that_reaches_a_probed_upstream_does_not_end_the_probe(mock_a):
    rules = rules_for(("a", "anthropic", mock_a.base_url))
    health = HealthBoard()
    health.record_failure("a", "HTTP 503", threshold=1, cooldown=0.01)
    await asyncio.sleep(0.02)
    assert health.needs_probe("a")                     # cooled down: the next request probes it
    mock_a.script(hang_before_headers(1.0), ok())       # the probe is slow; the next answers at once
    dialer = Dialer(health, allow_url=loopback_url)
    try:
        probe = asyncio.create_task(dialer.run(make_job(rules), MemorySink()))
        for _ in range(300):
            if mock_a.requests:
                break
            await asyncio.sleep(0.01)
        assert health.busy_probing("a")
        second = MemorySink()
        await dialer.run(make_job(rules), second)       # `a` is its last candidate: tried all the same
        assert second.status == 200
        assert health.busy_probing("a")                 # the first request is still the probe
        await probe
        assert not health.busy_probing("a")
    finally:
        await dialer.aclose()


def test_while_an_upstream_is_probed_other_requests_go_elsewhere_if_they_can():
    from datetime import datetime

    from ccswitch.routing.plan import plan
    rules = rules_for(("a", "anthropic", "http://127.0.0.1:9"), ("b", "anthropic", "http://127.0.0.1:9"))
    health = HealthBoard()
    health.begin_probe("a")                             # one request is testing `a` after its cooldown
    chosen = plan(rules, "claude", "m", health, datetime.now(rules.tz))
    assert [u.name for u in chosen.candidates] == ["b"]
    assert ("a", "being probed after its cooldown") in chosen.blocked
