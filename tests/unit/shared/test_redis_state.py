"""The shared state against a real redis-server (tests/support/redis_server.py): instances are
RedisState objects with boards of their own, in one event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime

import pytest
import redis.asyncio as redis

from ccswitch.config.models import Budget, ClientKey, Rules
from ccswitch.config.state_url import RedisURL
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.budget import CLIENT, SpendBoard
from ccswitch.routing.events import Events
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.quota import QuotaBoard
from ccswitch.routing.state import Boards
from ccswitch.shared import layout
from ccswitch.shared.factory import StateUnavailable, state_for
from ccswitch.shared.redis_state import RedisState
from tests.support.helpers import eventually

RULES = Rules(timezone="UTC", client_keys=[ClientKey(name="k", key="secret-k", budget=Budget(daily=1.0))])


class Node:
    """One instance: boards on the real clocks, and its RedisState."""

    def __init__(self, url: str, *, key: str = "key-1", **options) -> None:
        self.events = Events()
        self.health = HealthBoard(events=self.events)
        self.quota = QuotaBoard()
        self.sessions = SessionBindings()
        self.spend = SpendBoard(events=self.events)
        self.spend.configure(RULES)
        self.boards = Boards(self.health, self.quota, self.sessions, self.spend)
        self.boards.sync_accounts({"relay": ("https://relay.example", key, "anthropic")})   # the rules' `relay`
        self.state = RedisState(RedisURL.parse(url), **options)

    async def __aenter__(self) -> Node:
        await self.state.start(self.boards)
        await eventually(lambda: self.state.up)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.state.stop()


@pytest.fixture
async def store(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_a_cooldown_is_written_with_its_end_as_expiry_and_applied_by_the_other(redis_url, store):
    async with Node(redis_url) as a, Node(redis_url) as b:
        a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
        await eventually(lambda: b.health.cooling_until("relay") is not None)
        left = b.health.cooling_until("relay") - b.health.clock()
        assert 58 < left <= 60
        stored = json.loads(await store.get("ccswitch:h:relay"))
        assert stored["failures"] == 1 and stored["t"] == "health"
        assert 58_000 < await store.pttl("ccswitch:h:relay") <= 60_000      # expires with the cooldown
        assert b.state.lag.count >= 1                                         # b measured its staleness
        b.health.record_success("relay")                                     # b's probe answers
        await eventually(lambda: a.health.cooling_until("relay") is None and a.health.get("relay").failures == 0)


async def test_windows_bindings_preference_and_switches_expire_on_their_own(redis_url, store):
    now = time.time()
    async with Node(redis_url) as a, Node(redis_url) as b:
        a.quota.record("relay", [("anthropic-ratelimit-unified-5h-utilization", "0.99"),
                                 ("anthropic-ratelimit-unified-5h-reset", str(int(now + 1800)))])
        a.sessions.bind("messages", "session-1", "relay", 900)
        a.health.prefer("relay", a.health.clock() + 300)
        a.health.switch("backup", False)
        await eventually(lambda: b.quota.full("relay", 0.95) is not None
                         and b.sessions.bound("messages", "session-1") == "relay"
                         and b.health.preferred_name() == "relay" and not b.health.enabled("backup", True))
        assert 1_790_000 < await store.pttl("ccswitch:q:relay") <= 1_800_000      # the window's reset
        binding = [k async for k in store.scan_iter("ccswitch:b:messages:*")]
        assert len(binding) == 1 and 890_000 < await store.pttl(binding[0]) <= 900_000   # the sticky TTL
        assert 290_000 < await store.pttl("ccswitch:use") <= 300_000
        assert 0 < await store.pttl("ccswitch:sw:backup") <= layout.SWITCH_MEMORY * 1000
        a.health.unprefer()
        await eventually(lambda: b.health.preferred_name() is None)
        assert await store.exists("ccswitch:use") == 0


async def test_spend_adds_up_across_instances_in_a_key_that_ends_with_the_period(redis_url, store):
    async with Node(redis_url) as a, Node(redis_url) as b:
        for _ in range(5):
            a.spend.add(CLIENT, "k", 0.1)
            b.spend.add(CLIENT, "k", 0.2)
        await eventually(lambda: abs(a.spend.spent(CLIENT, "k", "daily") - 1.5) < 1e-9
                         and abs(b.spend.spent(CLIENT, "k", "daily") - 1.5) < 1e-9)
        assert a.spend.over(CLIENT, "k") is not None and b.spend.over(CLIENT, "k") is not None
        keys = sorted([k async for k in store.scan_iter("ccswitch:s:client:k:*")])
        assert [k.split(":")[4] for k in keys] == ["daily", "monthly"]
        assert abs(float(await store.get(keys[0])) - 1.5) < 1e-9
        day_end = int(keys[0].split(":")[6])
        assert datetime.fromtimestamp(day_end, UTC).hour == 0
        assert abs(await store.pttl(keys[0]) / 1000 - (day_end - time.time())) < 5


async def test_a_budget_line_two_instances_cross_together_is_told_once_for_all(redis_url):
    async with Node(redis_url) as a, Node(redis_url) as b:
        told = []
        for node in (a, b):
            node.events.subscribe(lambda event: told.append(event.reason))
        both_at = lambda usd: all(abs(n.spend.spent(CLIENT, "k", "daily") - usd) < 1e-9 for n in (a, b))
        a.spend.add(CLIENT, "k", 0.45)
        b.spend.add(CLIENT, "k", 0.45)
        await eventually(lambda: both_at(0.9))
        a.spend.add(CLIENT, "k", 0.06)
        b.spend.add(CLIENT, "k", 0.06)
        await eventually(lambda: both_at(1.02))
        await asyncio.sleep(0.1)
    assert sum("80%" in reason for reason in told) == 1, told
    assert sum("reached its daily budget" in reason for reason in told) == 1, told


async def test_a_late_starter_loads_what_redis_holds(redis_url):
    async with Node(redis_url) as a:
        a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
        a.sessions.bind("messages", "s", "relay", 600)
        a.spend.add(CLIENT, "k", 0.25)
        await eventually(lambda: not a.state._pending and not a.state._unsent)
        await asyncio.sleep(0.05)
        assert await a.state.claim_state("health:relay", "cooldown", "1") is True    # who tells what: no record
        async with Node(redis_url) as c:
            assert c.health.cooling_until("relay") is not None
            assert c.sessions.bound("messages", "s") == "relay"
            assert c.spend.spent(CLIENT, "k", "daily") == 0.25
            assert c.state.malformed == 0


def full_window(node: Node) -> None:
    node.quota.record("relay", [("anthropic-ratelimit-unified-5h-utilization", "0.99"),
                                ("anthropic-ratelimit-unified-5h-reset", str(int(time.time() + 1800)))])


async def test_what_redis_holds_of_an_upstream_s_old_key_is_not_taken_by_an_instance_with_its_new_key(redis_url):
    """A reload gave `relay` another key while Redis was unreachable (or Redis came back from a
    snapshot taken before it): the old key's full window and cooldown must not come back."""
    async with Node(redis_url, key="old") as a:
        full_window(a)
        a.health.record_failure("relay", "HTTP 429", threshold=1, cooldown=3600)
        await eventually(lambda: not a.state._pending)
        await asyncio.sleep(0.05)
    async with Node(redis_url, key="new") as b, Node(redis_url, key="old") as c:
        await eventually(lambda: c.quota.full("relay", 0.95) is not None and c.health.cooling_until("relay"))
        assert b.quota.full("relay", 0.95) is None and b.health.cooling_until("relay") is None


