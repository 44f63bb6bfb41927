"""What ``ccswitch report`` reports: the ``Report`` data model and ``build_report``, which
reads the usage database and prices it (the queries and prices: ledger_rows.py). Rendering is
in text.py, charts.py and html.py.

Days are days in the rules' time zone; prices come from the built-in table (prices.py),
rules.yaml ``prices:`` overrides and each upstream's ``price_multiplier``. Cost is computed
here, at report time, from the billed model (``upstream_model``, else ``model``); requests are
grouped by the model the client named, with what it was sent upstream as beside it.

``count_tokens`` requests are left out of every figure (only a note counts them).
A failover is a request that took more than one upstream attempt; an error is a request
with an ``error`` or a status >= 400. Cache-hit % = cache_read / (input + cache_write +
cache_read), i.e. the share of the whole prompt that was read from cache. A move is a request
whose session (affinity) was bound to one upstream and rebound to another that served it
(``affinity = 'moved'``). A database older than the session columns reads as "no session".

Views beside the days: the hours of one day (``hours_day``), weeks or months (``period``),
5-hour blocks of the claude route (``blocks``, see timeline.py) and latency / time to first
byte (latency.py).
"""
from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ccswitch.clock import utc_now, zone
from ccswitch.config.models import Rules
from ccswitch.ledger.reading import LedgerReader, as_reader
from ccswitch.report import prices, timeline
from ccswitch.report.attempts import UpstreamAttempts, read_attempts
from ccswitch.report.latency import LatencyStats, Timings, stats
from ccswitch.report.ledger_rows import (
    ACTIVATIONS_SQL,
    Pricer,
    read_rows,
    read_timings,
    row_moment,
    shapeless_times,
    usage_rows,
)
from ccswitch.report.totals import (
    DIMENSIONS,
    NO_MODEL,
    NO_SESSION,
    NO_UPSTREAM,
    BlockSpan,
    Span,
    Totals,
    UsageRow,
    sorted_groups,
)
from ccswitch.vocab import Route

if TYPE_CHECKING:
    import sqlite3

__all__ = ["DIMENSIONS", "NO_MODEL", "NO_SESSION", "NO_UPSTREAM", "Activation", "BlockSpan", "Report", "Span", "Totals",
           "build_report", "fmt_tokens", "report_zone", "sorted_groups", "tz_label"]

SUMMARISED = ("model", "upstream", "route")     # always summarised; sessions only when grouped by them
UNPRICED_SHOWN = 5              # unpriced models named in the report's note; the rest are counted
BLOCKS_ROUTE = Route.CLAUDE     # subscription blocks are Claude Code's
BLOCKS_LOOKBACK_DAYS = 3        # blocks chain from request to request: read this far before the period


@dataclass
class Activation:
    upstream: str
    last_probe: datetime            # local time
    last_ok: bool
    last_error: str | None
    ok: int = 0
    failed: int = 0


