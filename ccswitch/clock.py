"""Time as ccswitch's modules take it: wall time in UTC for records, a monotonic clock
for durations (immune to the system clock being set), and the zone local days are counted in."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

import tzlocal

log = logging.getLogger("ccswitch.clock")


def utc_now() -> datetime:
    return datetime.now(UTC)


def ms_since(started: float) -> int:
    """Whole milliseconds since `started`, a `time.monotonic()` reading."""
    return int((time.monotonic() - started) * 1000)


def wall_text(moment: datetime, now: datetime, *, seconds: bool = False) -> str:
    """`14:05` for a moment on `now`'s day (both in one zone), `2026-12-06 14:05` for another:
    a reset two days off must not read as one an hour ago."""
    clock = f"{moment:%H:%M:%S}" if seconds else f"{moment:%H:%M}"
    return clock if moment.date() == now.date() else f"{moment:%Y-%m-%d} {clock}"


def zone(name: str | None) -> tzinfo:
    """The zone called `name`, or with none the machine's own (`TZ`, else its configuration)."""
    return ZoneInfo(name) if name else _system_zone(os.environ.get("TZ"))


@lru_cache(maxsize=4)
def _system_zone(tz_variable: str | None) -> tzinfo:
    """A real zone, DST and all: today's fixed offset would put midnights after the next switch
    an hour off (budget days and months, schedules, the report).  Looked up once per `TZ`."""
    try:
        return tzlocal.reload_localzone()
    except (LookupError, ValueError, OSError) as exc:
        fixed = datetime.now().astimezone().tzinfo
        offset = datetime.now(fixed).strftime("UTC%:z")
        if tz_variable and not _names_a_zone(tz_variable):
            # glibc reads an unknown name as a zone of that name at UTC: "America" for America/Sao_Paolo
            why = f"TZ={tz_variable} names no time zone this machine knows (a misspelling?)"
        else:
            why = f"the system time zone is not a named zone ({' '.join(str(exc).split())})"
        log.warning("ccswitch: %s; local days follow %s, without daylight saving time (set timezone: in "
                    "rules.yaml)", why, offset)
        return fixed


def _names_a_zone(tz_variable: str) -> bool:
    try:
        ZoneInfo(tz_variable.removeprefix(":"))
    except (LookupError, ValueError, OSError):
        return False
    return True
