"""After a restart: the schedule's state rebuilt from the probes the ledger recorded.

Each `activations` row names the `activate_at` time it was sent for (`slot`), so a retry that
succeeds after the next time has come marks its own time done, not the latest one.  Rows sent
on demand (`ccswitch.activate`: NULL) and rows of a ledger older than the column belong to no
time and count for none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from ccswitch.activation.probe import PROBE_CUT, Schedule, Slot, SlotState
from ccswitch.config.values import format_hhmm, parse_hhmm


@dataclass(frozen=True)
class PastProbe:
    """One `activations` row that names its slot."""
    upstream: str
    slot: str          # "YYYY-MM-DD HH:MM"
    ok: bool
    error: str | None
    ts: datetime


def parse_slot(upstream: str, text: str) -> Slot | None:
    """The slot a row names; None for text ccswitch did not write (another tool's rows)."""
    try:
        day, at = text.split(" ")
        return Slot(upstream, date.fromisoformat(day), format_hhmm(parse_hhmm(at)))
    except (ValueError, AttributeError):
        return None


def restore(schedule: Schedule, probes: Iterable[PastProbe]) -> None:
    """Mark done each slot with a successful probe, or one the shutdown cut: that one reached
    the upstream (or was on its way) and most likely opened the window; sending it again would
    be a second probe for the same time."""
    for probe in probes:
        slot = parse_slot(probe.upstream, probe.slot)
        if slot is not None and (probe.ok or probe.error == PROBE_CUT):
            schedule.slots[slot] = SlotState(tries=1, done=True)