async def test_an_instance_still_on_an_upstream_s_old_key_does_not_mark_the_new_key_full(redis_url):
    """Instances reloading one after another: what the old key learns is not the new key's."""
    async with Node(redis_url, key="new") as a, Node(redis_url, key="old") as b, Node(redis_url, key="old") as c:
        full_window(b)
        b.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
        await eventually(lambda: c.quota.full("relay", 0.95) is not None and c.health.cooling_until("relay"))
        await asyncio.sleep(0.05)
        assert a.quota.full("relay", 0.95) is None and a.health.cooling_until("relay") is None


async def test_what_an_instance_publishes_is_not_applied_back_to_itself(redis_url):
    async with Node(redis_url) as a:
        a.spend.add(CLIENT, "k", 0.3)
        await eventually(lambda: a.state.lag.count == 0 and not a.state._unsent)
        await asyncio.sleep(0.1)
        assert a.spend.spent(CLIENT, "k", "daily") == 0.3 and a.state.lag.count == 0


async def test_a_malformed_message_is_ignored_with_one_warning(redis_url, store, caplog):
    caplog.set_level(logging.WARNING, "ccswitch.state")
    async with Node(redis_url) as b, Node(redis_url) as a:
        for junk in ("not json", json.dumps({"changes": [{"t": "health", "upstream": 5}]}), "[]"):
            await store.publish(layout.channel(0), junk)
        a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
        await eventually(lambda: b.health.cooling_until("relay") is not None)
    assert caplog.text.count("cannot read") == 2 and b.state.malformed == a.state.malformed == 3   # once each