@dataclass
class Report:
    since: date
    until: date
    tz_name: str
    by: str | None
    db_path: str
    days: list[date]                                            # every day, since..until
    by_day: dict[date, Span]                                    # every day of ``days``
    whole: Span                                                 # the whole period
    tz: tzinfo | None = None
    period: str = "day"                                         # the main table's rows: day, week or month
    hours: list[Span] | None = None                             # the hours of one day (--hours)
    blocks: list[BlockSpan] | None = None                       # 5-hour blocks (--blocks)
    blocks_upstream: str | None = None                          # blocks of this upstream's answers only
    timings: Timings = field(default_factory=lambda: Timings([]))
    now: datetime = field(default_factory=utc_now)
    activations: list[Activation] = field(default_factory=list)
    attempts: list[UpstreamAttempts] = field(default_factory=list)     # every try, failed ones too
    unpriced: dict[str, int] = field(default_factory=dict)      # model -> tokens without a price
    count_tokens: int = 0
    notes: list[str] = field(default_factory=list)
    prices_as_of: str = prices.PRICES_AS_OF

    # ---- the period and its days
    @property
    def total(self) -> Totals:
        return self.whole.total

    @property
    def summary(self) -> dict[str, dict[str, Totals]]:
        """dimension -> label -> totals over the whole period."""
        return self.whole.groups

    @property
    def daily(self) -> dict[date, Totals]:
        return {d: self.by_day[d].total for d in self.days}

    @property
    def empty(self) -> bool:
        return self.total.requests == 0

    def groups(self, day: date) -> dict[str, Totals]:
        return self.by_day[day].groups[self.by] if self.by else {}

    @property
    def summarised(self) -> tuple[str, ...]:
        """The dimensions summarised in the output: sessions only when grouped by them (there are many)."""
        return SUMMARISED + ((self.by,) if self.by in ("session", "client") else ())

    def sessions(self, day: date | None = None) -> int:
        """Distinct sessions of a day (None: of the whole period)."""
        return (self.whole if day is None else self.by_day[day]).sessions()

    def hit_upstreams(self) -> list[str]:
        """Upstreams that saw prompt tokens in the period, busiest first: the per-upstream cache-hit view."""
        return [label for label, t in sorted_groups(self.summary["upstream"]) if t.prompt]

    def hit_by_upstream(self, day: date | Span) -> dict[str, float | None]:
        """Cache-hit ratio of each of ``hit_upstreams()`` on ``day`` (or in a row of the main
        view, a ``Span``; None: no prompt then)."""
        groups = (day if isinstance(day, Span) else self.by_day[day]).groups["upstream"]
        return {label: groups[label].cache_hit if label in groups else None for label in self.hit_upstreams()}

    # ---- the main table's rows
    @property
    def view(self) -> str:
        return "hour" if self.hours is not None else self.period

    def rows(self) -> list[Span]:
        """The spans the main table and the charts show: the hours of the day with --hours, else the
        days, weeks or months of the period (every one, idle ones included)."""
        if self.hours is not None:
            return self.hours
        if self.period == "day":
            return [self.by_day[d] for d in self.days]
        out = []
        for first, days in timeline.periods(self.days, self.period):
            span = Span(self.by_day[days[0]].start, self.by_day[days[-1]].end,
                        _period_label(first, days, self.period))
            for day in days:
                span.merge(self.by_day[day])
            out.append(span)
        return out

    # ---- latency
    def latency(self, span: Span | None = None) -> LatencyStats:
        """p50 / p95 of the successful requests in ``span`` (None: the whole period)."""
        return stats(self.timings.overall() if span is None else self.timings.between(span.start, span.end))

    def latency_by_upstream(self, span: Span | None = None) -> dict[str, LatencyStats]:
        timings = self.timings.overall() if span is None else self.timings.between(span.start, span.end)
        return Timings.by_upstream(timings)


def _period_label(first: date, days: list[date], period: str) -> str:
    """'2026-W10 03-02..03-08' (the days of the week the report covers), '2026-03', or '2026-03 05..31' for
    a month the report covers part of."""
    label = timeline.period_label(first, period)
    if period == "week":
        return f"{label} {days[0]:%m-%d}..{days[-1]:%m-%d}"
    if days[0] != first or days[-1] != timeline.period_end(first, period):
        return f"{label} {days[0]:%d}..{days[-1]:%d}"
    return label


