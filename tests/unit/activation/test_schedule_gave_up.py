"""When a slot gives up: its first try and every retry failed (the moment `activation_failed` is announced)."""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from ccswitch.activation.probe import Schedule, Slot

SLOT = Slot("relay", date(2026, 11, 25), "06:00")
NOW = datetime(2026, 11, 25, 6, 0, tzinfo=ZoneInfo("Europe/Berlin"))


def test_a_slot_gives_up_only_after_its_last_retry_failed():
    sched = Schedule()
    assert not sched.gave_up(SLOT, 2)
    verdicts = []
    for n in range(3):
        sched.started(SLOT)
        sched.finished(SLOT, False, NOW + timedelta(minutes=n), 60)
        verdicts.append(sched.gave_up(SLOT, 2))
    assert verdicts == [False, False, True]


def test_a_slot_that_succeeded_never_gave_up():
    sched = Schedule()
    for ok in (False, False, True):
        sched.started(SLOT)
        sched.finished(SLOT, ok, NOW, 60)
    assert not sched.gave_up(SLOT, 2)
    assert not sched.gave_up(SLOT, 0)


def test_with_no_retries_the_first_failure_gives_up():
    sched = Schedule()
    sched.started(SLOT)
    sched.finished(SLOT, False, NOW, 60)
    assert sched.gave_up(SLOT, 0)
