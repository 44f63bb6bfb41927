"""Recoveries held until they last; cooldowns in between taken back (pure, on the running loop)."""

import asyncio

from ccswitch.notify.settle import Settling
from ccswitch.routing.events import Event


def told_by(seconds):
    told: list[Event] = []
    return Settling(lambda: seconds, told.append), told


def ev(kind, upstream="a", reason="r"):
    return Event(kind, upstream, reason)


async def test_a_recovery_is_told_once_it_lasted_and_a_cooldown_before_then_is_taken_back():
    settling, told = told_by(0.05)
    assert not settling.takes(ev("cooldown"))           # nothing held: told as it comes
    assert settling.takes(ev("recovered", reason="up"))
    assert settling.takes(ev("cooldown"))                # back down before it was told: neither is
    assert settling.takes(ev("recovered", reason="up again"))
    assert not settling.takes(ev("cooldown", upstream="b"))    # another upstream's own
    await asyncio.sleep(0.1)
    assert [(e.kind, e.reason) for e in told] == [("recovered", "up again (1 shorter cooldown in between not told)")]
    assert not settling.takes(ev("cooldown"))           # the recovery was told: a new outage is news


async def test_without_a_settle_time_or_an_upstream_nothing_is_held():
    settling, told = told_by(0)
    assert not settling.takes(ev("recovered")) and not settling.takes(ev("cooldown"))
    settling, told = told_by(10)
    assert not settling.takes(ev("budget", upstream=None)) and not settling.takes(ev("full"))
    assert told == []


async def test_a_recovery_told_again_while_held_is_held_once_and_flush_tells_it_now():
    settling, told = told_by(10)
    assert settling.takes(ev("recovered", reason="first")) and settling.takes(ev("recovered", reason="second"))
    settling.flush()
    assert [e.reason for e in told] == ["second"]
    await asyncio.sleep(0)
    settling.flush()
    assert len(told) == 1
