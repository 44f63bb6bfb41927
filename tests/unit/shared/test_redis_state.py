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
from ccswitch.routing.changes import BindChange, IssueChange, SpendTotal, WindowChange, encode
from ccswitch.routing.events import Events
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.issued import IssuedResponses
from ccswitch.routing.quota import QuotaBoard
from ccswitch.routing.state import Boards
from ccswitch.shared import layout
from ccswitch.shared.claims import OUTAGES
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
        self.issued = IssuedResponses()
        self.boards = Boards(self.health, self.quota, self.sessions, self.spend, self.issued)
        self.boards.sync_accounts({"relay": ("https://relay.example", key, "anthropic")})   # the rules' `relay`
        self.state = RedisState(RedisURL.parse(url), **options)

    async def __aenter__(self) -> Node:
        await self.state.start(self.boards)
        await eventually(lambda: self.state.up)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.state.stop()


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
        a.issued.record("resp_1", "relay")
        # written: the flush takes the queue at once and only then awaits Redis's answer
        await eventually(lambda: not a.state._pending and not a.state._unsent and not a.state._writing)
        assert await a.state.claim_state("health:relay", "cooldown", "1") is True    # who tells what: no record
        async with Node(redis_url) as c:
            assert c.health.cooling_until("relay") is not None
            assert c.sessions.bound("messages", "s") == "relay"
            assert c.issued.issuer("resp_1") == "relay"
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
        # (timed: the board calls, not the test's own pause between them, which a busy machine
        # stretched to 0.23 s once)
        started = time.perf_counter()
        a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=120)
        took = time.perf_counter() - started
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        b.health.record_failure("relay", "HTTP 503", threshold=5, cooldown=120)   # later, and no cooldown
        a.sessions.bind("messages", "s-outage", "relay", 600)
        for _ in range(10):
            a.spend.add(CLIENT, "k", 0.1)
            b.spend.add(CLIENT, "k", 0.05)
        assert took + time.perf_counter() - started < 0.05
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


async def test_a_client_redis_py_cannot_make_is_an_outage_not_the_end_of_sharing(redis_url, monkeypatch, caplog):
    # made outside the supervisor's `try`: its error ended the task without a word, sharing never
    # started and every claim waited for a first look that never came
    caplog.set_level(logging.WARNING, "ccswitch.state")
    connect, refused = RedisState._connect, []

    def refused_once(self):
        if not refused:
            refused.append(True)
            raise ValueError("Invalid value for 'socket_timeout' in connection URL.")
        return connect(self)
    monkeypatch.setattr(RedisState, "_connect", refused_once)
    async with Node(redis_url, retry=(0.05, 0.1)) as a:
        assert a.state._task is not None and not a.state._task.done()
    assert "Invalid value for 'socket_timeout'" in caplog.text


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


def test_a_full_queue_never_drops_a_reset():
    # a `ccswitch.reset` dropped was told to no one, and Redis's windows came back on this
    # instance at its next reconnection; the records dropped instead are merged in then
    node = _detached()
    node.state.up, node.state.max_pending = True, 3
    node.quota.forget("relay")
    for n in range(5):
        node.sessions.bind("messages", f"s-{n}", "relay", 600)
    assert list(node.state._pending) == [("qf", "relay"), ("b", "messages", "s-3"), ("b", "messages", "s-4")]
    assert node.state.dropped == 3


def test_without_the_rules_naming_a_state_nothing_is_shared(monkeypatch):
    assert state_for(None).where.startswith("in memory")
    assert isinstance(state_for(RedisURL.parse("redis://127.0.0.1:6379/3")), RedisState)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(StateUnavailable, match="pip install"):
        state_for(RedisURL.parse("redis://127.0.0.1:6379/3"))
    assert state_for(None).where.startswith("in memory")      # no state named: no package needed


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
    from tests.support.redis_server import free_port
    node = Node(f"redis://127.0.0.1:{free_port()}/0", retry=(0.05, 0.1))
    await node.state.start(node.boards)
    try:
        started = time.monotonic()
        assert await node.state.claim("budget:x", time.time() + 60) is True
        assert await node.state.claim_state("health:relay", "cooldown", "1") is True
        assert time.monotonic() - started < 2       # refused at once: no wait for it
    finally:
        await node.state.stop()


async def test_instances_starting_together_claim_an_occurrence_once_not_before_redis_was_tried(redis_url):
    # a missed activation time probed at the start, before the instance had reached Redis, read
    # as an outage: each instance starting beside another (or restarted) sent its own probe
    a, b = Node(redis_url), Node(redis_url)
    await a.state.start(a.boards)
    await b.state.start(b.boards)
    try:
        until = time.time() + 60
        won = await asyncio.gather(a.state.claim("activation:relay:2026-12-10 06:00:1", until),
                                   b.state.claim("activation:relay:2026-12-10 06:00:1", until))
        assert sorted(won) == [False, True]
    finally:
        await a.state.stop()
        await b.state.stop()


# ---------------------------------------------------------------------------- what each key holds, and how long