def build_report(conn: LedgerReader | sqlite3.Connection, rules: Rules, since: date, until: date,
                 by: str | None = None, *, tz: tzinfo | None = None, db_path: str = "",
                 period: str = "day", hours_day: date | None = None, blocks: bool = False,
                 blocks_upstream: str | None = None, now: datetime | None = None) -> Report:
    """Read requests and activations between ``since`` and ``until`` (inclusive local days) from
    ``conn`` (a ``LedgerReader`` of SQLite or PostgreSQL, or a SQLite connection).
    ``tz``: default the rules' time zone, else the system's (DST-aware). ``period``: the main
    table's rows (day, week, month); ``hours_day``: split that day (one of the period's) by hour
    instead; ``blocks``: also the 5-hour blocks of the claude route (of ``blocks_upstream``'s
    answers only, when given) that overlap the period, active or not at ``now``."""
    if by is not None and by not in DIMENSIONS:
        raise ValueError(f"by must be one of {DIMENSIONS}")
    if period not in timeline.PERIODS:
        raise ValueError(f"period must be one of {timeline.PERIODS}")
    if hours_day is not None and not since <= hours_day <= until:
        raise ValueError("hours_day must be a day of the period")
    tz = tz if tz is not None else report_zone(rules)
    now = now or utc_now()
    days = [since + timedelta(days=i) for i in range((until - since).days + 1)]
    by_day = {d: Span(*timeline.day_bounds(d, tz), d.isoformat()) for d in days}
    whole = Span(by_day[since].start, by_day[until].end, f"{since}..{until}")
    hour_starts = timeline.day_hours(hours_day, tz) if hours_day else []
    hours = [Span(s, s + timeline.HOUR, label) for s, label in zip(hour_starts, timeline.hour_labels(hour_starts, tz))]
    reader = as_reader(conn, db_path)
    tables = reader.tables()
    pricer = Pricer(rules)
    count_tokens = 0
    unpriced: dict[str, int] = defaultdict(int)
    unknown_upstreams: set[str] = set()
    block_events: list[tuple[datetime, UsageRow]] = []
    unreadable: list[str] = []
    if "requests" in tables:
        before = BLOCKS_LOOKBACK_DAYS if blocks else 1
        for row, is_count in usage_rows(reader, since, until, tz, pricer, before, unreadable):
            in_period = since <= row.day <= until
            if is_count:     # rows come grouped by minute and model: a group counts its requests
                count_tokens += row.totals.requests if in_period else 0
                continue
            if blocks and row.route == BLOCKS_ROUTE and row.upstream is not None \
                    and blocks_upstream in (None, row.upstream):
                block_events.append((row.minute, row))
            if not in_period:
                continue
            by_day[row.day].add(row)
            if hours and row.day == hours_day:
                hours[bisect_right(hour_starts, row.minute) - 1].add(row)
            if row.totals.unpriced_tokens:
                unpriced[row.sent_model or row.model or NO_MODEL] += row.totals.unpriced_tokens   # as priced
            if row.upstream is not None and row.upstream not in pricer.multipliers:
                unknown_upstreams.add(row.upstream)

        for day in days:     # the whole period from its days: one merge per group, not one add per row
            whole.merge(by_day[day])

        unreadable += shapeless_times(reader, since, until, before)
    notes = []
    if unreadable:
        notes.append(f"{len(unreadable)} group(s) of requests left out: their time cannot be read "
                     f"(ts {shortened(repr(unreadable[0]), 40)}{' …' if len(unreadable) > 1 else ''})")
    if count_tokens:
        notes.append(f"{count_tokens} count_tokens request(s) left out of every figure")
    if unpriced:
        notes.append(f"no price for: {_unpriced_list(unpriced)}; their cost shows as '?' "
                     "(add them under prices: in rules.yaml)")
    if unknown_upstreams:
        notes.append("upstream(s) not in the rules, priced at list price: " + ", ".join(sorted(unknown_upstreams)))
    priced_mult = {name: m for name, m in pricer.multipliers.items() if m != 1.0 and name in whole.groups["upstream"]}
    if priced_mult:
        notes.append("price multipliers: " + ", ".join(f"{n} x{m:g}" for n, m in sorted(priced_mult.items())))

    return Report(
        since=since, until=until, tz_name=tz_label(rules, tz), by=by, db_path=db_path, days=days, by_day=by_day,
        whole=whole, tz=tz, period=period, hours=hours if hours_day else None,
        blocks=_blocks(block_events, whole, tz) if blocks else None, blocks_upstream=blocks_upstream,
        timings=read_timings(reader, since, until, tz) if "requests" in tables else Timings([]), now=now,
        activations=_activations(reader, tables, since, until, tz),
        attempts=read_attempts(reader, tables, since, until, tz), unpriced=dict(unpriced),
        count_tokens=count_tokens, notes=notes)


