"""What one instance tells the others about upstreams: small change records, and how two
views of the same thing merge.

The boards (health, quota, affinity, budget, stored responses' issuers) emit a record through
their optional `on_change` hook whenever something another instance should know changes; a
shared state (ccswitch/shared) writes them out and publishes them, and the boards of the other
instances `apply` them.  Times
in records are epoch seconds (wall clock): the boards' monotonic readings mean nothing on
another machine, so each board converts at its boundary.

Two ways to take a record in:
* *replace* (`Boards.apply`): a live change, in the order it was published; the newer record
  of one thing replaces the older.
* *merge* (`merge`): two views of unknown order (this instance's memory and what Redis holds
  after an outage): the newest record of a thing wins (`at`), a window that resets later wins,
  a binding used later wins, spend takes the larger total.

Every record also has a dict form for the wire (`encode` / `decode`); `decode` checks every
field's type, so a malformed message is a `ValueError`, never a half-built record.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, replace

log = logging.getLogger("ccswitch.state")


@dataclass(frozen=True, slots=True)
class HealthChange:
    """An upstream's shared health after a change: consecutive failures, its cooldown's end
    (0: not cooling and no cooldown to probe after), whether that cooldown is a reported rate
    limit, the last error, the open outage's episode."""
    upstream: str
    failures: int
    cooling_end: float
    rate_limited: bool
    last_error: str | None
    outage: str | None
    at: float                   # when it changed
    account: str = ""           # `account_digest` of the upstream it is about ("": not said)

    @property
    def key(self) -> tuple:
        return ("h", self.upstream)

    @property
    def healthy(self) -> bool:
        return self.failures == 0 and not self.cooling_end


@dataclass(frozen=True, slots=True)
class SwitchChange:
    """`ccswitch.enable` / `disable` (None: the switch is gone, the rules decide)."""
    upstream: str
    enabled: bool | None
    at: float

    @property
    def key(self) -> tuple:
        return ("sw", self.upstream)


@dataclass(frozen=True, slots=True)
class PreferChange:
    """`ccswitch.use` until `until` (upstream None: `ccswitch.unuse`)."""
    upstream: str | None
    until: float
    at: float

    @property
    def key(self) -> tuple:
        return ("use",)


@dataclass(frozen=True, slots=True)
class WindowChange:
    """One rate-limit window of an upstream as a response described it, believed until `until`
    (its reset, or a while after it was seen); `until` 0 removes the window."""
    upstream: str
    window: str
    utilization: float
    resets_at: float | None
    rejected: bool
    until: float
    account: str = ""           # `account_digest` of the upstream it is about ("": not said)
    at: float = 0.0             # when a response last described it (0: an older ccswitch's, not said)

    @property
    def key(self) -> tuple:
        return ("q", self.upstream, self.window)


@dataclass(frozen=True, slots=True)
class QuotaForget:
    """Every window of an upstream learnt by `at` forgotten (`ccswitch.reset` at `at`; 0:
    an older ccswitch's, taken as made when it arrives)."""
    upstream: str
    at: float = 0.0

    @property
    def key(self) -> tuple:
        return ("qf", self.upstream)


@dataclass(frozen=True, slots=True)
class BindChange:
    """A session bound to an upstream on a route; `at` is its last use, it lasts `ttl` idle seconds."""
    route: str
    session: str
    upstream: str
    ttl: float
    at: float

    @property
    def key(self) -> tuple:
        return ("b", self.route, self.session)


@dataclass(frozen=True, slots=True)
class IssueChange:
    """A stored Responses answer `response_id` issued by `upstream` at `at`: a request continuing
    it (`previous_response_id`) can be served only there (routing.issued)."""
    response_id: str
    upstream: str
    at: float
    account: str = ""           # `account_digest` of the upstream it is about ("": not said)

    @property
    def key(self) -> tuple:
        return ("r", self.response_id)


@dataclass(frozen=True, slots=True)
class SpendAdded:
    """`usd` more spent by an upstream or a client key in one budget period (start/end epoch):
    what this instance adds; the shared state sums these in Redis."""
    who: str
    name: str
    period: str                 # daily | monthly
    start: float
    end: float
    usd: float

    @property
    def key(self) -> tuple:
        return ("s", self.who, self.name, self.period, self.start)


@dataclass(frozen=True, slots=True)
class SpendTotal:
    """The whole spend of one budget period as Redis holds it after an addition: totals only grow
    within a period, so taking the larger one is right in any order."""
    who: str
    name: str
    period: str
    start: float
    end: float
    usd: float

    @property
    def key(self) -> tuple:
        return ("s", self.who, self.name, self.period, self.start)


