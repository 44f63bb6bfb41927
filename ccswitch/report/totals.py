"""The report's arithmetic: ``Totals`` (sums of requests, tokens, cost), ``UsageRow`` (one priced
group of ledger rows) and ``Span`` (a stretch of time and everything summed over it).

Dimensions: ``model`` is the model the client named (what it was sent upstream as is kept per
span in ``Span.sent_as``), ``upstream`` the upstream that answered (``(ccswitch)`` when ccswitch
answered itself; ``(client left)`` or ``(killed)`` when the request ended before any upstream
answered it), ``route``, and ``session`` (the session key).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

DIMENSIONS = ("model", "upstream", "route", "session", "client")
NO_UPSTREAM = "(ccswitch)"      # requests ccswitch answered itself
# requests that ended before any upstream answered them, by whoever ended them
GONE_BEFORE_AN_ANSWER = {"client_closed": "(client left)", "killed": "(killed)"}
NO_MODEL = "(no model)"
NO_SESSION = "(no session)"
NO_CLIENT = "(no client key)"


@dataclass(slots=True)
class Totals:
    requests: int = 0
    input: int = 0
    output: int = 0
    cache_write: int = 0            # every cache-creation token (5-minute and 1-hour)
    cache_write_1h: int = 0         # the 1-hour part of cache_write
    cache_read: int = 0
    reasoning: int = 0              # part of output
    failovers: int = 0
    errors: int = 0
    moved: int = 0                  # requests that moved their session to another upstream
    cost: float = 0.0               # USD, priced tokens only
    unpriced_tokens: int = 0        # tokens of models with no known price (not in cost)
    unpriced_requests: int = 0      # requests of such models, tokens or not: their cost is unknown, not 0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_write + self.cache_read

    @property
    def tokens(self) -> int:
        return self.prompt + self.output

    @property
    def cache_hit(self) -> float | None:
        return self.cache_read / self.prompt if self.prompt else None

    def add(self, other: Totals) -> None:
        # field by field, written out: a report adds every row into each of its groups and spans
        # (millions of adds for a busy quarter), and a loop over `fields()` costs ten times as much
        self.requests += other.requests
        self.input += other.input
        self.output += other.output
        self.cache_write += other.cache_write
        self.cache_write_1h += other.cache_write_1h
        self.cache_read += other.cache_read
        self.reasoning += other.reasoning
        self.failovers += other.failovers
        self.errors += other.errors
        self.moved += other.moved
        self.cost += other.cost
        self.unpriced_tokens += other.unpriced_tokens
        self.unpriced_requests += other.unpriced_requests

    def to_dict(self) -> dict:
        return {
            "requests": self.requests, "input_tokens": self.input, "output_tokens": self.output,
            "cache_write_tokens": self.cache_write, "cache_write_1h_tokens": self.cache_write_1h,
            "cache_read_tokens": self.cache_read, "reasoning_tokens": self.reasoning,
            "cache_hit": None if self.cache_hit is None else round(self.cache_hit, 6),
            "cost_usd": round(self.cost, 6), "unpriced_tokens": self.unpriced_tokens,
            "unpriced_requests": self.unpriced_requests,
            "failovers": self.failovers, "errors": self.errors, "moved": self.moved,
        }


@dataclass(frozen=True)
class UsageRow:
    """The requests of one minute with the same route, upstream, client model, model sent and session, priced."""
    minute: datetime                # UTC
    day: date                       # the local day
    route: str
    upstream: str | None            # None: ccswitch answered itself
    model: str | None               # as the client named it
    sent_model: str | None          # as sent to the upstream (None when no upstream answered)
    session: str | None
    totals: Totals
    client: str | None = None       # the client key's name
    gone: str | None = None         # no upstream answered: the client left (client_closed) or it was killed

    def label(self, dim: str) -> str:
        if dim == "model":
            return self.model or NO_MODEL
        if dim == "upstream":
            return self.upstream or GONE_BEFORE_AN_ANSWER.get(self.gone or "", NO_UPSTREAM)
        if dim == "route":
            return self.route
        if dim == "client":
            return self.client or NO_CLIENT
        return self.session or NO_SESSION


@dataclass
class Span:
    """A stretch of time and its figures: a day, an hour, a week, a month, a 5-hour block or the whole period."""
    start: datetime                 # aware; the span is [start, end)
    end: datetime
    label: str
    total: Totals = field(default_factory=Totals)
    groups: dict[str, dict[str, Totals]] = field(default_factory=lambda: {dim: {} for dim in DIMENSIONS})
    # client model -> model sent upstream -> totals, for requests an upstream answered
    sent_as: dict[str, dict[str, Totals]] = field(default_factory=dict)

    def add(self, row: UsageRow) -> None:
        self.total.add(row.totals)
        for dim in DIMENSIONS:
            self.groups[dim].setdefault(row.label(dim), Totals()).add(row.totals)
        if row.upstream is not None:
            sent = row.sent_model or row.model or NO_MODEL
            self.sent_as.setdefault(row.label("model"), {}).setdefault(sent, Totals()).add(row.totals)

    def merge(self, other: Span) -> None:
        """Add another span's figures (a week from its days)."""
        self.total.add(other.total)
        for dim in DIMENSIONS:
            for label, t in other.groups[dim].items():
                self.groups[dim].setdefault(label, Totals()).add(t)
        for model, targets in other.sent_as.items():
            for sent, t in targets.items():
                self.sent_as.setdefault(model, {}).setdefault(sent, Totals()).add(t)

    def sessions(self) -> int:
        return sum(1 for label in self.groups["session"] if label != NO_SESSION)

    def renamed(self, model: str) -> bool:
        """True if requests for the client's ``model`` went upstream under another name."""
        return any(sent != model for sent in self.sent_as.get(model, {}))


@dataclass
class BlockSpan(Span):
    """A 5-hour block (timeline.five_hour_blocks) with its first and last request (to the minute)."""
    first: datetime | None = None
    last: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def left(self, now: datetime) -> timedelta:
        """Time until the block ends; zero once it has."""
        return max(self.end - now, timedelta(0))


def sorted_groups(groups: Mapping[str, Totals]) -> list[tuple[str, Totals]]:
    return sorted(groups.items(), key=lambda kv: (-kv[1].cost, -kv[1].tokens, -kv[1].requests, kv[0]))