async def _stored(store, key: str, check=lambda value: value is not None, timeout: float = 5.0):
    """The value of `key` once `check` holds for it (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await store.get(key)
        if check(value):
            return value
        assert time.monotonic() < deadline, f"{key} holds {value!r}"
        await asyncio.sleep(0.01)


async def test_a_record_without_a_cooldown_is_kept_ten_minutes(redis_url, store):
    async with Node(redis_url) as a:
        a.health.record_failure("relay", "HTTP 503", threshold=5, cooldown=60)     # below the threshold
        assert json.loads(await _stored(store, "ccswitch:h:relay"))["failures"] == 1
        assert 590_000 < await store.pttl("ccswitch:h:relay") <= layout.HEALTH_MEMORY * 1000


async def test_a_reset_deletes_the_upstream_s_switch(redis_url, store):
    async with Node(redis_url) as a, Node(redis_url) as b:
        a.health.switch("backup", False)
        await _stored(store, "ccswitch:sw:backup")
        await eventually(lambda: not b.health.enabled("backup", True))
        a.health.reset("backup")
        await _stored(store, "ccswitch:sw:backup", lambda value: value is None)
        await eventually(lambda: b.health.enabled("backup", True))


async def test_the_windows_hash_lives_as_long_as_its_latest_window_and_a_reset_deletes_it(redis_url, store):
    now = time.time()
    async with Node(redis_url) as a, Node(redis_url) as b:
        a.quota.record("relay", [("anthropic-ratelimit-unified-5h-utilization", "0.99"),
                                 ("anthropic-ratelimit-unified-5h-reset", str(int(now + 1800)))])
        await eventually(lambda: b.quota.full("relay", 0.95) is not None)
        a.quota.record("relay", [("anthropic-ratelimit-unified-7d-utilization", "0.5"),
                                 ("anthropic-ratelimit-unified-7d-reset", str(int(now + 7200)))])
        await eventually(lambda: not a.state._pending and not a.state._writing)
        deadline = time.monotonic() + 5
        while await store.hlen("ccswitch:q:relay") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert 7_190_000 < await store.pttl("ccswitch:q:relay") <= 7_200_000     # raised to the later reset
        a.quota.forget("relay")                                                 # ccswitch.reset
        await eventually(lambda: b.quota.full("relay", 0.95) is None)
        assert await store.exists("ccswitch:q:relay") == 0


async def test_a_binding_expires_its_idle_time_after_its_last_use_not_after_its_write(store):
    now = time.time()
    async with store.pipeline(transaction=False) as pipe:
        layout.queue_write(pipe, BindChange("messages", "s-old", "relay", 900.0, now - 300), now)
        layout.queue_write(pipe, BindChange("messages", "s-gone", "relay", 900.0, now - 1000), now)
        await pipe.execute()
    [key] = [k async for k in store.scan_iter("ccswitch:b:messages:*")]
    assert 590_000 < await store.pttl(key) <= 600_000


async def test_a_stored_response_s_issuer_is_kept_a_day_from_its_issue_under_a_digest_of_its_id(redis_url, store):
    now = time.time()
    async with store.pipeline(transaction=False) as pipe:
        layout.queue_write(pipe, IssueChange("resp_recent", "relay", now - 3600), now)
        layout.queue_write(pipe, IssueChange("resp_old", "relay", now - 86_401), now)   # past: not written
        await pipe.execute()
    [key] = [k async for k in store.scan_iter("ccswitch:r:*")]
    assert "resp_" not in key and 82_790_000 < await store.pttl(key) <= 82_800_000
    assert layout.read_back(key, await store.get(key), now) == [IssueChange("resp_recent", "relay", now - 3600)]
    async with Node(redis_url) as a, Node(redis_url) as b:
        a.issued.record("resp_live", "relay")
        await eventually(lambda: b.issued.issuer("resp_live") == "relay")


async def test_every_response_one_upstream_issues_at_once_reaches_the_other_instance(redis_url):
    # each id is a record of its own: two issued by the same upstream in one batch are not one
    async with Node(redis_url) as a, Node(redis_url) as b:
        for i in range(3):
            a.issued.record(f"resp_{i}", "relay")
        await eventually(lambda: all(b.issued.issuer(f"resp_{i}") == "relay" for i in range(3)))
        async with Node(redis_url) as c:                  # and a late starter loads each of them
            assert all(c.issued.issuer(f"resp_{i}") == "relay" for i in range(3))


def test_a_key_gone_between_the_scan_and_the_read_holds_nothing():
    assert layout.read_back("ccswitch:h:relay", None, time.time()) == []


async def test_a_late_starter_loads_windows_still_running_and_skips_unreadable_keys(redis_url, store, caplog):
    caplog.set_level(logging.WARNING, "ccswitch.state")
    now = time.time()
    async with Node(redis_url) as a:
        a.quota.record("relay", [("anthropic-ratelimit-unified-5h-utilization", "0.99"),
                                 ("anthropic-ratelimit-unified-5h-reset", str(int(now + 1800)))])
        await eventually(lambda: not a.state._pending and not a.state._writing)
        await asyncio.sleep(0.05)
    await store.hset("ccswitch:q:relay", "7d", layout.dumps(encode(
        WindowChange("relay", "7d", 1.0, now - 60, True, now - 60))))       # past its time
    await store.set("ccswitch:h:junk", "not json")
    async with Node(redis_url) as c:
        assert c.quota.full("relay", 0.95) is not None
        assert [w.window for w in c.quota.view()] == ["5h"]
        assert c.state.malformed == 1
    assert caplog.text.count("cannot read") == 1



async def test_another_program_s_key_of_another_type_or_not_utf8_is_skipped_not_the_end_of_sharing(
        redis_url, store, caplog):
    # a WRONGTYPE answer or undecodable bytes failed the whole catch-up: the instance reconnected
    # forever, sharing nothing, and called Redis unreachable
    caplog.set_level(logging.WARNING, "ccswitch.state")
    async with Node(redis_url) as a:
        a.sessions.bind("messages", "s-1", "relay", 600)
        await eventually(lambda: not a.state._pending and not a.state._writing)
    await store.set("ccswitch:q:foo", "bar")
    raw = redis.Redis.from_url(redis_url)
    await raw.set("ccswitch:h:odd", b"\xff\xfe not utf-8")
    await raw.aclose()
    async with Node(redis_url) as c:
        assert c.sessions.bound("messages", "s-1") == "relay"
        assert c.state.malformed == 2
    assert "unreachable" not in caplog.text

async def test_more_stored_keys_than_one_read_takes_are_all_loaded(redis_url):
    async with Node(redis_url) as a:
        for n in range(layout_batch() + 20):
            a.sessions.bind("messages", f"s-{n}", "relay", 600)
        await eventually(lambda: not a.state._pending and not a.state._writing)
        await asyncio.sleep(0.05)
        async with Node(redis_url) as c:
            assert all(c.sessions.bound("messages", f"s-{n}") == "relay" for n in range(layout_batch() + 20))


def layout_batch() -> int:
    from ccswitch.shared.redis_state import BATCH
    return BATCH


# ---------------------------------------------------------------------------- claims


async def test_an_occurrence_is_claimed_once_until_it_ends(redis_url, store):
    async with Node(redis_url) as a, Node(redis_url) as b:
        until = time.time() + 120
        assert await a.state.claim("budget:k:daily", until) is True
        assert await b.state.claim("budget:k:daily", until) is False
        assert await a.state.claim("budget:k:daily", until) is False
        assert await store.get("ccswitch:n:budget:k:daily") == a.state.instance
        assert 115_000 < await store.pttl("ccswitch:n:budget:k:daily") <= 120_000
        assert await a.state.claim("budget:k:over", time.time() - 5) is True     # over already: a second
        assert 0 < await store.pttl("ccswitch:n:budget:k:over") <= 1000


async def test_an_occurrence_claimed_before_redis_lost_its_data_is_not_claimed_again(redis_url, store):
    # Redis restarted empty (no persistence): a budget crossed before was told a second time
    async with Node(redis_url) as a, Node(redis_url) as b:
        until = time.time() + 120
        assert await a.state.claim("budget:k:daily", until) is True
        assert await b.state.claim("budget:k:daily", until) is False
        await store.flushdb()
        assert await b.state.claim("budget:k:daily", until) is False
        assert await a.state.claim("budget:k:daily", until) is False
        assert await a.state.claim("budget:k:weekly", until) is True      # another occurrence: news
        a.state.up = False                                               # Redis away meanwhile
        assert await a.state.claim("budget:k:daily", until) is False
        a.state.up = True


async def test_an_empty_state_claim_is_no_state_of_ours(redis_url, store):
    async with Node(redis_url) as a:
        await store.set("ccswitch:n:health:relay", "")
        assert await a.state.claim_state("health:relay", "cooldown", "1", absorbed=True) is False


async def test_a_cooldown_kept_quiet_after_redis_came_back_leaves_the_next_one_to_what_redis_holds(redis_url, store):
    async with Node(redis_url) as a:
        a.state.up = False
        assert await a.state.claim_state("health:relay", "recovered", "1") is True     # told here alone
        a.state.up = True
        assert await a.state.claim_state("health:relay", "cooldown", "2", absorbed=True) is False
        await store.set("ccswitch:n:health:relay", f"recovered b {time.time():.3f}")    # another instance's
        assert await a.state.claim_state("health:relay", "cooldown", "3", absorbed=True) is True


# ---------------------------------------------------------------------------- queueing, writing, reading


async def _published(pubsub, timeout: float = 5.0) -> dict:
    """The next change message on the channel."""
    deadline = time.monotonic() + timeout
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None and message["type"] == "message":
            return json.loads(message["data"])
        assert time.monotonic() < deadline, "nothing published"


def _detached(url: str = "redis://127.0.0.1:9/0") -> Node:
    """A node whose state takes the boards' records but never connects."""
    node = Node(url)
    node.state.boards = node.boards
    node.boards.listen(node.state._offer)
    return node


