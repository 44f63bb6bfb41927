"""What ``ccswitch report`` reports: the ``Report`` data model and ``build_report``, which
reads the usage database and prices it. Rendering and the command line are in report.py.

Days are days in the rules' time zone; prices come from the built-in table (prices.py),
rules.yaml ``prices:`` overrides and each upstream's ``price_multiplier``. Cost is computed
here, at report time, from the billed model (``upstream_model``, else ``model``).

``count_tokens`` requests are left out of every figure (only a note counts them).
A failover is a request that took more than one upstream attempt; an error is a request
with an ``error`` or a status >= 400. Cache-hit % = cache_read / (input + cache_write +
cache_read), i.e. the share of the whole prompt that was read from cache. A move is a request
whose session (affinity) was bound to one upstream and got its answer from another
(``affinity = 'moved'``). A database older than the session columns reads as "no session".
"""
from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from ccswitch.clock import utc_now
from ccswitch.config.models import Rules
from ccswitch.ledger.schema import columns
from ccswitch.report import prices

DIMENSIONS = ("model", "upstream", "route", "session")
SUMMARISED = ("model", "upstream", "route")     # always summarised; sessions only when grouped by them
NO_UPSTREAM = "(ccswitch)"      # requests ccswitch answered itself
NO_MODEL = "(no model)"
NO_SESSION = "(no session)"
UNPRICED_SHOWN = 5              # unpriced models named in the report's note; the rest are counted


@dataclass
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
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict:
        return {
            "requests": self.requests, "input_tokens": self.input, "output_tokens": self.output,
            "cache_write_tokens": self.cache_write, "cache_write_1h_tokens": self.cache_write_1h,
            "cache_read_tokens": self.cache_read, "reasoning_tokens": self.reasoning,
            "cache_hit": None if self.cache_hit is None else round(self.cache_hit, 6),
            "cost_usd": round(self.cost, 6), "unpriced_tokens": self.unpriced_tokens,
            "failovers": self.failovers, "errors": self.errors, "moved": self.moved,
        }


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
    daily: dict[date, Totals]
    daily_groups: dict[str, dict[date, dict[str, Totals]]]      # dimension -> day -> label -> totals
    summary: dict[str, dict[str, Totals]]                       # dimension -> label -> totals
    total: Totals
    activations: list[Activation] = field(default_factory=list)
    unpriced: dict[str, int] = field(default_factory=dict)      # model -> tokens without a price
    count_tokens: int = 0
    notes: list[str] = field(default_factory=list)
    prices_as_of: str = prices.PRICES_AS_OF

    @property
    def empty(self) -> bool:
        return self.total.requests == 0

    def groups(self, day: date) -> dict[str, Totals]:
        return self.daily_groups[self.by].get(day, {}) if self.by else {}

    @property
    def summarised(self) -> tuple[str, ...]:
        """The dimensions summarised in the output: sessions only when grouped by them (there are many)."""
        return SUMMARISED + (("session",) if self.by == "session" else ())

    def sessions(self, day: date | None = None) -> int:
        """Distinct sessions of a day (None: of the whole period)."""
        groups = self.summary["session"] if day is None else self.daily_groups["session"].get(day, {})
        return sum(1 for label in groups if label != NO_SESSION)

    def hit_upstreams(self) -> list[str]:
        """Upstreams that saw prompt tokens in the period, busiest first: the per-upstream cache-hit view."""
        return [label for label, t in sorted_groups(self.summary["upstream"]) if t.prompt]

    def hit_by_upstream(self, day: date) -> dict[str, float | None]:
        """Cache-hit ratio of each of ``hit_upstreams()`` on ``day`` (None: no prompt that day)."""
        groups = self.daily_groups["upstream"].get(day, {})
        return {label: groups[label].cache_hit if label in groups else None for label in self.hit_upstreams()}


# --------------------------------------------------------------------------- queries

