"""ccswitch.calendar: days/hours windows, time zones, activation times across DST."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.config.models import HourWindow, Upstream
from ccswitch.config.schedule import (
    WEEKDAYS,
    format_days,
    in_window,
    local_now,
    next_activation,
    schedule_block,
    schedule_opens,
    weekday_time,
)

UTC = UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")
ALL = frozenset(range(7))


def up(days=None, hours=()):
    kw = {} if days is None else {"days": days}
    if hours:
        kw["hours"] = list(hours)
    return Upstream(name="u", protocol="anthropic", base_url="https://x.example", api_key="k", **kw)


def at(day: int, hh: int, mm: int = 0, ss: int = 0, tz=UTC) -> datetime:
    """A moment in the week of Mon 2024-01-01 (day 0=mon .. 6=sun, 7=next mon)."""
    return datetime(2024, 1, 1, hh, mm, ss, tzinfo=tz) + timedelta(days=day)


def test_weekday_names():
    assert WEEKDAYS == ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    assert at(0, 12).weekday() == 0 and at(6, 12).weekday() == 6


@pytest.mark.parametrize("days,text", [
    ({0, 1, 2, 3, 4}, "mon-fri"), ({5, 6}, "sat, sun"), ({0, 2, 4}, "mon, wed, fri"),
    (ALL, "mon-sun"), ({0, 1, 2, 4, 5}, "mon-wed, fri, sat"), ({6}, "sun")])
def test_format_days(days, text):
    assert format_days(frozenset(days)) == text


# ----------------------------------------------------------------------------- days only

def test_no_schedule_is_always_in():
    u = up()
    assert all(schedule_block(u, at(d, h)) is None for d in range(7) for h in (0, 12, 23))


def test_days_only():
    u = up(days=["mon", "tue", "wed", "thu", "fri"])
    assert schedule_block(u, at(0, 0)) is None
    assert schedule_block(u, at(4, 23, 59, 59)) is None
    assert schedule_block(u, at(5, 0)) == "outside its days (mon-fri)"
    assert schedule_block(u, at(6, 12)) == "outside its days (mon-fri)"


# ----------------------------------------------------------------------------- hours

def test_plain_window_boundaries():
    u = up(days=["mon-fri"], hours=["09:00-18:00"])
    assert schedule_block(u, at(0, 8, 59, 59)) == "outside its hours (09:00-18:00)"
    assert schedule_block(u, at(0, 9, 0)) is None
    assert schedule_block(u, at(0, 17, 59, 59)) is None
    assert schedule_block(u, at(0, 18, 0)) == "outside its hours (09:00-18:00)"
    assert schedule_block(u, at(5, 10)) == "outside its days (mon-fri)"
    # a Saturday evening: neither its day nor its hours (the hours alone would mislead)
    assert schedule_block(u, at(5, 20)) == "outside its days (mon-fri) and hours (09:00-18:00)"


def test_window_wrapping_midnight_belongs_to_its_start_day():
    u = up(days=["mon"], hours=["22:00-02:00"])
    assert schedule_block(u, at(0, 21, 59)) == "outside its hours (22:00-02:00)"
    assert schedule_block(u, at(0, 22, 0)) is None            # Mon 22:00
    assert schedule_block(u, at(0, 23, 59, 59)) is None
    assert schedule_block(u, at(1, 0, 0)) is None             # Tue 00:00 still Monday's window
    assert schedule_block(u, at(1, 1, 0)) is None             # Tue 01:00
    assert schedule_block(u, at(1, 1, 59, 59)) is None
    assert schedule_block(u, at(1, 2, 0)) == "outside its days (mon) and hours (22:00-02:00)"
    assert schedule_block(u, at(0, 1, 0)) == ("outside its days (mon): after midnight, 22:00-02:00 belongs to "
                                              "the day it starts on (sun)")   # Mon 01:00 = Sunday's window
    assert schedule_block(u, at(1, 22, 30)) == "outside its days (mon)"  # Tue evening
    assert schedule_block(u, at(1, 12)) == "outside its days (mon) and hours (22:00-02:00)"


def test_wrapping_window_across_the_week_boundary():
    u = up(days=["sun"], hours=["23:00-01:00"])
    assert schedule_block(u, at(6, 23, 30)) is None           # Sun 23:30
    assert schedule_block(u, at(7, 0, 30)) is None            # Mon 00:30 (Sunday's window)
    assert schedule_block(u, at(0, 0, 30)) is None            # same, the week before
    assert schedule_block(u, at(7, 23, 30)) == "outside its days (sun)"
    assert schedule_block(u, at(6, 0, 30)) == ("outside its days (sun): after midnight, 23:00-01:00 belongs to "
                                               "the day it starts on (sat)")   # Sun 00:30 = Saturday's window


def test_window_ending_at_midnight_and_whole_day():
    u = up(days=["sat"], hours=["18:00-24:00"])
    assert schedule_block(u, at(5, 23, 59, 59)) is None
    assert schedule_block(u, at(6, 0, 0)) == "outside its days (sat) and hours (18:00-24:00)"
    assert schedule_block(u, at(6, 18, 0)) == "outside its days (sat)"
    whole = up(days=["sat"], hours=["00:00-24:00"])
    assert schedule_block(whole, at(5, 0, 0)) is None and schedule_block(whole, at(5, 23, 59)) is None
    assert schedule_block(whole, at(6, 0, 0)) == "outside its days (sat)"
    assert schedule_block(whole, at(4, 23, 59)) == "outside its days (sat)"


def test_several_windows():
    u = up(hours=["08:00-12:00", "13:00-17:30", "23:00-01:00"])
    assert schedule_block(u, at(2, 11, 59)) is None and schedule_block(u, at(2, 13, 0)) is None
    assert schedule_block(u, at(2, 17, 29)) is None and schedule_block(u, at(2, 0, 59)) is None
    reason = "outside its hours (08:00-12:00, 13:00-17:30, 23:00-01:00)"
    assert schedule_block(u, at(2, 12, 30)) == reason and schedule_block(u, at(2, 17, 30)) == reason


def test_in_window_directly():
    w = HourWindow.model_validate("22:00-02:00")
    assert in_window(w, frozenset({6}), 0, 60)            # Mon 01:00, Sunday allowed
    assert not in_window(w, frozenset({0}), 0, 60)
    assert in_window(w, frozenset({0}), 0, 22 * 60)
    assert not in_window(w, ALL, 3, 12 * 60)


def test_schedule_in_rules_timezone():
    rules = parse_rules("timezone: Asia/Shanghai\nupstreams:\n"
                        "  - {name: r, protocol: anthropic, base_url: 'https://r.example', api_key: k,\n"
                        "     days: [mon-fri], hours: ['09:00-18:00']}\n", env={})
    u = rules.upstream("r")
    # Mon 2024-01-01 02:00 UTC is Mon 10:00 in Shanghai: inside; in UTC it would be outside.
    utc_instant = datetime(2024, 1, 1, 2, 0, tzinfo=UTC)
    now = local_now(rules.tz, lambda: utc_instant)
    assert now.hour == 10 and now.utcoffset() == timedelta(hours=8)
    assert schedule_block(u, now) is None
    assert schedule_block(u, utc_instant) == "outside its hours (09:00-18:00)"
    # Sat 2024-01-06 02:00 UTC is Sat 10:00 in Shanghai; Fri 2024-01-05 18:00 UTC is Sat 02:00.
    assert schedule_block(u, local_now(rules.tz, lambda: datetime(2024, 1, 5, 18, 0, tzinfo=UTC))) == \
        "outside its days (mon-fri) and hours (09:00-18:00)"
    sat = local_now(rules.tz, lambda: datetime(2024, 1, 6, 2, 0, tzinfo=UTC))
    assert sat.weekday() == 5 and schedule_block(u, sat) == "outside its days (mon-fri)"


# ----------------------------------------------------------------------------- local_now

def test_local_now_clock_kinds():
    aware = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
    assert local_now(BERLIN, lambda: aware) == aware
    assert local_now(BERLIN, lambda: aware).hour == 14
    assert local_now(BERLIN, lambda: datetime(2024, 7, 1, 12, 0)).hour == 14   # naive = UTC
    assert local_now(BERLIN, lambda: aware.timestamp()).hour == 14              # epoch seconds
    real = local_now(NEW_YORK)
    assert real.tzinfo is NEW_YORK and abs((real - datetime.now(UTC)).total_seconds()) < 5


# ----------------------------------------------------------------------------- activation

def test_next_activation_basic():
    after = datetime(2024, 1, 1, 5, 0, tzinfo=BERLIN)  # Monday
    assert next_activation(["06:00"], ALL, after) == datetime(2024, 1, 1, 6, 0, tzinfo=BERLIN)
    nxt = next_activation(["06:00"], ALL, datetime(2024, 1, 1, 6, 0, tzinfo=BERLIN))  # strictly after
    assert nxt == datetime(2024, 1, 2, 6, 0, tzinfo=BERLIN)
    assert next_activation(["18:30", "06:00"], ALL, datetime(2024, 1, 1, 7, 0, tzinfo=BERLIN)) == \
        datetime(2024, 1, 1, 18, 30, tzinfo=BERLIN)
    assert next_activation(["18:30", "06:00"], ALL, datetime(2024, 1, 1, 23, 0, tzinfo=BERLIN)) == \
        datetime(2024, 1, 2, 6, 0, tzinfo=BERLIN)
    assert nxt.tzinfo is BERLIN


def test_next_activation_respects_days_and_lookahead():
    mon_late = datetime(2024, 1, 1, 7, 0, tzinfo=UTC)
    assert next_activation(["06:00"], frozenset({0}), mon_late) == datetime(2024, 1, 8, 6, 0, tzinfo=UTC)
    assert next_activation(["06:00"], frozenset({5, 6}), mon_late) == datetime(2024, 1, 6, 6, 0, tzinfo=UTC)
    assert next_activation([], ALL, mon_late) is None
    assert next_activation(["06:00"], frozenset(), mon_late) is None
    with pytest.raises(ValueError):
        next_activation(["06:00"], ALL, datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        next_activation(["6am"], ALL, mon_late)


def test_next_activation_keeps_wall_time_across_dst():
    # Sat 2024-03-30 06:00 CET -> Sun 2024-03-31 06:00 CEST: 23 hours later, same wall time.
    after = datetime(2024, 3, 30, 6, 0, tzinfo=BERLIN)
    nxt = next_activation(["06:00"], ALL, after)
    assert nxt.replace(tzinfo=None) == datetime(2024, 3, 31, 6, 0)
    assert nxt.astimezone(UTC) == datetime(2024, 3, 31, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize("tz,day,time_,expected_utc", [
    # Berlin springs forward 2024-03-31 02:00 -> 03:00: 02:00..02:59 do not exist.
    (BERLIN, datetime(2024, 3, 31), "02:30", datetime(2024, 3, 31, 1, 0, tzinfo=UTC)),
    (BERLIN, datetime(2024, 3, 31), "02:00", datetime(2024, 3, 31, 1, 0, tzinfo=UTC)),
    (BERLIN, datetime(2024, 3, 31), "03:00", datetime(2024, 3, 31, 1, 0, tzinfo=UTC)),
    (BERLIN, datetime(2024, 3, 31), "01:59", datetime(2024, 3, 31, 0, 59, tzinfo=UTC)),
    # New York springs forward 2024-03-10 02:00 -> 03:00.
    (NEW_YORK, datetime(2024, 3, 10), "02:15", datetime(2024, 3, 10, 7, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2024, 3, 10), "02:59", datetime(2024, 3, 10, 7, 0, tzinfo=UTC)),
])
def test_nonexistent_time_fires_at_next_valid_minute(tz, day, time_, expected_utc):
    after = day.replace(hour=0, minute=0, tzinfo=tz)
    nxt = next_activation([time_], ALL, after)
    assert nxt.astimezone(UTC) == expected_utc
    assert nxt.tzinfo is tz and nxt.replace(tzinfo=None) == expected_utc.astimezone(tz).replace(tzinfo=None)


def test_nonexistent_time_next_day_is_normal():
    after = datetime(2024, 3, 31, 3, 0, tzinfo=BERLIN)  # right at the shifted firing
    assert next_activation(["02:30"], ALL, after).astimezone(UTC) == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("tz,day,time_,first_utc,next_day_utc", [
    # Berlin falls back 2024-10-27 03:00 CEST -> 02:00 CET: 02:00..02:59 happen twice.
    (BERLIN, datetime(2024, 10, 27), "02:30",
     datetime(2024, 10, 27, 0, 30, tzinfo=UTC), datetime(2024, 10, 28, 1, 30, tzinfo=UTC)),
    # New York falls back 2024-11-03 02:00 EDT -> 01:00 EST: 01:00..01:59 happen twice.
    (NEW_YORK, datetime(2024, 11, 3), "01:30",
     datetime(2024, 11, 3, 5, 30, tzinfo=UTC), datetime(2024, 11, 4, 6, 30, tzinfo=UTC)),
])
def test_repeated_time_fires_once(tz, day, time_, first_utc, next_day_utc):
    after = day.replace(hour=0, minute=0, tzinfo=tz)
    first = next_activation([time_], ALL, after)
    assert first.astimezone(UTC) == first_utc and first.fold == 0
    # From just after the first firing (inside the repeated hour, second pass included),
    # the next firing is the following day, not the repeat.
    for minutes in (1, 30, 60, 61):
        later = (first_utc + timedelta(minutes=minutes)).astimezone(tz)
        assert next_activation([time_], ALL, later).astimezone(UTC) == next_day_utc


def test_next_activation_after_in_other_fixed_offset():
    after = datetime(2024, 1, 1, 5, 59, tzinfo=timezone(timedelta(hours=-5)))
    nxt = next_activation(["06:00"], ALL, after)
    assert nxt == datetime(2024, 1, 1, 6, 0, tzinfo=timezone(timedelta(hours=-5)))


def test_the_next_activation_as_a_status_line_shows_it():
    after = datetime(2024, 1, 1, 7, 0, tzinfo=BERLIN)
    assert weekday_time(next_activation(["06:00"], frozenset({1}), after)) == "tue 06:00"
    assert next_activation([], ALL, after) is None


def test_a_naive_clock_value_is_utc_whatever_the_machine_s_zone(monkeypatch):
    import time
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert local_now(BERLIN, lambda: datetime(2024, 7, 1, 12, 0)).hour == 14
    finally:
        monkeypatch.undo()
        time.tzset()


def test_when_an_upstream_off_by_its_schedule_opens_again():
    assert schedule_opens(up(), at(0, 3)) == at(0, 3)                          # always in: now
    night = up(days=["mon"], hours=["22:00-02:00"])
    assert schedule_opens(night, at(0, 22, 30)) == at(0, 22, 30)
    assert schedule_opens(night, at(0, 12, 0, 30)) == at(0, 22)              # later that day
    assert schedule_opens(night, at(1, 2)) == at(7, 22)                      # next Monday
    assert schedule_opens(up(days=["wed"]), at(0, 15)) == at(2, 0)           # days only: at midnight
    # a wrapping window's part after midnight belongs to the day before, which may be allowed
    sunday_night = up(days=["sun"], hours=["23:00-01:00"])
    assert schedule_opens(sunday_night, at(6, 12)) == at(6, 23)
    two = up(hours=["09:00-12:00", "14:00-18:00"])
    assert schedule_opens(two, at(0, 12, 30)) == at(0, 14)
    assert schedule_opens(two, at(0, 18)) == at(1, 9)


def test_a_window_opening_in_a_time_skipped_by_dst_opens_at_the_next_minute_that_exists():
    u = up(hours=["02:30-05:00"])
    before = datetime(2024, 3, 31, 1, 0, tzinfo=BERLIN)        # 02:00-03:00 does not exist that night
    assert schedule_opens(u, before) == datetime(2024, 3, 31, 3, 0, tzinfo=BERLIN)