def test_while_redis_is_unreachable_only_spend_is_kept_for_it():
    node = _detached()
    node.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    node.sessions.bind("messages", "s", "relay", 600)
    node.spend.add(CLIENT, "k", 0.1)
    assert node.state._pending == {}
    assert sorted(key[3] for key in node.state._unsent) == ["daily", "monthly"]


@pytest.mark.parametrize("merge", [False, True], ids=["a write", "a catch-up"])
def test_a_total_from_another_instance_counts_this_one_s_spend_not_sent_yet(merge):
    node = _detached()
    node.spend.add(CLIENT, "k", 0.2)                       # not in Redis yet
    total = node.spend.shared(CLIENT, "k", "daily")
    theirs = SpendTotal(total.who, total.name, total.period, total.start, total.end, 0.6)
    node.state.receive(layout.dumps({"v": 1, "src": "other", "ts": time.time(), "merge": merge,
                                     "changes": [encode(theirs)]}))
    assert abs(node.spend.spent(CLIENT, "k", "daily") - 0.8) < 1e-9


def test_the_staleness_of_a_message_is_measured_from_when_it_was_made():
    node = _detached()
    message = {"v": 1, "src": "other", "merge": False, "changes": []}
    node.state.receive(layout.dumps({**message, "ts": time.time() - 0.5}))
    assert 0.5 <= node.state.lag.samples[-1] < 5
    node.state.receive(layout.dumps({**message, "ts": time.time() + 60}))    # a clock ahead: no negative lag
    assert node.state.lag.samples[-1] == 0.0 and node.state.lag.count == 2


async def test_spend_whose_write_failed_is_sent_again():
    node = _detached()
    node.spend.add(CLIENT, "k", 0.3)
    client = node.state._connect()
    try:
        with pytest.raises(OUTAGES):
            await node.state._flush(client)
    finally:
        await client.aclose()
    assert sorted((key[3], added.usd) for key, added in node.state._unsent.items()) == \
        [("daily", 0.3), ("monthly", 0.3)]


