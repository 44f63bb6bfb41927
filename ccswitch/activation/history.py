"""After a restart: the schedule's state rebuilt from the probes the ledger recorded.

Each `activations` row names the `activate_at` time it was sent for (`slot`), so a retry that
succeeds after the next time has come marks its own time done, not the latest one, and a time
whose probe and retries all failed is not run (nor announced) again.  Rows sent
on demand (`ccswitch.activate`: NULL) and rows of a ledger older than the column belong to no
time and count for none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ccswitch.activation.probe import Schedule, Slot, SlotState
from ccswitch.config.models import Activation
from ccswitch.config.values import format_hhmm, parse_hhmm
from ccswitch.dial.shutdown import CUT_BY_SHUTDOWN


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


def restore(schedule: Schedule, probes: Iterable[PastProbe], settings: Activation,
            now: datetime) -> list[tuple[Slot, int]]:
    """Each slot as the ledger left it (`probes` oldest first).

    Done: a probe succeeded, or the shutdown cut one (it reached the upstream, or was on its
    way, and most likely opened the window; sending it again would be a second probe for the
    same time).  Otherwise its failed tries count: a series that used them all has given up
    (its `activation_failed` went out; no try and no second announcement), and one with tries
    left goes on at its next retry, if that is within `grace` of `now` (a retry, like the time
    itself, does not fire hours late).  Returns the slots whose tries left were all past `grace`
    (with the failed tries they had): their series ends here, and nobody was told yet.
    """
    tried: dict[Slot, tuple[int, datetime]] = {}
    done: set[Slot] = set()
    for probe in probes:
        slot = parse_slot(probe.upstream, probe.slot)
        if slot is None:
            continue
        if probe.ok or probe.error == CUT_BY_SHUTDOWN:
            done.add(slot)
        else:
            tried[slot] = (tried.get(slot, (0, probe.ts))[0] + 1, probe.ts)
    for slot in done:
        schedule.slots[slot] = SlotState(tries=1, done=True)
    ended: list[tuple[Slot, int]] = []
    for slot, (tries, last) in tried.items():
        if slot in done:
            continue
        next_try = last + timedelta(seconds=settings.retry_interval)
        if tries > settings.retries:
            next_try = None                 # given up, and told, before the stop
        elif now - next_try > timedelta(seconds=settings.grace):
            next_try = None
            ended.append((slot, tries))
        schedule.slots[slot] = SlotState(tries=tries, done=False, next_try=next_try)
    return ended