async def test_an_outage_is_served_from_memory_logged_once_and_merged_when_redis_is_back(own_redis, caplog):
    caplog.set_level(logging.INFO, "ccswitch.state")
    url = own_redis.url()
    options = {"retry": (0.05, 0.2)}
    async with Node(url, **options) as a, Node(url, **options) as b:
        own_redis.kill()
        await eventually(lambda: not a.state.up and not b.state.up)
        # the request path goes on: every board call returns at once, nothing raises
        started = time.perf_counter()
        a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=120)
        await asyncio.sleep(0.01)
        b.health.record_failure("relay", "HTTP 503", threshold=5, cooldown=120)   # later, and no cooldown
        a.sessions.bind("messages", "s-outage", "relay", 600)
        for _ in range(10):
            a.spend.add(CLIENT, "k", 0.1)
            b.spend.add(CLIENT, "k", 0.05)
        assert time.perf_counter() - started < 0.05
        await asyncio.sleep(1.0)                     # several reconnection attempts fail meanwhile
        assert b.health.cooling_until("relay") is None
        own_redis.start()                            # empty: nothing was saved
        await eventually(lambda: a.state.up and b.state.up)
        await eventually(lambda: b.health.cooling_until("relay") is not None
                         and b.sessions.bound("messages", "s-outage") == "relay")
        await asyncio.sleep(0.3)                     # b's later failure reached a too: the cooldown holds
        assert a.health.cooling_until("relay") is not None and b.health.cooling_until("relay") is not None
        await eventually(lambda: abs(a.spend.spent(CLIENT, "k", "daily") - 1.5) < 1e-9
                         and abs(b.spend.spent(CLIENT, "k", "daily") - 1.5) < 1e-9)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("is unreachable" in line for line in said) == 2, said          # once per instance
    assert sum("is reachable again" in line for line in said) == 2, said


async def test_redis_down_at_start_is_no_obstacle(caplog):
    caplog.set_level(logging.WARNING, "ccswitch.state")
    from tests.support.redis_server import free_port
    node = Node(f"redis://127.0.0.1:{free_port()}/0", retry=(0.05, 0.1))
    await node.state.start(node.boards)
    node.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    assert node.health.cooling_until("relay") is not None
    await asyncio.sleep(0.5)
    await node.state.stop()
    assert caplog.text.count("is unreachable") == 1 and not node.state.up