async def test_spend_redis_acknowledged_is_not_sent_again_when_telling_its_totals_fails(
        redis_url, store, monkeypatch):
    # the MULTI/EXEC had answered and the PUBLISH of the totals after it timed out: the batch's
    # spend was queued again and added a second time on reconnection
    failed, connect = [], RedisState._connect

    def with_the_totals_message_failing_once(self):
        client = connect(self)
        publish = client.publish                 # the totals' message (the others go in the MULTI)

        async def publish_or_time_out(channel, message):
            if not failed:
                failed.append(message)
                raise redis.TimeoutError("Timeout reading from 127.0.0.1")
            return await publish(channel, message)
        client.publish = publish_or_time_out
        return client
    monkeypatch.setattr(RedisState, "_connect", with_the_totals_message_failing_once)
    async with Node(redis_url, retry=(0.05, 0.1)) as a:
        a.spend.add(CLIENT, "k", 0.25)
        await eventually(lambda: failed and a.state.up and not a.state._unsent and not a.state._writing)
        await asyncio.sleep(0.1)
        stored = await _stored(store, layout.key_of(a.spend.shared(CLIENT, "k", "daily")))
    assert float(stored) == 0.25 and a.spend.spent(CLIENT, "k", "daily") == 0.25


async def test_a_message_carries_when_its_oldest_record_was_made(redis_url, store):
    clock = [time.time()]
    async with Node(redis_url, wall=lambda: clock[0]) as a:
        async with store.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(layout.channel(0))
            made = clock[0]
            a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
            clock[0] += 3                      # the writer comes to it later
            message = await _published(pubsub)
    assert message["ts"] == made


async def test_what_is_written_on_catching_up_is_published_as_a_merge(redis_url, store):
    async with store.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(layout.channel(0))
        node = Node(redis_url)
        node.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)    # known before it connects
        async with node:
            first = await _published(pubsub)
            node.health.record_failure("other", "HTTP 503", threshold=1, cooldown=60)
            second = await _published(pubsub)
    assert first["merge"] is True and second["merge"] is False


async def test_on_catching_up_redis_keeps_the_larger_spend_of_each_period_until_it_ends(redis_url, store):
    c = Node(redis_url)
    c.spend.add(CLIENT, "k", 0.75)                # counted before Redis could be asked
    daily, monthly = (c.spend.shared(CLIENT, "k", kind) for kind in ("daily", "monthly"))
    await store.set(layout.key_of(daily), "0.25")             # less than this instance counted
    await store.set(layout.key_of(monthly), "2.0")            # more
    async with c:
        await _stored(store, layout.key_of(daily), lambda value: value == "0.75")
        await eventually(lambda: c.spend.spent(CLIENT, "k", "monthly") == 2.0)
    assert float(await store.get(layout.key_of(monthly))) == 2.0
    assert abs(await store.pttl(layout.key_of(daily)) / 1000 - (daily.end - time.time())) < 5    # raised: expires with its period


@pytest.mark.parametrize("when", ["just added", "being written"])
async def test_spend_is_handed_on_at_shutdown_while_it_is_being_written_too(redis_url, when):
    async with Node(redis_url) as a, Node(redis_url) as b:
        a.spend.add(CLIENT, "k", 0.75)
        if when == "being written":
            while not a.state._writing:
                await asyncio.sleep(0)
        await a.state.stop()
        await eventually(lambda: b.spend.spent(CLIENT, "k", "daily") == 0.75)
        a.spend.add(CLIENT, "k", 0.1)                # stopped: nothing is queued any more
        assert a.state._unsent == {} and a.state._pending == {}


async def test_an_idle_connection_is_checked(redis_url, store, monkeypatch):
    monkeypatch.setattr("ccswitch.shared.redis_state.PING_EVERY", 0.02)
    async with Node(redis_url):
        before = (await store.info("commandstats")).get("cmdstat_ping", {}).get("calls", 0)
        await asyncio.sleep(0.3)
        after = (await store.info("commandstats")).get("cmdstat_ping", {}).get("calls", 0)
    assert after - before >= 3


# ---------------------------------------------------------------------------- outages


class _Pauses:
    """The supervisor's `asyncio` with `sleep` recording each reconnection pause (and not waiting)."""

    def __init__(self):
        self.pauses: list[float] = []

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def sleep(self, seconds):
        self.pauses.append(seconds)
        await asyncio.sleep(0)


