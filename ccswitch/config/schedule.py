"""Days, hours, time zone and activation times, given a clock.

Pure: every function takes the time it needs; nothing here reads the wall clock unless
`local_now` is called without a clock.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from ccswitch.config.models import HourWindow, Upstream
from ccswitch.config.values import WEEKDAYS, format_hhmm, parse_hhmm

__all__ = ["WEEKDAYS", "Upcoming", "format_days", "in_window", "local_now", "next_activation", "schedule_block",
           "schedule_opens", "weekday_time"]

_LOOKAHEAD_DAYS = 8


def format_days(days: frozenset[int] | set[int]) -> str:
    """{0,1,2,3,4} -> "mon-fri"; {5,6} -> "sat, sun"; runs of three or more become ranges."""
    out: list[str] = []
    run: list[int] = []
    for d in list(sorted(days)) + [None]:  # type: ignore[list-item]
        if run and (d is None or d != run[-1] + 1):
            out.append(f"{WEEKDAYS[run[0]]}-{WEEKDAYS[run[-1]]}" if len(run) >= 3
                       else ", ".join(WEEKDAYS[x] for x in run))
            run = []
        if d is not None:
            run.append(d)
    return ", ".join(out)


def in_window(window: HourWindow, days: frozenset[int], weekday: int, minute: int) -> bool:
    """Is (weekday, minute of day) inside `window`, given the allowed days?

    A wrapping window ("22:00-02:00") belongs to the day it starts on, so its part after
    midnight needs the previous weekday in `days`.
    """
    start, end = window.start_minute, window.end_minute
    if start < end:
        return weekday in days and start <= minute < end
    return (minute >= start and weekday in days) or (minute < end and (weekday - 1) % 7 in days)


def _time_matches(window: HourWindow, minute: int) -> bool:
    return in_window(window, frozenset(range(7)), 0, minute)


def schedule_block(upstream: Upstream, now: datetime) -> str | None:
    """None if `upstream` is in schedule at `now` (aware, in the rules' tz); else a reason."""
    weekday, minute = now.weekday(), now.hour * 60 + now.minute
    days = upstream.days
    if not upstream.hours:
        return None if weekday in days else f"outside its days ({format_days(days)})"
    if any(in_window(w, days, weekday, minute) for w in upstream.hours):
        return None
    matching = next((w for w in upstream.hours if _time_matches(w, minute)), None)
    if matching is not None:
        if matching.start_minute > matching.end_minute and minute < matching.end_minute:
            # a Sunday 04:00 in "sun 22:00-05:00" reads as a Sunday: say whose night it is
            before = WEEKDAYS[(weekday - 1) % 7]
            return (f"outside its days ({format_days(days)}): after midnight, {matching} belongs to the day "
                    f"it starts on ({before})")
        return f"outside its days ({format_days(days)})"
    hours = ", ".join(str(w) for w in upstream.hours)
    if weekday not in days:     # not its day either: the hours alone would send the user to the wrong fix
        return f"outside its days ({format_days(days)}) and hours ({hours})"
    return f"outside its hours ({hours})"


def schedule_opens(upstream: Upstream, now: datetime) -> datetime | None:
    """The first instant from `now` (aware, in the rules' tz) at which `upstream` is in schedule
    again: `now` itself if it is; None if not within 8 days.  It opens at a window's start or at
    a midnight (a new day, or a wrapping window's part after it)."""
    if schedule_block(upstream, now) is None:
        return now
    starts = sorted({0} | {w.start_minute for w in upstream.hours})
    after = _utc(now)
    for offset in range(_LOOKAHEAD_DAYS + 1):
        day = now.date() + timedelta(days=offset)
        for minute in starts:
            at = fire_instant(day, minute, now.tzinfo)
            if _utc(at) > after and schedule_block(upstream, at) is None:
                return at
    return None


def local_now(tz: tzinfo, clock: Callable[[], datetime | float] | None = None) -> datetime:
    """The current time in `tz`. `clock` may return an aware datetime, a naive one (taken as
    UTC) or epoch seconds."""
    if clock is None:
        return datetime.now(tz)
    value = clock()
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(tz)


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def _exists(wall: datetime, tz: tzinfo) -> bool:
    """Does the naive local `wall` time exist in `tz` (not skipped by a DST jump)?"""
    aware = wall.replace(tzinfo=tz, fold=0)
    return _utc(aware).astimezone(tz).replace(tzinfo=None, fold=0) == wall


def fire_instant(day: date, minute: int, tz: tzinfo) -> datetime:
    """The instant HH:MM fires on `day`: the first occurrence of a repeated time; for a time
    skipped by a DST jump, the next minute that exists."""
    wall = datetime.combine(day, time(minute // 60, minute % 60))
    for _ in range(24 * 60):
        if _exists(wall, tz):
            break
        wall += timedelta(minutes=1)
    return wall.replace(tzinfo=tz, fold=0)


def next_activation(times: Sequence[str], days: frozenset[int], after: datetime,
                    taken: frozenset[tuple[date, int]] = frozenset()) -> datetime | None:
    """Next fire instant strictly after `after` (aware) among the "HH:MM" local times on the
    allowed weekdays, in after's time zone; None if there is none within 8 days.  `taken`: the
    (local day, minute) times already probed, which do not fire again that day."""
    tz = after.tzinfo
    if tz is None:
        raise ValueError("`after` must be timezone-aware")
    minutes = sorted({parse_hhmm(t) for t in times})
    if not minutes or not days:
        return None
    after_utc = _utc(after)
    start = after.date()
    best: datetime | None = None
    for offset in range(-1, _LOOKAHEAD_DAYS + 1):
        day = start + timedelta(days=offset)
        if day.weekday() not in days:
            continue
        for minute in minutes:
            if (day, minute) in taken:
                continue
            cand = fire_instant(day, minute, tz)
            if _utc(cand) > after_utc and (best is None or _utc(cand) < _utc(best)):
                best = cand
        if best is not None and offset >= 1:
            break
    return best


def weekday_time(moment: datetime, seconds: bool = False) -> str:
    """`tue 06:00`: a moment of the coming week, as a status line shows it; with `seconds`,
    `tue 06:02:45` when it is not on the minute (a retry after a `retry-after`)."""
    text = f"{WEEKDAYS[moment.weekday()]} {format_hhmm(moment.hour * 60 + moment.minute)}"
    return f"{text}:{moment.second:02d}" if seconds and moment.second else text


@dataclass(frozen=True)
class Upcoming:
    """What the status needs of an upstream's probes besides its times: when a failed one is
    tried again, and the (local day, minute) times probed already, which do not come again."""
    retry: datetime | None = None
    taken: frozenset[tuple[date, int]] = frozenset()
