"""What ccswitch has served since it started, kept in memory for the live page and the metrics.

`LiveBoard.note` takes each finished request as its ledger rows (`ledger.rows.request_row` and
`attempt_rows`, or `own_answer_row` for an answer ccswitch gave itself), so the page, the metrics
and the ledger read one record.  Noting a request only adds to counters and a short deque; the
page and the metrics are computed when someone asks for them (`live_status`, `metrics`).

Today's totals follow the report's definitions (`report.data`): cost at the report's prices
(billed model, `price_multiplier`), a failover is a request with more than one attempt, an
error is a request with an error or a status >= 400, `count_tokens` requests are left out.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, tzinfo
from typing import Any

from ccswitch.dial.job import CLIENT_CLOSED, KILLED
from ccswitch.vocab import Endpoint

RECENT = 50   # requests the page lists

#: token kinds, each with the ledger column it is read from
TOKEN_KINDS = {"input": "input_tokens", "output": "output_tokens", "cache_creation": "cache_creation_tokens",
               "cache_read": "cache_read_tokens", "reasoning": "reasoning_tokens"}

# LLM calls last from a fraction of a second (count_tokens, an own answer) to many minutes
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)


@dataclass
class Histogram:
    """A Prometheus-style histogram: counts per upper bound (the last one is +Inf), sum, count."""
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1   # le: a value on a bound is in it
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it) for each bound and +Inf, as Prometheus exposes them."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class DayTotals:
    requests: int = 0
    input: int = 0
    output: int = 0
    cache_creation: int = 0
    cache_read: int = 0
    reasoning: int = 0        # part of output
    cost_usd: float = 0.0     # priced tokens only
    unpriced_tokens: int = 0  # tokens of models with no known price (not in cost)
    failovers: int = 0
    errors: int = 0
    count_tokens: int = 0     # count_tokens requests, left out of every other figure

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["cost_usd"] = round(self.cost_usd, 6)
        return out

    def add(self, other: DayTotals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


#: today's totals are kept in slices of a quarter hour, by when each request began: every zone's
#: midnight (offsets of :30 and :45 too) falls on a slice's edge, so "today" in any zone, also one
#: a reload moves to, is the sum of the slices since its midnight
SLICE = 900
#: slices kept: a day is at most 25 hours long (a clock change), whatever the zone
SLICES_KEPT = 26 * 3600 // SLICE


@dataclass(frozen=True)
class Served:
    """One finished request as the page lists it."""
    at: datetime              # UTC
    route: str
    endpoint: str
    model: str | None         # what the client asked for
    upstream_model: str | None
    upstream: str | None      # None: ccswitch answered itself
    # (upstream, status or error kind, why when that word does not tell it: `first_byte timeout`) per attempt
    attempts: tuple[tuple[str, str, str | None], ...]
    status: int | None
    error: str | None
    stream: bool
    tokens: Mapping[str, int]
    cost_usd: float | None
    latency_ms: int | None
    ttfb_ms: int | None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _parse_ts(text: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return datetime.now(UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def attempt_outcome(status: int | None, error: str | None) -> str:
    """A small fixed vocabulary for an attempt's end: ok, http_<status>, stream_error (a 2xx
    that failed all the same: an error event, a cut or silent stream, an answer not in the
    protocol), network (no status), client_closed (also for a flow killed in mitmproxy: cut
    from the client's side)."""
    if error in (CLIENT_CLOSED, KILLED):
        return CLIENT_CLOSED
    if status is None:
        return "network"
    if 200 <= status < 300:
        return "stream_error" if error else "ok"
    return f"http_{status}"


def attempt_result(status: int | None, error: str | None) -> str:
    """An attempt as the page lists it: its status when that tells how it ended, else the word
    the metrics count it under (a 200 that ended with an error event failed: `stream_error`)."""
    outcome = attempt_outcome(status, error)
    if error == KILLED:
        return KILLED
    return str(status) if outcome == "ok" or outcome.startswith("http_") else outcome


def attempt_why(status: int | None, error: str | None, said: str | None = None) -> str | None:
    """What went wrong with an attempt beyond its `attempt_result` word (a timeout, an overload in
    the stream, a refused connection, the message of an upstream's error answer), or None when
    the result says it all."""
    if not error or error in (CLIENT_CLOSED, KILLED):
        return None
    if error == f"HTTP {status}":
        return said
    return error.removeprefix(f"HTTP {status}: ")


def status_label(status: int | None, error: str | None) -> str:
    """The status a client got, as a label: the code, else client_closed or none."""
    if status:
        return str(status)
    return CLIENT_CLOSED if error == CLIENT_CLOSED else "none"


def is_error(status: int | None, error: str | None) -> bool:
    return error is not None or (status or 0) >= 400


class LiveBoard:
    """Counters since ccswitch started, today's totals, and the last `RECENT` requests."""

    def __init__(self, clock: Callable[[], float] = time.time, recent: int = RECENT) -> None:
        self.clock = clock
        self.started = clock()
        self.requests: Counter[tuple[str, str, str]] = Counter()     # (route, upstream, status)
        self.failovers = 0
        self.attempts: Counter[tuple[str, str]] = Counter()          # (upstream, outcome)
        self.tokens: Counter[tuple[str, str]] = Counter()            # (upstream, kind)
        self.cost: Counter[str] = Counter()                          # upstream -> USD (priced only)
        self.unpriced: Counter[str] = Counter()                      # upstream -> tokens without a price
        self.duration: dict[tuple[str, str], Histogram] = {}         # (route, upstream)
        self.ttfb: dict[tuple[str, str], Histogram] = {}
        self.recent: deque[Served] = deque(maxlen=recent)
        self.slices: dict[int, DayTotals] = {}    # the quarter hour a request began (epoch // SLICE) -> totals

    def note(self, row: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]], usd: float | None) -> None:
        """Count one finished request: its ledger rows and its price (`spend.row_cost`; None: its
        model has none)."""
        upstream = row.get("upstream") or ""
        route = str(row.get("route") or "")
        status, error = row.get("status"), row.get("error")
        self.requests[(route, upstream, status_label(status, error))] += 1
        failed_over = len(attempts) > 1
        self.failovers += failed_over
        for attempt in attempts:
            self.attempts[(str(attempt.get("upstream")), attempt_outcome(attempt.get("status"), attempt.get("error")))] += 1
        tokens = {kind: _int(row.get(column)) for kind, column in TOKEN_KINDS.items()}
        for kind, n in tokens.items():
            if n:
                self.tokens[(upstream, kind)] += n
        billed = tokens["input"] + tokens["output"] + tokens["cache_creation"] + tokens["cache_read"]
        if usd is not None:
            if upstream:      # a request no upstream answered costs nothing, and has no series of its own
                self.cost[upstream] += usd
        elif billed:
            self.unpriced[upstream] += billed
        if isinstance(row.get("latency_ms"), int):
            self._histogram(self.duration, DURATION_BUCKETS, route, upstream).observe(row["latency_ms"] / 1000)
        if isinstance(row.get("ttfb_ms"), int):
            self._histogram(self.ttfb, TTFB_BUCKETS, route, upstream).observe(row["ttfb_ms"] / 1000)
        at = _parse_ts(row.get("ts"))
        self.recent.append(Served(
            at=at, route=route, endpoint=str(row.get("endpoint") or ""), model=row.get("model"),
            upstream_model=row.get("upstream_model"), upstream=upstream or None,
            attempts=tuple((str(a.get("upstream")), attempt_result(a.get("status"), a.get("error")),
                            attempt_why(a.get("status"), a.get("error"), a.get("said"))) for a in attempts),
            status=status, error=error, stream=bool(row.get("stream")), tokens=tokens, cost_usd=usd,
            latency_ms=row.get("latency_ms"), ttfb_ms=row.get("ttfb_ms")))
        self._add_to_slice(self._slice(at), row, tokens, usd, billed, failed_over, is_error(status, error))

    def totals(self, tz: tzinfo, now: datetime | None = None) -> DayTotals:
        """Today's totals in `tz` (the rules' zone now, whatever it was when they were counted):
        the requests that began since its last midnight (of the day of `now`, default the clock's),
        or since ccswitch started."""
        first = self._slice(self._midnight(tz, now))
        out = DayTotals()
        for index, totals in self.slices.items():
            if index >= first:
                out.add(totals)
        return out

    def since(self, tz: tzinfo) -> datetime:
        """When today's totals begin: local midnight, or ccswitch's start if that was later."""
        return max(datetime.fromtimestamp(self.started, tz), self._midnight(tz))

    def _midnight(self, tz: tzinfo, now: datetime | None = None) -> datetime:
        now = datetime.fromtimestamp(self.clock(), tz) if now is None else now.astimezone(tz)
        return now.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)   # of two midnights, the first

    @staticmethod
    def _slice(at: datetime) -> int:
        return math.floor(at.timestamp() / SLICE)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _histogram(table: dict, bounds: tuple[float, ...], route: str, upstream: str) -> Histogram:
        found = table.get((route, upstream))
        if found is None:
            found = table[(route, upstream)] = Histogram(bounds)
        return found

    def _add_to_slice(self, index: int, row: Mapping[str, Any], tokens: Mapping[str, int],
                      usd: float | None, billed: int, failed_over: bool, error: bool) -> None:
        totals = self.slices.get(index)
        if totals is None:
            totals = self.slices[index] = DayTotals()
            newest = max(self.slices)
            for old in [i for i in self.slices if i <= newest - SLICES_KEPT]:
                del self.slices[old]      # older than any zone's today
        if row.get("endpoint") == Endpoint.COUNT_TOKENS:
            totals.count_tokens += 1
            return
        totals.requests += 1
        totals.input += tokens["input"]
        totals.output += tokens["output"]
        totals.cache_creation += tokens["cache_creation"]
        totals.cache_read += tokens["cache_read"]
        totals.reasoning += tokens["reasoning"]
        if usd is not None:
            totals.cost_usd += usd
        else:
            totals.unpriced_tokens += billed
        totals.failovers += failed_over
        totals.errors += error