def _blocks(events: list[tuple[datetime, UsageRow]], whole: Span, tz: tzinfo | None) -> list[BlockSpan]:
    """The 5-hour blocks that overlap the period, each whole (also the part outside the period)."""
    out = []
    # the rows come in the order of their time's text, which a hand-written `2026-06-16 10:30`
    # (SQLite's own datetime()) puts before `2026-06-16T09:00`
    events.sort(key=lambda event: event[0])
    for block in timeline.five_hour_blocks(events):
        if block.end <= whole.start or block.start >= whole.end:
            continue
        span = BlockSpan(block.start, block.end, timeline.local(block.start, tz).strftime("%Y-%m-%d %H:%M"),
                         first=block.first, last=block.last)
        for row in block.items:
            span.add(row)
        out.append(span)
    return out


def _unpriced_list(unpriced: dict[str, int], shown: int = UNPRICED_SHOWN) -> str:
    """The models with the most unpriced tokens, then how many more (every one is in the JSON)."""
    ranked = sorted(unpriced.items(), key=lambda kv: (-kv[1], kv[0]))
    listed = ", ".join(f"{shortened(m)} ({fmt_tokens(n)} tokens)" for m, n in ranked[:shown])
    rest = ranked[shown:]
    if rest:
        listed += f" and {len(rest)} more ({fmt_tokens(sum(n for _, n in rest))} tokens)"
    return listed


def shortened(text: str, limit: int = 60) -> str:
    """`text` in at most `limit` characters, its end marked `…` when some is left out: a model name
    as a note or a chart shows it (a client can send any text as its model, and one of thousands of
    characters would push the rest off the page; the JSON has every name whole), a notification's
    reason."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def report_zone(rules: Rules) -> tzinfo | None:
    """The rules' zone; None = the system's local zone, looked up per moment (DST-aware),
    unlike ``Rules.tz``'s fixed offset of today."""
    return ZoneInfo(rules.timezone) if rules.timezone else None


def _activations(reader: LedgerReader, tables: set[str], since: date, until: date,
                 tz: tzinfo | None) -> list[Activation]:
    if "activations" not in tables:
        return []
    out: dict[str, Activation] = {}
    for ts, upstream, ok, status, error in read_rows(reader, ACTIVATIONS_SQL, since, until):
        moment = row_moment(ts, [])
        when = moment.astimezone(tz) if moment is not None else None
        if when is None or not since <= when.date() <= until:
            continue
        a = out.get(upstream)
        if a is None:
            a = out[upstream] = Activation(upstream, when, bool(ok), None)
        if when >= a.last_probe:
            a.last_probe, a.last_ok = when, bool(ok)
            a.last_error = None if ok else (error or (f"HTTP {status}" if status else "failed"))
        if ok:
            a.ok += 1
        else:
            a.failed += 1
    return sorted(out.values(), key=lambda a: a.upstream)


def tz_label(rules: Rules, tz: tzinfo | None) -> str:
    if rules.timezone:
        return rules.timezone
    named = getattr(zone(None), "key", None)   # the machine's zone by name: its offset changes with DST
    if named:
        return f"local time, {named}"
    offset = utc_now().astimezone(tz).utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"local time, UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def fmt_tokens(n: int) -> str:
    """Token count for people: 9999, 12.3K, 4.56M, 1.20B, 1.00T."""
    if n < 10_000:
        return str(n)
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.{1 if unit == 'K' else 2}f}{unit}"
    return str(n)  # pragma: no cover