async def test_what_is_queued_at_shutdown_is_handed_on(redis_url, store):
    async with Node(redis_url) as a:
        a.spend.add(CLIENT, "k", 0.75)
    keys = [k async for k in store.scan_iter("ccswitch:s:client:k:daily:*")]
    assert float(await store.get(keys[0])) == 0.75


def test_the_queue_is_bounded_and_keeps_the_newest_record_of_each_thing(caplog):
    caplog.set_level(logging.WARNING, "ccswitch.state")
    state = RedisState(RedisURL.parse("redis://127.0.0.1:1/0"), max_pending=3)
    state.up = True
    health = HealthBoard()
    health.on_change = state._offer
    for name in ("a", "b", "c", "a", "d", "e"):
        health.record_failure(name, "HTTP 500", threshold=5, cooldown=1)
    assert [key[1] for key in state._pending] == ["a", "d", "e"] and state.dropped == 2
    assert state._pending[("h", "a")].failures == 2
    assert caplog.text.count("does not keep up") == 1


def test_without_the_rules_naming_a_state_nothing_is_shared(monkeypatch):
    assert state_for(None).where.startswith("in memory")
    assert isinstance(state_for(RedisURL.parse("redis://127.0.0.1:6379/3")), RedisState)
    monkeypatch.setattr("ccswitch.shared.factory.importlib.util.find_spec", lambda name: None)
    with pytest.raises(StateUnavailable, match="pip install"):
        state_for(RedisURL.parse("redis://127.0.0.1:6379/3"))


def test_the_password_is_never_shown():
    state = RedisState(RedisURL.parse("redis://:hunter2secret@127.0.0.1:6379/1"))
    assert "hunter2secret" not in state.where and "***" in state.where
    assert "hunter2secret" not in state._describe(OSError("AUTH hunter2secret failed"))
    encoded = RedisState(RedisURL.parse("redis://:p%40ss%2Fword@127.0.0.1:6379/1"))   # as a ${VAR} with @ / goes in
    assert encoded._describe(OSError("AUTH p@ss/word or p%40ss%2Fword failed")) == \
        "OSError: AUTH *** or *** failed"
    assert state.channel == "ccswitch:changes:1"


async def test_two_instances_reaching_a_cooldown_at_once_tell_it_once(redis_url, store):
    """Both reach the threshold before either has heard of the other's, each naming the outage
    by its own cooldown's end: the claim of the occurrence lets exactly one of them tell it."""
    async with Node(redis_url) as a, Node(redis_url) as b:
        seen = []
        for node in (a, b):
            node.events.subscribe(lambda event, node=node: seen.append((node, event)))
        a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
        b.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
        assert len(seen) == 2 and seen[0][1].episode != seen[1][1].episode
        told = [await node.state.claim_state(event.claim, event.state, event.episode) for node, event in seen]
        assert told == [True, False]
        assert (await store.get("ccswitch:n:health:relay")).startswith(f"cooldown {seen[1][1].episode} ")
        assert 6 * 86400_000 < await store.pttl("ccswitch:n:health:relay") <= 7 * 86400_000


async def test_each_change_of_an_upstream_s_state_is_told_once_however_soon_it_follows_the_last(
        redis_url, store):
    """A second outage a moment after an early recovery is news (the hooks must not be left with
    `recovered` while it is down); the same state reported again, by either instance, is not."""
    async with Node(redis_url) as a, Node(redis_url) as b:
        steps = [(a, "cooldown", "1"), (b, "cooldown", "1b"), (b, "recovered", "1b"), (a, "recovered", "1"),
                 (a, "cooldown", "2"), (b, "recovered", "2")]
        told = [await node.state.claim_state("health:relay", state, episode) for node, state, episode in steps]
    assert told == [True, False, True, False, True, True]


