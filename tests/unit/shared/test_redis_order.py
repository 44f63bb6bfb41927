"""The shared state against a real redis-server when writes cross: a write Redis ran whose answer
was late, two instances' words on one thing arriving out of order, a catch-up racing another's
write, and a stored record no board can take."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from ccswitch.routing.budget import CLIENT
from ccswitch.shared import layout, redis_state
from tests.support.helpers import eventually
from tests.unit.shared.test_redis_state import Node

U = "anthropic-ratelimit-unified-"


async def _settled(node: Node) -> None:
    await eventually(lambda: not node.state._pending and not node.state._writing and not node.state._unsent)


async def _stored(client: redis.Redis, key: str) -> dict | None:
    held = await client.get(key)
    return None if held is None else json.loads(held)


async def test_spend_whose_write_redis_ran_is_not_counted_twice_when_the_subscription_fails(redis_url, store,
                                                                                            monkeypatch):
    # the session's reader ends it when the subscription's connection is lost (a NAT forgetting
    # it, Redis dropping a slow subscriber): the write under way on the other connection is seen out
    real_execute = Pipeline.execute
    slow = {"once": False, "ran": asyncio.Event()}

    async def answer_late(self, raise_on_error=True):
        result = await real_execute(self, raise_on_error=raise_on_error)   # Redis has run it
        if slow["once"] and self.is_transaction:
            slow["once"] = False
            slow["ran"].set()
            await asyncio.sleep(1.0)         # its answer on its way
        return result

    monkeypatch.setattr(Pipeline, "execute", answer_late)
    async with Node(redis_url, retry=(0.05, 0.1)) as a:
        slow["once"] = True
        a.spend.add(CLIENT, "k", 0.25)
        await asyncio.wait_for(slow["ran"].wait(), 5)
        await store.client_kill_filter(_type="pubsub")
        await asyncio.sleep(1.5)
        await eventually(lambda: a.state.up and not a.state._unsent and not a.state._writing)
        keys = [key async for key in store.scan_iter("ccswitch:s:client:k:daily:*")]
        assert abs(float(await store.get(keys[0])) - 0.25) < 1e-9


async def test_redis_keeps_the_later_health_word_when_writes_arrive_out_of_order(redis_url, store):
    async with Node(redis_url) as a, Node(redis_url) as b:
        b.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
        await eventually(lambda: a.health.cooling_until("relay") is not None)
        gate = asyncio.Event()               # a's writer is behind (a busy loop, a slow round trip)
        real_flush = a.state._flush

        async def late_flush(client):
            await gate.wait()
            await real_flush(client)

        a.state._flush = late_flush
        a.health.record_failure("relay", "HTTP 502", threshold=1, cooldown=60)    # t1: fails on a
        await asyncio.sleep(0.01)
        b.health.record_success("relay")                                         # t2 > t1: b's probe answers
        await eventually(lambda: a.health.cooling_until("relay") is None)
        gate.set()                                                               # a's t1 record arrives now
        await eventually(lambda: not a.state._pending and not a.state._writing)
        assert (await _stored(store, "ccswitch:h:relay"))["failures"] == 0
        async with Node(redis_url) as c:          # a newcomer takes what Redis holds
            assert c.health.cooling_until("relay") is None


async def test_a_recovery_written_during_anothers_catch_up_is_not_overwritten(redis_url, store):
    async with Node(redis_url) as b:
        b.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)       # t0: b cools it down
        await eventually(lambda: b.state._pending == {} and not b.state._writing)
        a = Node(redis_url)
        # a saw it fail too, a moment later, while it could not reach Redis: its own, newer, cooldown
        a.health.record_failure("relay", "HTTP 502", threshold=1, cooldown=60)
        real_load = a.state._load

        async def load_then_b_recovers(client):
            stored = await real_load(client)
            b.health.record_success("relay")      # between a's load and its write-back, b's probe answers
            await eventually(lambda: b.state._pending == {} and not b.state._writing)
            return stored

        a.state._load = load_then_b_recovers
        await a.state.start(a.boards)
        try:
            await eventually(lambda: a.state.up and a.health.cooling_until("relay") is None
                             and b.health.cooling_until("relay") is None)
            await eventually(lambda: not a.state._pending and not a.state._writing)
            assert (await _stored(store, "ccswitch:h:relay"))["failures"] == 0
            async with Node(redis_url) as c:
                assert c.health.cooling_until("relay") is None
        finally:
            await a.state.stop()


async def test_a_stored_record_no_board_can_take_is_set_aside_like_an_unreadable_one(redis_url, store, caplog):
    await store.set("ccswitch:s:client:k:daily:1e20:1e20", "1", ex=3600)   # no time: a hand edit, another program
    node = Node(redis_url, retry=(0.05, 0.1))
    caplog.set_level(logging.WARNING, "ccswitch.state")
    await node.state.start(node.boards)
    try:
        await eventually(lambda: node.state.up)
        assert node.state.malformed == 1 and not [r for r in caplog.records if r.exc_info]
        # and published so by another instance, it is one more unreadable record, not a reconnection
        node.state.receive(json.dumps({"v": 1, "src": "other", "ts": 0, "merge": False, "changes": [
            {"t": "spend", "who": "client", "name": "k", "period": "daily", "start": 1e20, "end": 1e20, "usd": 1.0}]}))
        assert node.state.malformed == 2 and node.state.up
    finally:
        await node.state.stop()


async def test_a_newer_reading_of_a_sliding_window_that_resets_sooner_is_written_and_told(redis_url, store):
    # x-ratelimit-*: each answer says how long until the window is whole again, which may be
    # sooner than the reading before said; the newest reading is the one to go by
    now = time.time()
    async with Node(redis_url) as a, Node(redis_url) as b:
        a.quota.record("relay", [(U + "5h-utilization", "0.99"), (U + "5h-reset", str(int(now + 1800)))])
        await eventually(lambda: b.quota.full("relay", 0.95) is not None)
        a.quota.record("relay", [(U + "5h-utilization", "0.20"), (U + "5h-reset", str(int(now + 600)))])
        await eventually(lambda: b.quota.full("relay", 0.95) is None)
        stored = json.loads(await store.hget("ccswitch:q:relay", "5h"))
        assert stored["utilization"] == 0.2


async def test_a_cleared_overall_rejection_reaches_redis_and_the_other_instances(redis_url, store):
    # a window's deletion (a fresh overall status superseding a rejection) is written as it comes
    async with Node(redis_url) as a, Node(redis_url) as b:
        now = time.time()
        a.quota.record("relay", [(U + "status", "rejected"), (U + "reset", str(int(now + 3600)))])
        await eventually(lambda: b.quota.full("relay", 0.95) is not None)
        await _settled(a)
        a.quota.record("relay", [(U + "status", "allowed"), (U + "5h-utilization", "0.2"),
                                 (U + "5h-reset", str(int(now + 1800)))])
        await eventually(lambda: b.quota.full("relay", 0.95) is None)
        await _settled(a)
        assert await store.hget("ccswitch:q:relay", "unified") is None


async def test_sticky_turned_off_by_a_reload_deletes_the_shared_bindings(redis_url, store):
    async with Node(redis_url) as a, Node(redis_url) as b:
        for i in range(20):
            a.sessions.bind("messages", f"session-{i}", "relay", 600)
        await eventually(lambda: b.sessions.bound("messages", "session-19") == "relay")
        await _settled(a)
        a.sessions.sync(["relay"], sticky={"messages": 0})      # the reload: `sticky: off`
        await asyncio.sleep(0.3)
        await _settled(a)
        assert [key async for key in store.scan_iter("ccswitch:b:*")] == []


async def test_a_write_that_loses_every_watch_race_is_written_as_it_is_not_told_as_an_outage(
        redis_url, store, monkeypatch, caplog):
    node = Node(redis_url, retry=(0.05, 0.1))
    await node.state.start(node.boards)
    await eventually(lambda: node.state.up)
    real, raced = layout.newer_words, []

    async def another_writes_meanwhile(pipe, changes):
        told = await real(pipe, changes)
        raced.append(1)
        await store.set(layout.key_of(changes[0]), "{}", px=60_000)     # between the WATCH and the EXEC
        return told

    monkeypatch.setattr(layout, "newer_words", another_writes_meanwhile)
    caplog.set_level(logging.WARNING, "ccswitch.state")
    try:
        node.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
        await eventually(lambda: len(raced) == redis_state.WATCH_TRIES - 1 and not node.state._writing)
        assert json.loads(await store.get("ccswitch:h:relay"))["failures"] == 1      # written at the last try
        assert node.state.up and not [r for r in caplog.records if "unreachable" in r.getMessage()]
    finally:
        await node.state.stop()


async def test_a_write_redis_holds_is_an_outage_at_the_command_timeout_not_a_lost_race(
        redis_url, store, monkeypatch, caplog):
    # redis-py raises a timeout while the keys are watched as a WatchError
    monkeypatch.setattr(redis_state, "COMMAND_TIMEOUT", 1.0)
    node = Node(redis_url, retry=(0.05, 0.1))
    await node.state.start(node.boards)
    await eventually(lambda: node.state.up)
    caplog.set_level(logging.WARNING, "ccswitch.state")
    try:
        await store.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        node.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
        await eventually(lambda: [r for r in caplog.records if "unreachable" in r.getMessage()], timeout=4)
        assert "TimeoutError" in caplog.text
    finally:
        await store.execute_command("CLIENT", "UNPAUSE")
        await node.state.stop()


async def test_a_stop_hands_over_within_its_bound_when_redis_stalls(redis_url, monkeypatch):
    node = Node(redis_url)
    await node.state.start(node.boards)
    await eventually(lambda: node.state.up)
    stalled = asyncio.Event()
    real_execute = Pipeline.execute

    async def stall(self, raise_on_error=True):
        if self.is_transaction:
            stalled.set()
            await asyncio.sleep(60)
        return await real_execute(self, raise_on_error=raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", stall)
    node.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    await asyncio.wait_for(stalled.wait(), 5)
    began = time.monotonic()
    await node.state.stop()
    assert time.monotonic() - began < redis_state.STOP_FLUSH + 1.0