def _parse_utc(text: str) -> datetime:
    dt = datetime.fromisoformat(text.strip().replace(" ", "T").replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _rows(conn: sqlite3.Connection, sql: str, since: date, until: date) -> Iterator[tuple]:
    # UTC ISO text sorts by time: widen by a day each side (time zones), filter local days later
    yield from conn.execute(sql, ((since - timedelta(days=1)).isoformat(), (until + timedelta(days=2)).isoformat()))


_REQUESTS_SQL = """
SELECT substr(ts, 1, 16) AS minute, route, upstream, COALESCE(NULLIF(upstream_model, ''), model), {session},
       endpoint = 'count_tokens', count(*),
       sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens),
       sum(min(cache_creation_1h_tokens, cache_creation_tokens)), sum(cache_read_tokens),
       sum(reasoning_tokens), sum(attempts > 1), sum(error IS NOT NULL OR coalesce(status, 0) >= 400),
       {moved}
FROM requests
WHERE ts >= ? AND ts < ?
GROUP BY 1, 2, 3, 4, 5, 6
"""


def _requests_sql(conn: sqlite3.Connection) -> str:
    """The query for the columns this file has: a database older than session affinity
    (read-only, so not migrated) reads as requests without a session."""
    has = columns(conn, "requests")
    return _REQUESTS_SQL.format(session="session" if "session" in has else "NULL",
                                moved="sum(affinity = 'moved')" if "affinity" in has else "0")

_ACTIVATIONS_SQL = """
SELECT ts, upstream, ok, status, error FROM activations
WHERE ts >= ? AND ts < ? ORDER BY ts
"""


def _multipliers(rules: Rules) -> dict[str, float]:
    return {up.name: up.price_multiplier for up in rules.upstreams}


def build_report(conn: sqlite3.Connection, rules: Rules, since: date, until: date,
                 by: str | None = None, *, tz: tzinfo | None = None, db_path: str = "") -> Report:
    """Read requests and activations between ``since`` and ``until`` (inclusive local days).
    ``tz``: default the rules' time zone, else the system's (DST-aware)."""
    if by is not None and by not in DIMENSIONS:
        raise ValueError(f"by must be one of {DIMENSIONS}")
    tz = tz if tz is not None else report_zone(rules)
    days = [since + timedelta(days=i) for i in range((until - since).days + 1)]
    tables = _tables(conn)
    buckets: dict[tuple[date, str, str | None, str | None, str | None], Totals] = defaultdict(Totals)
    count_tokens = 0
    if "requests" in tables:
        for (minute, route, upstream, model, session, is_count, n, inp, out, cw, cw1h, cr, reas, fo, err, moved) in \
                _rows(conn, _requests_sql(conn), since, until):
            day = _parse_utc(minute).astimezone(tz).date()
            if not since <= day <= until:
                continue
            if is_count:
                count_tokens += n
                continue
            t = buckets[(day, route, upstream, model, session)]
            t.add(Totals(n, inp or 0, out or 0, cw or 0, cw1h or 0, cr or 0, reas or 0, fo or 0, err or 0,
                         moved or 0))

    mult = _multipliers(rules)
    unknown_upstreams: set[str] = set()
    unpriced: dict[str, int] = defaultdict(int)
    daily: dict[date, Totals] = {d: Totals() for d in days}
    daily_groups: dict[str, dict[date, dict[str, Totals]]] = {dim: defaultdict(lambda: defaultdict(Totals)) for dim in DIMENSIONS}
    summary: dict[str, dict[str, Totals]] = {dim: defaultdict(Totals) for dim in DIMENSIONS}
    total = Totals()
    ordered = sorted(buckets.items(), key=lambda kv: (kv[0][0], *(x or "" for x in kv[0][1:])))
    for (day, route, upstream, model, session), t in ordered:
        if upstream is not None and upstream not in mult:
            unknown_upstreams.add(upstream)
        usd = prices.cost(model, t.input, t.output, t.cache_write, t.cache_write_1h, t.cache_read,
                          mult.get(upstream or "", 1.0), rules.prices)
        if usd is None:
            if t.tokens:
                t.unpriced_tokens = t.tokens
                unpriced[model or NO_MODEL] += t.tokens
        else:
            t.cost = usd
        labels = {"model": model or NO_MODEL, "upstream": upstream or NO_UPSTREAM, "route": route,
                  "session": session or NO_SESSION}
        for dim in DIMENSIONS:
            daily_groups[dim][day][labels[dim]].add(t)
            summary[dim][labels[dim]].add(t)
        daily[day].add(t)
        total.add(t)

    notes = []
    if count_tokens:
        notes.append(f"{count_tokens} count_tokens request(s) left out of every figure")
    if unpriced:
        notes.append(f"no price for: {_unpriced_list(unpriced)}; their cost shows as '?' "
                     "(add them under prices: in rules.yaml)")
    if unknown_upstreams:
        notes.append("upstream(s) not in the rules, priced at list price: " + ", ".join(sorted(unknown_upstreams)))
    priced_mult = {name: m for name, m in mult.items() if m != 1.0 and name in summary["upstream"]}
    if priced_mult:
        notes.append("price multipliers: " + ", ".join(f"{n} x{m:g}" for n, m in sorted(priced_mult.items())))

    return Report(
        since=since, until=until, tz_name=tz_label(rules, tz), by=by, db_path=db_path, days=days,
        daily=daily, daily_groups={dim: {d: dict(g) for d, g in v.items()} for dim, v in daily_groups.items()},
        summary={dim: dict(v) for dim, v in summary.items()}, total=total,
        activations=_activations(conn, tables, since, until, tz), unpriced=dict(unpriced),
        count_tokens=count_tokens, notes=notes)


def _unpriced_list(unpriced: dict[str, int], shown: int = UNPRICED_SHOWN) -> str:
    """The models with the most unpriced tokens, then how many more (every one is in the JSON)."""
    ranked = sorted(unpriced.items(), key=lambda kv: (-kv[1], kv[0]))
    listed = ", ".join(f"{m} ({fmt_tokens(n)} tokens)" for m, n in ranked[:shown])
    rest = ranked[shown:]
    if rest:
        listed += f" and {len(rest)} more ({fmt_tokens(sum(n for _, n in rest))} tokens)"
    return listed


def report_zone(rules: Rules) -> tzinfo | None:
    """The rules' zone; None = the system's local zone, looked up per moment (DST-aware),
    unlike ``Rules.tz``'s fixed offset of today."""
    return ZoneInfo(rules.timezone) if rules.timezone else None


def _activations(conn: sqlite3.Connection, tables: set[str], since: date, until: date,
                 tz: tzinfo | None) -> list[Activation]:
    if "activations" not in tables:
        return []
    out: dict[str, Activation] = {}
    for ts, upstream, ok, status, error in _rows(conn, _ACTIVATIONS_SQL, since, until):
        when = _parse_utc(ts).astimezone(tz)
        if not since <= when.date() <= until:
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
    offset = utc_now().astimezone(tz).utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"local time, UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def fmt_tokens(n: int) -> str:
    """Token count for people: 9999, 12.3K, 4.56M, 1.20B."""
    if n < 10_000:
        return str(n)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.{1 if unit == 'K' else 2}f}{unit}"
    return str(n)  # pragma: no cover


def sorted_groups(groups: Mapping[str, Totals]) -> list[tuple[str, Totals]]:
    return sorted(groups.items(), key=lambda kv: (-kv[1].cost, -kv[1].tokens, -kv[1].requests, kv[0]))