async def test_the_same_state_of_another_outage_claimed_long_after_the_last_is_news(redis_url, store):
    """Its recovery was never told (every instance restarted once its cooldown had ended): a
    cooldown found there from an hour ago is no reason to keep a new outage quiet; the same
    outage is the same news however late (an instance that learnt of it late)."""
    async with Node(redis_url) as a:
        await store.set("ccswitch:n:health:relay", f"cooldown old {time.time() - 3600:.3f}")
        assert await a.state.claim_state("health:relay", "cooldown", "old") is False
        await store.set("ccswitch:n:health:relay", f"cooldown old {time.time() - 3600:.3f}")
        assert await a.state.claim_state("health:relay", "cooldown", "new") is True
        assert await a.state.claim_state("health:relay", "cooldown", "newer") is False    # within 10 s
        await store.set("ccswitch:n:health:relay", "written by something else")
        assert await a.state.claim_state("health:relay", "cooldown", "x") is True
        await store.set("ccswitch:n:health:relay", f"cooldown old {time.time() + 60:.3f}")   # a clock ahead
        assert await a.state.claim_state("health:relay", "cooldown", "y") is True
        await store.set("ccswitch:n:health:relay", "recovered")      # an older ccswitch's
        assert await a.state.claim_state("health:relay", "cooldown", "z", absorbed=True) is True


async def test_a_cooldown_the_damper_took_back_is_told_only_if_redis_holds_another_state(redis_url, store):
    async with Node(redis_url) as a:
        assert await a.state.claim_state("health:relay", "cooldown", "1", absorbed=True) is False   # nothing held
        await store.set("ccswitch:n:health:relay", f"cooldown 1 {time.time() - 3600:.3f}")
        assert await a.state.claim_state("health:relay", "cooldown", "2", absorbed=True) is False
        assert await a.state.claim_state("health:relay", "recovered", "2") is True      # another instance's
        assert await a.state.claim_state("health:relay", "cooldown", "3", absorbed=True) is True
        a.state.up = False      # unreachable: not told, and not taken as told here
        assert await a.state.claim_state("health:relay", "cooldown", "4", absorbed=True) is False
        a.state.up = True
        assert await a.state.claim_state("health:relay", "cooldown", "4") is False
        a.state.up = False      # this instance tells a recovery alone, then a flapping cooldown
        assert await a.state.claim_state("health:relay", "recovered", "4") is True
        assert await a.state.claim_state("health:relay", "cooldown", "5") is True
        a.state.up = True       # Redis back, still holding what came before: the hooks' last word is ours
        await store.set("ccswitch:n:health:relay", f"recovered 0 {time.time() - 3600:.3f}")
        assert await a.state.claim_state("health:relay", "cooldown", "6", absorbed=True) is False


async def test_a_state_told_while_redis_was_away_is_told_again_once_it_is_back(redis_url, store):
    """Redis still holds `cooldown` from before; the hooks heard `recovered` from here meanwhile:
    the next cooldown is news, whatever Redis held."""
    async with Node(redis_url) as a:
        assert await a.state.claim_state("health:relay", "cooldown", "1") is True
        a.state.up = False
        assert await a.state.claim_state("health:relay", "recovered", "1") is True     # told here alone
        a.state.up = True
        assert await a.state.claim_state("health:relay", "cooldown", "1") is True
        assert await a.state.claim_state("health:relay", "cooldown", "1") is False


async def test_a_claim_is_granted_when_redis_fails_to_answer_it():
    state = RedisState(RedisURL.parse("redis://127.0.0.1:9/0"))
    state.up, state._client = True, state._connect()      # up a moment ago: the command itself fails
    try:
        assert await state.claim("budget:x", time.time() + 10) is True
        assert await state.claim_state("health:relay", "cooldown", "1") is True
    finally:
        await state._client.aclose()


async def test_a_claim_is_granted_when_redis_cannot_be_asked():
    # telling an occurrence twice beats never telling it
    state = RedisState(RedisURL.parse("redis://127.0.0.1:9/0"))
    assert await state.claim("budget:x", time.time() + 60) is True
    assert await state.claim_state("health:relay", "cooldown", "1") is True
