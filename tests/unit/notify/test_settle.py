"""Flapping damped: a first recovery told at once; once an upstream cools down again soon after
one, its next recovery is held until it lasts and the cooldowns before then are taken back (pure)."""

import asyncio

import pytest

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


@pytest.mark.parametrize("between", [["cooldown"], []], ids=["taken back by a cooldown", "told again"])
async def test_a_held_recovery_taken_back_or_told_again_leaves_no_timer_to_tell_the_next_one_early(between):
    seconds = [0.05]
    told: list[Event] = []
    settling = Settling(lambda: seconds[0], told.append, Clock())
    for kind in ("cooldown", "recovered", "cooldown", "recovered", *between):
        settling.takes(ev(kind))
    seconds[0] = 10         # the setting raised meanwhile: the next recovery is held 10 s
    assert settling.takes(ev("recovered", reason="up"))
    await asyncio.sleep(0.15)
    assert told == []


async def test_the_flush_leaves_no_timer_behind():
    errors = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        settling, told = told_by(0.05)
        for kind in ("cooldown", "recovered", "cooldown", "recovered"):
            settling.takes(ev(kind))
        settling.flush()
        await asyncio.sleep(0.15)
    finally:
        loop.set_exception_handler(None)
    assert len(told) == 1 and errors == []


@pytest.mark.parametrize("cooling", [False, True])
async def test_the_flush_tells_a_held_recovery_only_of_an_upstream_still_up(cooling):
    """At shutdown too, a recovery of an upstream that cooled down without an event here (another
    instance's cooldown) would leave the hooks' last word a stale `recovered`."""
    told: list[Event] = []
    settling = Settling(lambda: 10, told.append, Clock(), cooling=lambda name: cooling)
    for kind in ("cooldown", "recovered", "cooldown"):
        settling.takes(ev(kind))
    assert settling.takes(ev("recovered", reason="up"))
    settling.flush()
    assert [e.reason for e in told] == ([] if cooling else ["up"])


async def test_a_settle_time_set_to_0_meanwhile_tells_a_flapping_upstream_s_recovery_at_once():
    seconds = [10]
    told: list[Event] = []
    settling = Settling(lambda: seconds[0], told.append, Clock())
    for kind in ("cooldown", "recovered", "cooldown"):
        assert not settling.takes(ev(kind))
    seconds[0] = 0
    assert not settling.takes(ev("recovered"))


async def test_a_recovery_that_lasted_ends_the_flapping_and_its_count_of_untold_cooldowns():
    clock = Clock()
    settling, told = told_by(0.05, clock)
    for kind in ("cooldown", "recovered", "cooldown"):
        assert not settling.takes(ev(kind))
    assert settling.takes(ev("recovered")) and settling.takes(ev("cooldown"))
    clock.now = 200
    assert settling.takes(ev("recovered", reason="up"))
    await asyncio.sleep(0.1)            # it lasted: told now (200)
    assert [e.reason for e in told] == ["up (1 shorter cooldown in between not told)"]
    assert not settling.takes(ev("cooldown"))                      # soon after that one: flapping again
    assert settling.takes(ev("recovered", reason="up again"))
    clock.now = 300
    await asyncio.sleep(0.1)
    assert told[-1].reason == "up again"                           # the count was the last outage's
    clock.now = 400                     # long after: a new outage, told at once both ways
    assert not settling.takes(ev("cooldown")) and not settling.takes(ev("recovered"))


async def test_a_recovery_told_at_once_for_want_of_a_settle_time_ends_the_flapping():
    clock = Clock()
    seconds = [10]
    settling = Settling(lambda: seconds[0], [].append, clock)
    for kind in ("cooldown", "recovered", "cooldown"):
        assert not settling.takes(ev(kind))
    seconds[0] = 0
    assert not settling.takes(ev("recovered"))
    seconds[0] = 10
    clock.now += 100                    # long after: a new outage, told at once both ways
    assert not settling.takes(ev("cooldown")) and not settling.takes(ev("recovered"))