async def test_reconnection_pauses_grow_to_a_cap_and_start_again_after_a_connection(monkeypatch):
    import ccswitch.shared.redis_state as redis_state
    pauses = _Pauses()
    monkeypatch.setattr(redis_state, "asyncio", pauses)
    monkeypatch.setattr(redis_state.random, "uniform", lambda low, high: 1.0)
    node = _detached()
    state = node.state
    state.retry = (1.0, 4.0)
    sessions, seen, hang = [], [], asyncio.Event()

    async def session(client):
        sessions.append(client)
        seen.append((dict(state._pending), node.spend.alone))
        if len(sessions) == 5:               # connected: the view merged in, then the link is lost
            state.up = True
            node.spend.alone = False
            state._came_up(0)
            node.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)   # queued, unsent
        if len(sessions) == 8:
            await hang.wait()
        raise ConnectionError("gone")

    state._session = session
    task = asyncio.get_running_loop().create_task(state._supervise())
    try:
        while len(sessions) < 8:
            await asyncio.sleep(0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert pauses.pauses == [1.0, 2.0, 4.0, 4.0, 1.0, 2.0, 4.0]
    assert seen[5] == ({}, True)            # once the link is lost: nothing queued, crossings told alone
    assert not state.up


async def test_budget_lines_are_told_from_this_instance_s_view_only_while_redis_is_unreachable(own_redis):
    async with Node(own_redis.url(), retry=(0.05, 0.1)) as a:
        assert a.spend.alone is False           # Redis orders the additions: the one that crossed tells
        own_redis.kill()
        await eventually(lambda: not a.state.up)
        assert a.spend.alone is True
        own_redis.start()
        await eventually(lambda: a.state.up)
        assert a.spend.alone is False


async def test_a_state_told_while_redis_was_down_is_handed_on_so_the_next_change_is_told_once(own_redis, store):
    """Redis lost its data (or restarted from an older snapshot) while an instance told a
    cooldown on its own: back in touch, that cooldown becomes the upstream's told state, so the
    recovery both instances see is told by one of them, not by both."""
    url = own_redis.url()
    async with Node(url, retry=(0.05, 0.2)) as a, Node(url, retry=(0.05, 0.2)) as c:
        own_redis.kill()
        await eventually(lambda: not a.state.up and not c.state.up)
        assert await a.state.claim_state("health:relay", "cooldown", "outage-a") is True     # told here alone
        own_redis.start()                                                                     # empty
        await eventually(lambda: a.state.up and c.state.up)
        client = redis.Redis.from_url(url, decode_responses=True)
        try:
            held = await client.get("ccswitch:n:health:relay")
        finally:
            await client.aclose()
        assert held is not None and held.startswith("cooldown outage-a ")
        told = await asyncio.gather(a.state.claim_state("health:relay", "recovered", "seen-by-a"),
                                    c.state.claim_state("health:relay", "recovered", "seen-by-c"))
        assert sorted(told) == [False, True]


async def test_a_change_made_while_catching_up_reaches_redis(redis_url, store, monkeypatch):
    # the catch-up took its view, then handed on what it told meanwhile (a wait): a cooldown
    # begun during that wait was offered before `up` and dropped
    node = Node(redis_url)
    hand_on = RedisState._hand_on_told

    async def with_a_failure_meanwhile(self, client):
        node.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
        await hand_on(self, client)
    monkeypatch.setattr(RedisState, "_hand_on_told", with_a_failure_meanwhile)
    async with node:
        await eventually(lambda: not node.state._pending and not node.state._writing)
        deadline = time.monotonic() + 5
        while not await store.exists("ccswitch:h:relay") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert json.loads(await store.get("ccswitch:h:relay"))["cooling_end"] > time.time()


@pytest.mark.parametrize("when", ["while the stored keys are read", "once the view is taken"])
async def test_spend_made_while_catching_up_is_counted_once_in_redis(redis_url, store, monkeypatch, when):
    # Redis held no key for the period: the catch-up wrote this instance's total, spend made
    # during its reads included, and the writer then added that spend again (0.1 counted 0.2,
    # on every instance).  Spend made after the view is taken is in no total written, only sent.
    node = Node(redis_url)
    meanwhile = {"while the stored keys are read": "_load", "once the view is taken": "_came_up"}[when]
    original = getattr(RedisState, meanwhile)

    def with_a_request_finishing(self, *args):
        node.spend.add(CLIENT, "k", 0.1)
        return original(self, *args)
    monkeypatch.setattr(RedisState, meanwhile, with_a_request_finishing)
    async with node:
        await eventually(lambda: not node.state._unsent and not node.state._writing)
        await asyncio.sleep(0.1)            # the totals Redis answered are applied here too
        stored = await _stored(store, layout.key_of(node.spend.shared(CLIENT, "k", "daily")))
    assert float(stored) == 0.1 and node.spend.spent(CLIENT, "k", "daily") == 0.1


async def test_a_state_handed_on_never_replaces_one_told_later_elsewhere(redis_url, store):
    async with Node(redis_url) as a:
        later = f"recovered elsewhere {time.time():.3f}"
        await store.set("ccswitch:n:health:relay", later)
        a.state._told_unshared["health:relay"] = f"cooldown here {time.time() - 60:.3f}"
        a.state._told_unshared["health:other"] = f"cooldown here {time.time() - 60:.3f}"
        await a.state._hand_on_told(a.state._client)
        assert await store.get("ccswitch:n:health:relay") == later
        assert (await store.get("ccswitch:n:health:other")).startswith("cooldown here ")
        assert 0 < await store.ttl("ccswitch:n:health:other") <= 7 * 86400 and a.state._told_unshared == {}


@pytest.mark.parametrize("how,said", [
    ("none", "it wants a password, and the state URL has none"),
    ("wrong", "the state URL's user name or password is not one it knows"),
    ("db", "the state URL's database number is beyond its `databases` setting"),
    # an ACL user without pub/sub: its SUBSCRIBE is refused only in its answer, after the catch-up
    # had said "reachable again" (7 lines a second, the pause never growing)
    ("pubsub", "the state URL's user lacks a permission ccswitch needs")])
async def test_a_url_redis_refuses_is_named_as_a_setting_to_mend_not_an_outage(own_redis, caplog, how, said):
    caplog.set_level(logging.INFO, "ccswitch.state")
    admin = redis.Redis.from_url(own_redis.url())
    await admin.execute_command("ACL", "SETUSER", "nopubsub", "on", ">pubsub-password", "~*", "&*", "+@all", "-@pubsub")
    await admin.config_set("requirepass", "right-password")
    await admin.aclose()
    url = {"none": own_redis.url(), "wrong": f"redis://:wrong-password@127.0.0.1:{own_redis.port}/0",
           "db": f"redis://:right-password@127.0.0.1:{own_redis.port}/99",
           "pubsub": f"redis://nopubsub:pubsub-password@127.0.0.1:{own_redis.port}/0"}[how]
    node = Node(url, retry=(0.05, 0.1))
    await node.state.start(node.boards)
    try:
        await eventually(lambda: "refuses ccswitch" in caplog.text)
        await asyncio.sleep(0.5)                    # tried again meanwhile
    finally:
        await node.state.stop()
    assert said in caplog.text and "is unreachable" not in caplog.text and "wrong-password" not in caplog.text
    assert caplog.text.count("refuses ccswitch") == 1 and not node.state.up
    assert "reachable again" not in caplog.text and "sharing state through" not in caplog.text


async def test_a_claim_redis_failed_to_answer_is_remembered_as_told_here():
    state = RedisState(RedisURL.parse("redis://127.0.0.1:9/0"))
    state.up, state._client = True, state._connect()      # up a moment ago: the command itself fails
    try:
        assert await state.claim_state("health:relay", "cooldown", "1") is True
        assert state._told_unshared["health:relay"].startswith("cooldown 1 ")
    finally:
        await state._client.aclose()


async def test_a_state_told_while_redis_was_away_replaces_the_one_redis_held_from_before(redis_url, store):
    async with Node(redis_url) as a:
        await store.set("ccswitch:n:health:relay", f"recovered before {time.time() - 3600:.3f}")
        a.state.up = False
        assert await a.state.claim_state("health:relay", "cooldown", "here") is True     # told here alone
        a.state.up = True
        await a.state._hand_on_told(a.state._client)
        assert (await store.get("ccswitch:n:health:relay")).startswith("cooldown here ")


async def test_a_state_handed_on_leaves_one_told_elsewhere_the_same_millisecond(redis_url, store):
    async with Node(redis_url) as a:
        at = f"{time.time():.3f}"
        await store.set("ccswitch:n:health:relay", f"recovered elsewhere {at}")
        a.state._told_unshared["health:relay"] = f"cooldown here {at}"
        await a.state._hand_on_told(a.state._client)
        assert await store.get("ccswitch:n:health:relay") == f"recovered elsewhere {at}"


def test_a_user_without_the_permissions_ccswitch_needs_is_a_setting_to_mend():
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoPermissionError

    from ccswitch.shared.redis_state import refused_setting
    assert refused_setting(NoPermissionError("this user has no permissions to run the 'scan' command")) is not None
    assert refused_setting(RedisConnectionError("Error 111 connecting to 127.0.0.1:9. Connection refused.")) is None


class ForgetfulPath:
    """A TCP hop to Redis that can forget the subscriptions' flows without a word, as a NAT or
    a load balancer does after a quiet spell: their bytes go nowhere from then on, both ways."""

    def __init__(self, port: int) -> None:
        self.port, self.flows, self.server, self.ends, self.cut_off = port, [], None, [], False

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._carry, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _carry(self, reader, writer) -> None:
        if self.cut_off:
            writer.close()
            return
        far_reader, far_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.ends += [writer, far_writer]
        flow = {"subscribed": False, "forgotten": False}
        self.flows.append(flow)

        async def pipe(source, sink, outward: bool) -> None:
            while data := await source.read(65536):
                flow["subscribed"] |= outward and b"SUBSCRIBE" in data.upper()
                if not flow["forgotten"]:
                    sink.write(data)
                    await sink.drain()

        await asyncio.gather(pipe(reader, far_writer, True), pipe(far_reader, writer, False),
                             return_exceptions=True)
        for end in (writer, far_writer):
            end.close()

    def cut(self) -> None:
        """Redis out of reach: every flow closed, new ones refused, until `mend`."""
        self.cut_off = True
        for end in self.ends:
            end.close()
        self.ends = []

    def mend(self) -> None:
        self.cut_off = False

    def forget_subscriptions(self) -> None:
        for flow in self.flows:
            flow["forgotten"] |= flow["subscribed"]

    async def stop(self) -> None:
        self.server.close()


@pytest.fixture
async def forgetful(redis_url):
    """A `ForgetfulPath` to the test's Redis, started; its URL is `forgetful.url`."""
    path = ForgetfulPath(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    path.url = await path.start()
    yield path
    await path.stop()


async def test_a_subscription_a_nat_forgot_is_noticed_and_the_instance_hears_the_others_again(
        redis_url, monkeypatch, forgetful):
    # only the command connection was pinged: an instance whose subscription's flow was forgotten
    # heard no other instance again, and still said it shared
    from ccswitch.shared import redis_state
    monkeypatch.setattr(redis_state, "PING_EVERY", 0.2)
    monkeypatch.setattr(redis_state, "COMMAND_TIMEOUT", 0.3)
    async with Node(forgetful.url, retry=(0.05, 0.1)) as a, Node(redis_url) as b:
        forgetful.forget_subscriptions()
        await asyncio.sleep(0.1)
        b.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=120)
        await eventually(lambda: a.health.cooling_until("relay") is not None, timeout=5)
        assert a.state.up


async def test_catching_up_on_many_records_lets_requests_go_on_between_slices(redis_url):
    # merging a reconnection's records ran in one stretch: 1.6 s at the caps, every stream stalled
    from ccswitch.shared import redis_state
    many = 3 * redis_state._PARSE_SLICE
    async with Node(redis_url) as a:
        for n in range(many):
            a.sessions.bind("messages", f"s-{n}", "relay", 600)
        await eventually(lambda: not a.state._pending and not a.state._writing)
    c, turns, seen = Node(redis_url), 0, []

    async def ticker():
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    merge_in = c.boards.merge_in
    c.boards.merge_in = lambda record: (seen.append(turns), merge_in(record))[1]
    ticking = asyncio.create_task(ticker())
    try:
        await c.state.start(c.boards)
        await eventually(lambda: c.state.up)
    finally:
        ticking.cancel()
        await c.state.stop()
    assert len(seen) >= many and len(set(seen)) >= 3



async def test_a_reset_made_while_redis_was_away_is_not_undone_by_the_windows_redis_kept(redis_url, forgetful):
    # windows carry no time to lose a merge by: Redis's came back on reconnection, the upstream
    # "full" again until its reset, on this instance and the others
    async with Node(forgetful.url, retry=(0.05, 0.1)) as a, Node(redis_url) as b:
        await _full_then_away(forgetful, a, b)
        a.quota.forget("relay")                  # ccswitch.reset relay, while Redis is away
        forgetful.mend()
        await eventually(lambda: a.state.up)
        await eventually(lambda: b.quota.full("relay", 0.95) is None)
        await asyncio.sleep(0.2)
        assert a.quota.full("relay", 0.95) is None
    async with Node(redis_url) as c:           # nor does Redis hold it for a later start
        assert c.quota.full("relay", 0.95) is None


def _full_window():
    return [("anthropic-ratelimit-unified-5h-utilization", "0.99"),
            ("anthropic-ratelimit-unified-5h-reset", str(int(time.time() + 1800)))]


async def _full_then_away(path: ForgetfulPath, a: Node, b: Node) -> None:
    """`a` learns a full window (`b` hears of it), then loses its path to Redis."""
    a.quota.record("relay", _full_window())
    await eventually(lambda: b.quota.full("relay", 0.95) is not None)
    path.cut()
    await eventually(lambda: not a.state.up)


async def test_a_reset_made_while_the_records_are_merged_is_told_to_the_others(redis_url, forgetful):
    # made after the catch-up took its list of resets, before it went up: offered then, it was
    # dropped (not up yet); it is sent once the instance is up
    async with Node(forgetful.url, retry=(0.05, 0.1)) as a, Node(redis_url) as b:
        await _full_then_away(forgetful, a, b)
        view = a.boards.view

        def reset_meanwhile():
            a.boards.view = view
            a.quota.forget("relay")            # ccswitch.reset relay, while the records are merged
            return view()
        a.boards.view = reset_meanwhile
        forgetful.mend()
        await eventually(lambda: a.state.up)
        assert a.boards.view is view           # the catch-up came through there
        await eventually(lambda: b.quota.full("relay", 0.95) is None)
        assert a.quota.full("relay", 0.95) is None
    async with Node(redis_url) as c:
        assert c.quota.full("relay", 0.95) is None


async def test_a_reset_the_link_dropped_before_redis_took_it_is_not_undone_on_reconnection(redis_url, forgetful):
    # queued or being written when the connection died: the queue was emptied (the rest is
    # merged in from the boards, a reset is in none of them) and Redis's windows came back
    async with Node(forgetful.url, retry=(0.05, 0.1)) as a, Node(redis_url) as b:
        full_window(a)
        await eventually(lambda: b.quota.full("relay", 0.95) is not None)
        a.quota.forget("relay")                  # ccswitch.reset relay, and at once the link is lost
        forgetful.cut()
        await eventually(lambda: not a.state.up)
        forgetful.mend()
        await eventually(lambda: a.state.up)
        await eventually(lambda: b.quota.full("relay", 0.95) is None)
        await asyncio.sleep(0.2)
        assert a.quota.full("relay", 0.95) is None


async def test_a_reset_replayed_on_one_reconnection_is_not_replayed_on_the_next(redis_url, forgetful):
    # windows another instance learnt after it, while this one was away again, are no reset's
    async with Node(forgetful.url, retry=(0.05, 0.1)) as a, Node(redis_url) as b:
        await _full_then_away(forgetful, a, b)
        a.quota.forget("relay")
        forgetful.mend()
        await eventually(lambda: b.quota.full("relay", 0.95) is None)   # replayed, and written
        await asyncio.sleep(0.2)
        forgetful.cut()
        await eventually(lambda: not a.state.up)
        b.quota.record("relay", _full_window())     # while a is away again
        forgetful.mend()
        await eventually(lambda: a.state.up)
        await eventually(lambda: a.quota.full("relay", 0.95) is not None)
        await asyncio.sleep(0.2)
        assert b.quota.full("relay", 0.95) is not None


async def test_a_quiet_subscription_that_answers_its_pings_stays_up(redis_url, monkeypatch, caplog):
    # a ping answered is an answer: only a ping left unanswered ends the session
    from ccswitch.shared import redis_state
    monkeypatch.setattr(redis_state, "PING_EVERY", 0.1)
    monkeypatch.setattr(redis_state, "COMMAND_TIMEOUT", 0.3)
    caplog.set_level(logging.WARNING, "ccswitch.state")
    async with Node(redis_url) as a, Node(redis_url) as b:
        await asyncio.sleep(1.5)                    # several pings, no message
        assert a.state.up and "unreachable" not in caplog.text
        b.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=120)
        await eventually(lambda: a.health.cooling_until("relay") is not None)


