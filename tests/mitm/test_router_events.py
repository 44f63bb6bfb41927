"""`exhausted`: the router announces a route it answers itself (429 until a known reset, 503
when nothing is available) — once per occurrence, however many requests it refuses."""

import time
from datetime import UTC, datetime

from mitmproxy.test import taddons

from ccswitch.dial.relay import Relay
from ccswitch.mitm.router import Router
from ccswitch.notify.dedupe import Deduper
from tests.mitm.test_router import messages_flow
from tests.support.helpers import CLIENT_KEY, KEY_A

RULES = f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: b, protocol: openai-responses, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}', enabled: false}}
routes: {{claude: [a], codex: [b]}}
"""


def listen(gateway) -> list:
    heard = []
    gateway.events.subscribe(heard.append)
    return heard


async def refuse_many(router, count, **flow_args) -> list[int]:
    statuses = []
    with taddons.context(router):
        for _ in range(count):
            flow = messages_flow({"model": "m", "messages": []}, **flow_args)
            await router.request(flow)
            statuses.append(flow.response.status_code)
    return statuses


async def test_a_storm_of_own_429s_is_one_event_naming_the_reset(gateway):
    router = Router(gateway)
    router.relay = Relay(None)
    router.started.set()
    reset = int(time.time() + 300)
    gateway.quota.record("a", [("anthropic-ratelimit-unified-status", "rejected"),
                               ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
                               ("anthropic-ratelimit-unified-5h-reset", str(reset))])
    heard = listen(gateway)
    assert await refuse_many(router, 20) == [429] * 20
    assert len(heard) == 20                        # emitted per refusal, all the same occurrence:
    seen = Deduper()
    assert [seen.first(e) for e in heard].count(True) == 1
    event = heard[0]
    assert (event.kind, event.upstream, event.route) == ("exhausted", None, "claude")
    assert event.until == datetime.fromtimestamp(reset, UTC)
    assert "no upstream available for the claude route: a is full until" in event.reason
    assert CLIENT_KEY not in event.reason and KEY_A not in event.reason


async def test_own_429s_until_resets_a_few_seconds_apart_are_one_event(gateway):
    # a route held at a per-minute bucket: each refusal names a reset a little later, and each
    # was a webhook
    router = Router(gateway)
    router.relay = Relay(None)
    router.started.set()
    now = (int(time.time()) // 900 + 1) * 900 + 1.0     # just past a quarter hour
    gateway.quota.clock = lambda: now
    heard = listen(gateway)
    for later in (20, 35, 50):
        gateway.quota.record("a", [("anthropic-ratelimit-unified-status", "rejected"),
                                   ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
                                   ("anthropic-ratelimit-unified-5h-reset", str(int(now) + later))])
        assert await refuse_many(router, 2) == [429] * 2
    assert len({e.until for e in heard}) == 3              # each still names its own reset
    seen = Deduper()
    assert [seen.first(e) for e in heard].count(True) == 1


async def test_an_own_429_names_its_reset_to_the_nearest_second(gateway):
    # a reset that is no whole second (a bucket's `1.5s`) was cut down: 12:00:00.7 read 12:00:00
    router = Router(gateway)
    router.relay = Relay(None)
    router.started.set()
    now = int(time.time()) + 0.2
    gateway.quota.clock = lambda: now
    heard = listen(gateway)
    gateway.quota.record("a", [("anthropic-ratelimit-unified-status", "rejected"),
                               ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
                               ("anthropic-ratelimit-unified-5h-reset", str(now + 300.5))])
    assert await refuse_many(router, 1) == [429]
    assert heard[0].until == datetime.fromtimestamp(round(now + 300.5), UTC)


async def test_a_503_with_nothing_available_is_one_event_per_hour(gateway):
    router = Router(gateway)
    router.relay = Relay(None)
    router.started.set()
    heard = listen(gateway)
    statuses = await refuse_many(router, 5, host="chatgpt.com", path="/backend-api/codex/responses")
    assert statuses == [503] * 5
    assert {(e.kind, e.route, e.until, e.episode) for e in heard} == {
        ("exhausted", "codex", None, f"503 {datetime.now(UTC):%Y-%m-%dT%H}")}
    assert heard[0].claim == f"exhausted:codex:{heard[0].episode}"
    assert heard[0].reason == "no upstream available for the codex route: b is disabled"


async def test_a_refused_client_key_is_no_route_event(gateway):
    router = Router(gateway)
    router.relay = Relay(None)
    router.started.set()
    heard = listen(gateway)
    assert await refuse_many(router, 1, key="wrong-key-0000000") == [401]
    assert heard == []
