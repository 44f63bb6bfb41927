"""The schedule rebuilt from the ledger's probes after a restart (pure: rows in, slots out)."""

from datetime import UTC, date, datetime, timedelta

from ccswitch.activation.history import PastProbe, parse_slot, restore
from ccswitch.activation.probe import Schedule, Slot
from ccswitch.config.load import parse_rules

RULES = parse_rules("""
timezone: UTC
activation: {retries: 20, retry_interval: 60s, grace: 15m}
upstreams:
  - {name: x, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k, activate_at: ["06:00", "06:05"]}
""")


def at(hh, mm, ss=0):
    return datetime(2026, 12, 4, hh, mm, ss, tzinfo=UTC)


def due(schedule, moment):
    return [slot.at for _, slot in schedule.due(RULES, moment)]


def probe(slot, ok, hh, mm, ss=0, error=None):
    return PastProbe("x", f"2026-12-04 {slot}", ok, error if error or ok else "HTTP 500",
                     datetime(2026, 12, 4, hh, mm, ss, tzinfo=UTC))


def test_a_success_marks_the_time_it_was_for_not_the_latest_before_it():
    schedule = Schedule()
    # 06:00 failed, 06:05 failed, then 06:00's retry succeeded at 06:06
    restore(schedule, [probe("06:00", False, 6, 0), probe("06:05", False, 6, 5), probe("06:00", True, 6, 6)],
            RULES.activation, at(6, 7))
    assert schedule.slots[Slot("x", date(2026, 12, 4), "06:00")].done
    assert not schedule.slots.get(Slot("x", date(2026, 12, 4), "06:05"), None) or \
        not schedule.slots[Slot("x", date(2026, 12, 4), "06:05")].done
    assert [slot.at for _, slot in schedule.due(RULES, datetime(2026, 12, 4, 6, 7, tzinfo=UTC))] == ["06:05"]


def test_slot_text_round_trips_and_foreign_text_is_no_slot():
    slot = Slot("x", date(2026, 12, 4), "06:00")
    assert parse_slot("x", slot.text) == slot
    for foreign in ("yesterday", "2026-12-04", "2026-12-04 25:00", "", None):
        assert parse_slot("x", foreign) is None


def test_a_time_whose_probe_and_retries_all_failed_does_not_run_again():
    schedule = Schedule()
    restore(schedule, [probe("06:00", False, 6, n) for n in range(21)], RULES.activation, at(6, 21, 30))
    slot = Slot("x", date(2026, 12, 4), "06:00")
    assert schedule.gave_up(slot, RULES.activation.retries)
    assert all(due(schedule, at(6, 21, 30) + timedelta(minutes=n)) == [] for n in range(10))


def test_a_series_with_tries_left_goes_on_at_its_next_retry_within_grace_only():
    rows = [probe("06:00", False, 6, 0), probe("06:00", False, 6, 1)]
    schedule = Schedule()
    assert restore(schedule, rows, RULES.activation, at(6, 2, 30)) == []     # nothing ended
    assert due(schedule, at(6, 2, 30)) == ["06:00"]          # its third try, of 21
    assert schedule.slots[Slot("x", date(2026, 12, 4), "06:00")].tries == 2
    late = Schedule()
    # its tries left past grace: the series ends, and is named to be told (it ended without a word)
    assert restore(late, rows, RULES.activation, at(9, 0)) == [(Slot("x", date(2026, 12, 4), "06:00"), 2)]
    assert due(late, at(9, 0)) == [] and not late.gave_up(Slot("x", date(2026, 12, 4), "06:00"), 20)
    given_up = Schedule()     # one that used all its tries was told before the stop
    assert restore(given_up, [probe("06:00", False, 6, n) for n in range(21)], RULES.activation, at(9, 0)) == []


ONE_TIME = parse_rules("""
timezone: UTC
activation: {retries: 2, retry_interval: 60s, grace: 15m}
upstreams:
  - {name: x, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k, activate_at: ["06:00"]}
""")


def restored(rows, now):
    schedule = Schedule()
    restore(schedule, rows, ONE_TIME.activation, now)
    return schedule


def due_one(schedule, moment):
    return [slot.at for _, slot in schedule.due(ONE_TIME, moment)]


def test_a_probe_the_shutdown_cut_counts_as_done_after_a_restart():
    from ccswitch.dial.shutdown import CUT_BY_SHUTDOWN
    schedule = restored([probe("06:00", False, 6, 0, error=CUT_BY_SHUTDOWN)], at(6, 1))
    assert due_one(schedule, at(6, 2)) == []


def test_after_a_restart_the_last_retry_is_still_tried():
    schedule = restored([probe("06:00", False, 6, 0), probe("06:00", False, 6, 1)], at(6, 2, 30))
    assert due_one(schedule, at(6, 2, 30)) == ["06:00"]          # its third try: retries 2 after the first


def test_after_a_restart_the_next_retry_counts_from_the_last_try():
    rows = [probe("06:00", False, 6, 0), probe("06:00", False, 6, 10)]
    assert due_one(restored(rows, at(6, 10, 30)), at(6, 10, 30)) == []
    assert due_one(restored(rows, at(6, 10, 30)), at(6, 11)) == ["06:00"]