def test_connections_to_redis_keep_tcp_keepalive_on():
    # a peer gone without a word is noticed by the kernel too, not only by the next ping
    state = RedisState(RedisURL.parse("redis://127.0.0.1:9/0"))
    assert state._connect().connection_pool.connection_kwargs["socket_keepalive"] is True


async def test_a_stop_while_redis_hangs_says_it_had_no_answer(own_redis, caplog):
    # read "could not hand the last changes to redis://… (TimeoutError: )": the reason left empty
    import os
    import signal
    caplog.set_level(logging.WARNING, "ccswitch.state")
    node = await Node(own_redis.url()).__aenter__()
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        node.spend.add(CLIENT, "k", 0.25)
        await asyncio.sleep(0.05)
        await node.state.stop()
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    said = [r.getMessage() for r in caplog.records if "could not hand the last changes" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith(": no answer within 2 s"), said


def test_an_outage_that_turns_into_a_refusal_is_told_again_as_a_setting_to_mend(caplog):
    # Redis came back with a password the URL lacks: the running instances still said only
    # "unreachable (Connection refused)", a fresh one said what to mend
    from redis.exceptions import AuthenticationError
    from redis.exceptions import ConnectionError as RedisConnectionError
    caplog.set_level(logging.WARNING, "ccswitch.state")
    state = RedisState(RedisURL.parse("redis://127.0.0.1:9/0"))
    for exc in (RedisConnectionError("Error 111 connecting: Connection refused"),) * 2 + \
            (AuthenticationError("Authentication required."),) * 2:
        state._went_down(exc)
    assert caplog.text.count("is unreachable") == 1 and caplog.text.count("refuses ccswitch") == 1
    assert "it wants a password, and the state URL has none" in caplog.text


async def test_a_reset_made_while_redis_was_away_is_not_undone_by_an_instance_that_missed_it(redis_url, store):
    # the other instance, away too, came back after the reset was written: Redis held no window
    # of the upstream any more, so its catch-up wrote its own back (and told it): the upstream
    # "full" again on every instance, and in Redis (scale-out tester)
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    path_a, path_b = ForgetfulPath(port), ForgetfulPath(port)
    url_a, url_b = await path_a.start(), await path_b.start()
    try:
        async with Node(url_a, retry=(0.05, 0.1)) as a, Node(url_b, retry=(0.05, 0.1)) as b:
            a.quota.record("relay", _full_window())
            await eventually(lambda: b.quota.full("relay", 0.95) is not None)
            path_a.cut()
            path_b.cut()
            await eventually(lambda: not a.state.up and not b.state.up)
            a.quota.forget("relay")              # ccswitch.reset relay, while Redis is away
            path_a.mend()
            await eventually(lambda: a.state.up)
            await eventually(lambda: not a.state._forgotten)      # written, and told to no one else
            path_b.mend()
            await eventually(lambda: b.state.up)
            await asyncio.sleep(0.3)
            assert b.quota.full("relay", 0.95) is None
            assert a.quota.full("relay", 0.95) is None
            assert not await store.hgetall("ccswitch:q:relay")
        async with Node(redis_url) as c:
            assert c.quota.full("relay", 0.95) is None
    finally:
        await path_a.stop()
        await path_b.stop()


async def test_a_window_written_back_from_before_a_reset_is_taken_by_no_instance(redis_url, store, forgetful):
    # the other instance's catch-up loaded Redis before the reset was written and wrote its
    # window back after it: the resetting instance merged it in, "full" again (scale-out tester)
    async with Node(forgetful.url, retry=(0.05, 0.1)) as a, Node(redis_url) as b:
        await _full_then_away(forgetful, a, b)
        stale = b.quota.view()[0]
        a.quota.forget("relay")
        forgetful.mend()
        await eventually(lambda: b.quota.full("relay", 0.95) is None)
        pipe = store.pipeline(transaction=True)          # b's late write-back, as a catch-up does it
        layout.queue_write(pipe, stale, time.time())
        pipe.publish(layout.channel(0), json.dumps({"v": 1, "src": "late", "ts": time.time(), "merge": True,
                                                    "changes": [encode(stale)]}))
        await pipe.execute()
        await asyncio.sleep(0.3)
        assert a.quota.full("relay", 0.95) is None and b.quota.full("relay", 0.95) is None
    async with Node(redis_url) as c:
        assert c.quota.full("relay", 0.95) is None


async def test_a_reset_made_while_redis_hangs_is_not_undone_when_it_answers_again(own_redis, monkeypatch):
    # SIGSTOP, reset, SIGCONT: the reset reached the other instance, whose catch-up wrote its
    # window back, and the resetting instance took it again (scale-out tester)
    import os
    import signal

    from ccswitch.shared import redis_state
    monkeypatch.setattr(redis_state, "PING_EVERY", 0.2)
    monkeypatch.setattr(redis_state, "COMMAND_TIMEOUT", 0.3)
    url = own_redis.url()
    async with Node(url, retry=(0.05, 0.2)) as a, Node(url, retry=(0.05, 0.2)) as b:
        a.quota.record("relay", _full_window())
        await eventually(lambda: b.quota.full("relay", 0.95) is not None)
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            a.quota.forget("relay")              # ccswitch.reset relay, while Redis hangs
            await eventually(lambda: not a.state.up and not b.state.up)
            await asyncio.sleep(0.5)
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        await eventually(lambda: a.state.up and b.state.up)
        await asyncio.sleep(1.0)
        assert a.quota.full("relay", 0.95) is None and b.quota.full("relay", 0.95) is None
    async with Node(url) as c:
        assert c.quota.full("relay", 0.95) is None


async def test_a_reset_made_while_redis_was_down_survives_its_restart_empty(own_redis):
    # kill -9, reset, Redis started empty: the other instance wrote its window back (scale-out tester)
    url = own_redis.url()
    async with Node(url, retry=(0.05, 0.2)) as a, Node(url, retry=(0.05, 0.2)) as b:
        a.quota.record("relay", _full_window())
        await eventually(lambda: b.quota.full("relay", 0.95) is not None)
        own_redis.kill()
        await eventually(lambda: not a.state.up and not b.state.up)
        a.quota.forget("relay")                  # ccswitch.reset relay, while Redis is down
        own_redis.start()                        # empty: nothing was saved
        await eventually(lambda: a.state.up and b.state.up)
        await asyncio.sleep(1.0)
        assert a.quota.full("relay", 0.95) is None and b.quota.full("relay", 0.95) is None
    async with Node(url) as c:
        assert c.quota.full("relay", 0.95) is None
