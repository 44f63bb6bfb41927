"""report.timeline and report.latency: local hours, weeks and months, 5-hour blocks, percentiles."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ccswitch.report import timeline
from ccswitch.report.latency import Timing, Timings, percentile, stats

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --------------------------------------------------------------------------- percentiles


@pytest.mark.parametrize(("values", "p", "want"), [
    (list(range(1, 11)), 50, 5),            # ceil(0.5 * 10) = 5th
    (list(range(1, 11)), 95, 10),           # ceil(9.5) = 10th
    (list(range(1, 21)), 50, 10),
    (list(range(1, 21)), 95, 19),           # ceil(19.0) = 19th
    (list(range(1, 101)), 95, 95),
    ([30, 10, 20], 50, 20),                 # sorted first
    ([7], 50, 7), ([7], 95, 7),
    ([5, 1, 9], 100, 9),
    ([4, 4, 4, 100], 50, 4),
])
def test_nearest_rank_percentiles(values, p, want):
    assert percentile(values, p) == want


def test_percentile_of_nothing_and_bad_p():
    assert percentile([], 50) is None
    for p in (0, -1, 101):
        with pytest.raises(ValueError):
            percentile([1], p)


def test_stats_leave_a_missing_first_byte_out_of_the_ttfb_figures():
    moment = utc("2026-03-01T00:00:00")
    timings = [Timing(moment, "a", ms, None if ms == 400 else ms // 10) for ms in (100, 200, 300, 400)]
    s = stats(timings)
    assert (s.requests, s.latency_p50, s.latency_p95, s.ttfb_p50, s.ttfb_p95) == (4, 200, 400, 20, 30)
    assert stats([]).to_dict() == {"requests": 0, "latency_p50_ms": None, "latency_p95_ms": None,
                                   "ttfb_p50_ms": None, "ttfb_p95_ms": None}


def test_timings_between_is_half_open_and_by_upstream_is_busiest_first():
    t0 = utc("2026-03-01T00:00:00")
    timings = Timings([Timing(t0 + timedelta(minutes=m), up, 100 * (m + 1), 10) for m, up in
                       [(3, "b"), (0, "a"), (1, "b"), (2, "b")]])
    assert [t.latency_ms for t in timings.between(t0, t0 + timedelta(minutes=3))] == [100, 200, 300]
    assert timings.upstreams() == ["b", "a"]
    by = Timings.by_upstream(timings.overall())
    assert list(by) == ["b", "a"] and by["b"].latency_p50 == 300 and by["a"].latency_p95 == 100


# --------------------------------------------------------------------------- days, hours, periods


def test_a_local_day_in_utc():
    start, end = timeline.day_bounds(date(2026, 3, 2), SHANGHAI)
    assert (start, end) == (utc("2026-03-01T16:00:00"), utc("2026-03-02T16:00:00"))


@pytest.mark.parametrize(("day", "count"), [(date(2026, 3, 7), 24), (date(2026, 3, 8), 23), (date(2026, 11, 1), 25)])
def test_hours_of_a_day_follow_the_clock_change(day, count):
    assert len(timeline.day_hours(day, NEW_YORK)) == count


def test_the_repeated_hour_is_told_apart_by_its_zone_name():
    starts = timeline.day_hours(date(2026, 11, 1), NEW_YORK)
    labels = timeline.hour_labels(starts, NEW_YORK)
    assert labels[:4] == ["00:00", "01:00 EDT", "01:00 EST", "02:00"]
    assert labels[-1] == "23:00" and starts[1] == utc("2026-11-01T05:00:00") and starts[2] == utc("2026-11-01T06:00:00")
    spring = timeline.hour_labels(timeline.day_hours(date(2026, 3, 8), NEW_YORK), NEW_YORK)
    assert spring[:3] == ["00:00", "01:00", "03:00"]           # 02:00 does not exist that day


@pytest.mark.parametrize(("day", "week", "label"), [
    (date(2026, 3, 1), date(2026, 2, 23), "2026-W09"),      # a Sunday ends the week that began on Monday
    (date(2026, 3, 2), date(2026, 3, 2), "2026-W10"),
    (date(2027, 1, 1), date(2026, 12, 28), "2026-W53"),     # ISO: the week belongs to the year of its Thursday
    (date(2026, 1, 1), date(2025, 12, 29), "2026-W01"),
])
def test_weeks_start_on_monday(day, week, label):
    assert timeline.period_start(day, "week") == week
    assert timeline.period_end(week, "week") == week + timedelta(days=6)
    assert timeline.period_label(week, "week") == label


def test_months():
    assert timeline.period_start(date(2026, 3, 17), "month") == date(2026, 3, 1)
    assert timeline.period_end(date(2028, 2, 1), "month") == date(2028, 2, 29)
    assert timeline.period_end(date(2026, 12, 1), "month") == date(2026, 12, 31)
    assert timeline.period_label(date(2026, 3, 1), "month") == "2026-03"
    grouped = timeline.periods([date(2026, 2, 27) + timedelta(days=i) for i in range(4)], "month")
    assert grouped == [(date(2026, 2, 1), [date(2026, 2, 27), date(2026, 2, 28)]),
                       (date(2026, 3, 1), [date(2026, 3, 1), date(2026, 3, 2)])]
    with pytest.raises(ValueError):
        timeline.period_start(date(2026, 3, 1), "year")


# --------------------------------------------------------------------------- 5-hour blocks


def blocks(*moments: str):
    return list(timeline.five_hour_blocks((utc(m), m) for m in moments))


def test_a_block_starts_at_its_first_request_rounded_down_and_lasts_five_hours():
    got = blocks("2026-03-01T09:17:00", "2026-03-01T10:00:00", "2026-03-01T13:59:59",
                 "2026-03-01T14:00:00",                         # exactly at the end: the next block
                 "2026-03-01T18:59:00",
                 "2026-03-01T20:30:00")                         # after a gap
    assert [(b.start, b.end) for b in got] == [
        (utc("2026-03-01T09:00:00"), utc("2026-03-01T14:00:00")),
        (utc("2026-03-01T14:00:00"), utc("2026-03-01T19:00:00")),
        (utc("2026-03-01T20:00:00"), utc("2026-03-02T01:00:00"))]
    assert [len(b.items) for b in got] == [3, 2, 1]
    assert (got[0].first, got[0].last) == (utc("2026-03-01T09:17:00"), utc("2026-03-01T13:59:59"))


def test_blocks_need_time_order_and_may_be_none():
    assert blocks() == []
    with pytest.raises(ValueError):
        blocks("2026-03-01T10:00:00", "2026-03-01T09:00:00")


def test_a_block_over_the_spring_clock_change_lasts_five_real_hours():
    # 00:30 EST on Mar 8 2026; the clocks jump from 02:00 to 03:00, so the block ends at 06:00 EDT
    [first, second] = blocks("2026-03-08T05:30:00", "2026-03-08T09:50:00", "2026-03-08T10:10:00")
    wall = lambda moment: moment.astimezone(NEW_YORK).strftime("%H:%M %Z")
    assert (wall(first.start), wall(first.end)) == ("00:00 EST", "06:00 EDT")
    assert first.end - first.start == timedelta(hours=5) and len(first.items) == 2
    assert wall(second.start) == "06:00 EDT"