#: a record of one change: what a board's `on_change` hook receives
Change = (HealthChange | SwitchChange | PreferChange | WindowChange | QuotaForget | BindChange | IssueChange
          | SpendAdded | SpendTotal)
Feed = Callable[[Change], None]

_TYPES = {"health": HealthChange, "switch": SwitchChange, "prefer": PreferChange, "window": WindowChange,
          "forget": QuotaForget, "bind": BindChange, "issued": IssueChange, "spend": SpendTotal, "spend+": SpendAdded}
_TAGS = {cls: tag for tag, cls in _TYPES.items()}
# each record type's (field, annotation, default) triples, read once: a reconnect decodes every
# stored record; a field with a default may be missing (a record of an older ccswitch)
_FIELDS = {cls: tuple((f.name, str(f.type), f.default) for f in fields(cls)) for cls in _TYPES.values()}
_MAX_TEXT = 500     # a last error is cut to this: it travels in every health record


def account_digest(fingerprint: tuple) -> str:
    """A short name for the account an upstream's name stands for (its base_url, key digest and
    protocol, `Upstream.fingerprint`), carried in the records that are that account's: another
    key under the same name is another account, whose windows and cooldowns are not these.  A
    digest of a digest: nothing of the key can be read back from it."""
    return hashlib.blake2b(repr(fingerprint).encode(), digest_size=8).hexdigest()


def notify(feed: Feed | None, change: Change) -> None:
    """Hand a record to a board's hook; the hook is the shared state's cheap enqueue, and a bug
    in it must not fail the request that changed the board."""
    if feed is None:
        return
    try:
        feed(change)
    except Exception:
        log.exception("ccswitch: the shared state could not take a change")


def cut(text: str | None) -> str | None:
    return None if text is None else text[:_MAX_TEXT]


# --------------------------------------------------------------------------- wire form

def encode(change: Change) -> dict:
    return {"t": _TAGS[type(change)], **asdict(change)}


def _check(name: str, value: object, annotation: str) -> object:
    """`value` as the field `annotation` wants it, or ValueError."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None and optional:
        return None
    if base == "str" and isinstance(value, str):
        return value
    if base == "bool" and isinstance(value, bool):
        return value
    if base == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base == "float" and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError(f"field {name} is not a {annotation}")


def decode(data: object) -> Change:
    """A record from its dict form; ValueError when it is not one."""
    if not isinstance(data, dict):
        raise ValueError("a change is a mapping")
    cls = _TYPES.get(data.get("t"))          # type: ignore[arg-type]
    if cls is None:
        raise ValueError("unknown change type")
    values = {}
    for name, annotation, default in _FIELDS[cls]:
        if name in data:
            values[name] = _check(name, data[name], annotation)
        elif default is MISSING:
            raise ValueError(f"field {name} is missing")
    return cls(**values)


# --------------------------------------------------------------------------- merges

def merge(local: Change | None, remote: Change) -> Change:
    """The record two views of the same thing (same `key`) settle on."""
    if local is None:
        return remote
    if isinstance(remote, HealthChange):
        return _merge_health(local, remote)   # type: ignore[arg-type]
    if isinstance(remote, SwitchChange | PreferChange | BindChange | IssueChange | QuotaForget):
        # the newest word on it wins: a session's latest use holds its binding, the last
        # ccswitch.use / enable / disable / reset stands (a response id has one issuer: either is it)
        return local if local.at >= remote.at else remote      # type: ignore[attr-defined]
    if isinstance(remote, WindowChange):
        return max(local, remote, key=lambda w: (w.until, w.utilization, w.rejected, w.at))   # type: ignore[attr-defined]
    if isinstance(remote, SpendTotal):
        return local if local.usd >= remote.usd else remote    # type: ignore[attr-defined]
    return remote


def _merge_health(local: HealthChange, remote: HealthChange) -> HealthChange:
    """The newest word wins (a 2xx, or a reset, seen after a cooldown began ends it), but a failure
    seen elsewhere while that cooldown ran neither ends nor shortens it: two views that parted
    while Redis was down would lose the cooldown to any later failure."""
    newer, older = (local, remote) if local.at >= remote.at else (remote, local)
    if not newer.healthy and older.cooling_end > max(newer.at, newer.cooling_end):
        return older
    return newer


def with_total(added: SpendAdded, usd: float) -> SpendTotal:
    return SpendTotal(added.who, added.name, added.period, added.start, added.end, usd)


def add_to(added: SpendAdded, more: SpendAdded) -> SpendAdded:
    return replace(added, usd=added.usd + more.usd)
