"""Flapping damped: a first recovery told at once; once an upstream cools down again soon after
one, its next recovery is held until it lasts and the cooldowns before then are taken back (pure)."""

import asyncio

from ccswitch.notify.settle import Settling
from ccswitch.routing.events import Event


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def told_by(seconds, clock=None):
    told: list[Event] = []
    return Settling(lambda: seconds, told.append, clock or Clock()), told


def ev(kind, upstream="a", reason="r"):
    return Event(kind, upstream, reason)


async def test_one_outage_is_told_as_it_happens():
    settling, _ = told_by(10)
    assert not settling.takes(ev("cooldown")) and not settling.takes(ev("recovered"))


async def test_a_flapping_upstream_is_told_down_once_more_then_up_once_it_lasts():
    settling, told = told_by(0.05)
    assert not settling.takes(ev("cooldown"))
    assert not settling.takes(ev("recovered"))          # the first recovery: at once
    assert not settling.takes(ev("cooldown"))           # down again soon after: told, and flapping
    assert settling.takes(ev("recovered", reason="up"))  # held
    assert settling.takes(ev("cooldown"))                # back down before it lasted: neither is told
    assert settling.takes(ev("recovered", reason="up again"))
    assert not settling.takes(ev("cooldown", upstream="b"))    # another upstream's own
    await asyncio.sleep(0.1)
    assert [(e.kind, e.reason) for e in told] == [("recovered", "up again (1 shorter cooldown in between not told)")]


async def test_a_cooldown_long_after_a_recovery_is_a_new_outage_told_at_once_both_ways():
    clock = Clock()
    settling, _ = told_by(30, clock)
    assert not settling.takes(ev("cooldown")) and not settling.takes(ev("recovered"))
    clock.now += 31
    assert not settling.takes(ev("cooldown")) and not settling.takes(ev("recovered"))


async def test_without_a_settle_time_or_an_upstream_nothing_is_held():
    settling, told = told_by(0)
    for kind in ("cooldown", "recovered", "cooldown", "recovered"):
        assert not settling.takes(ev(kind))
    settling, told = told_by(10)
    assert not settling.takes(ev("budget", upstream=None)) and not settling.takes(ev("full"))
    assert told == []


async def test_a_recovery_told_again_while_held_is_held_once_and_flush_tells_it_now():
    settling, told = told_by(10)
    for kind in ("cooldown", "recovered", "cooldown"):
        settling.takes(ev(kind))
    assert settling.takes(ev("recovered", reason="first")) and settling.takes(ev("recovered", reason="second"))
    settling.flush()
    assert [e.reason for e in told] == ["second"]
    settling.flush()
    assert len(told) == 1


async def test_a_held_recovery_is_not_told_if_the_upstream_cooled_down_without_an_event_here():
    """Another instance's cooldown, learnt through the shared state, comes with no event."""
    cooling = {"a": False}
    told: list[Event] = []
    settling = Settling(lambda: 0.05, told.append, cooling=lambda name: cooling[name])
    for kind in ("cooldown", "recovered", "cooldown"):
        assert not settling.takes(ev(kind))
    assert settling.takes(ev("recovered"))
    cooling["a"] = True
    await asyncio.sleep(0.1)
    assert told == []
    cooling["a"] = False
    assert settling.takes(ev("recovered", reason="up"))      # still flapping: held again
    await asyncio.sleep(0.1)
    assert [e.reason for e in told] == ["up (1 shorter cooldown in between not told)"]


async def test_after_the_flush_at_shutdown_nothing_is_held_any_more():
    settling, told = told_by(10)
    for kind in ("cooldown", "recovered", "cooldown"):
        settling.takes(ev(kind))
    settling.flush()
    assert not settling.takes(ev("recovered")) and not settling.takes(ev("cooldown"))
