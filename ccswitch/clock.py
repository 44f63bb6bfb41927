"""Time as ccswitch's modules take it: wall time in UTC for records, a monotonic clock
for durations (immune to the system clock being set)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def ms_since(started: float) -> int:
    """Whole milliseconds since `started`, a `time.monotonic()` reading."""
    return int((time.monotonic() - started) * 1000)
