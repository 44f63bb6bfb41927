"""Grace fires a time late only when ccswitch was not running at it: a time that passed while it
ran, before its upstream was enabled or a reload added it, does not fire."""

from datetime import timedelta

from ccswitch.activation.probe import Schedule
from tests.unit.activation.test_probe import at, names, rules


def ticks(sched, r, start, minutes, enabled=lambda u: u.enabled):
    """Tick every 30 s for `minutes` from `start`: the slots fired, as the activator would."""
    fired = []
    for n in range(minutes * 2):
        for _, slot in sched.due(r, start + timedelta(seconds=30 * n), enabled):
            sched.started(slot)
            sched.finished(slot, True, start, 60)
            fired.append(slot.at)
    return fired


def test_an_upstream_enabled_after_its_time_passed_does_not_fire_it():
    r, sched, on = rules(), Schedule(), [False]
    assert ticks(sched, r, at(2026, 11, 25, 5, 50), 15, lambda u: on[0]) == []     # off at 06:00
    on[0] = True
    assert ticks(sched, r, at(2026, 11, 25, 6, 5), 10, lambda u: on[0]) == []
    assert ticks(sched, r, at(2026, 11, 26, 5, 59), 2, lambda u: on[0]) == ["06:00"]   # the next day it does


def test_a_time_a_reload_adds_after_it_passed_does_not_fire():
    sched = Schedule()
    assert ticks(sched, rules("[]"), at(2026, 11, 25, 5, 50), 15) == []
    assert ticks(sched, rules('["06:00"]'), at(2026, 11, 25, 6, 5), 10) == []
    assert ticks(sched, rules('["06:00", "06:20"]'), at(2026, 11, 25, 6, 15), 10) == ["06:20"]   # still ahead: fires


def test_disabled_over_its_time_and_enabled_again_it_does_not_fire():
    r, sched, on = rules(), Schedule(), [True]
    assert ticks(sched, r, at(2026, 11, 25, 5, 50), 5, lambda u: on[0]) == []
    on[0] = False
    assert ticks(sched, r, at(2026, 11, 25, 5, 55), 10, lambda u: on[0]) == []
    on[0] = True
    assert ticks(sched, r, at(2026, 11, 25, 6, 5), 5, lambda u: on[0]) == []


def test_a_start_within_grace_still_fires_and_midnight_fires_on_time():
    assert names(Schedule().due(rules(), at(2026, 11, 25, 6, 10))) == [("relay", "2026-11-25", "06:00")]
    sched = Schedule()
    assert ticks(sched, rules('["00:00"]'), at(2026, 11, 24, 23, 50), 11) == ["00:00"]   # running since the day before
