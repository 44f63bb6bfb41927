"""Time arithmetic for the report: local days and hours, weeks and months, 5-hour blocks.

Every function takes the report's zone as ``tz``: a ``ZoneInfo`` (the rules' ``timezone``) or
None for the system's local zone, looked up per moment so both follow daylight-saving changes.
Local hours are stepped in real (UTC) time, so a day has 23 or 25 of them when the clocks change.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

PERIODS = ("day", "week", "month")
BLOCK_LENGTH = timedelta(hours=5)
HOUR = timedelta(hours=1)


def local(moment: datetime, tz: tzinfo | None) -> datetime:
    """An aware moment in the report's zone (tz None: the system's zone, DST-aware)."""
    return moment.astimezone(tz)


def local_midnight(day: date, tz: tzinfo | None) -> datetime:
    """The first moment of a local day, as an aware datetime."""
    naive = datetime.combine(day, time())
    # a naive datetime's astimezone() reads it as system local time: exactly what tz None means
    return naive.astimezone() if tz is None else naive.replace(tzinfo=tz)


def day_bounds(day: date, tz: tzinfo | None) -> tuple[datetime, datetime]:
    """[start, end) of a local day in UTC."""
    return (local_midnight(day, tz).astimezone(UTC), local_midnight(day + timedelta(days=1), tz).astimezone(UTC))


def day_hours(day: date, tz: tzinfo | None) -> list[datetime]:
    """The starts (UTC) of a local day's hours: 24, or 23 / 25 on the days the clocks change."""
    start, end = day_bounds(day, tz)
    count = round((end - start) / HOUR)
    return [start + i * HOUR for i in range(count)]


def hour_label(start: datetime, tz: tzinfo | None, ambiguous: bool = False) -> str:
    """'09:00'; with ``ambiguous`` (a wall-clock hour the day has twice) the zone name too: '01:00 EDT'."""
    wall = local(start, tz)
    return wall.strftime("%H:%M %Z" if ambiguous else "%H:%M")


def hour_labels(starts: list[datetime], tz: tzinfo | None) -> list[str]:
    """Labels for a day's hours; the hour repeated when the clocks go back is told apart by its zone name."""
    plain = [hour_label(s, tz) for s in starts]
    return [hour_label(s, tz, ambiguous=plain.count(p) > 1) for s, p in zip(starts, plain)]


def period_start(day: date, period: str) -> date:
    """The first day of ``day``'s period: itself, its week's Monday, or its month's 1st."""
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "day":
        return day
    raise ValueError(f"period must be one of {PERIODS}")


def period_end(first: date, period: str) -> date:
    """The last day of the period that starts on ``first``."""
    if period == "week":
        return first + timedelta(days=6)
    if period == "month":
        following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
        return following - timedelta(days=1)
    return first


def period_label(first: date, period: str) -> str:
    """'2026-03-01' for a day, ISO week '2026-W09' for a week (Monday first), '2026-03' for a month."""
    if period == "week":
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return first.strftime("%Y-%m")
    return first.isoformat()


def periods(days: Iterable[date], period: str) -> list[tuple[date, list[date]]]:
    """Consecutive days grouped by period: [(first day of the period, its days among ``days``)]."""
    out: dict[date, list[date]] = {}
    for day in days:
        out.setdefault(period_start(day, period), []).append(day)
    return sorted(out.items())


def floor_hour(moment: datetime) -> datetime:
    """The start of ``moment``'s hour, in UTC (blocks start on a whole UTC hour, as the usage tools count them)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Block[T]:
    """One 5-hour usage block: from its first request rounded down to the hour, for 5 hours."""
    start: datetime                     # UTC
    first: datetime                     # first and last request in it (UTC)
    last: datetime
    items: list[T] = field(default_factory=list)

    @property
    def end(self) -> datetime:
        return self.start + BLOCK_LENGTH


def five_hour_blocks[T](events: Iterable[tuple[datetime, T]]) -> Iterator[Block[T]]:
    """Group time-ordered (moment, item) events into 5-hour blocks: a block starts at its first
    event rounded down to the hour and lasts 5 hours; the first event at or after its end starts
    the next block. Yields each block once it is complete (the last one at the end)."""
    current: Block[T] | None = None
    for moment, item in events:
        if current is not None and moment < current.last:
            raise ValueError("events must be in time order")
        if current is None or moment >= current.end:
            if current is not None:
                yield current
            current = Block(floor_hour(moment), moment, moment)
        current.last = moment
        current.items.append(item)
    if current is not None:
        yield current
