"""`ccswitch report`: daily usage, cost, failovers and errors from the usage database.

Days are days in the rules' time zone; prices come from the built-in table (prices.py),
rules.yaml ``prices:`` overrides and each upstream's ``price_multiplier``. Cost is computed
here, at report time, from the billed model (``upstream_model``, else ``model``).

``count_tokens`` requests are left out of every figure (only a note counts them).
A failover is a request that took more than one upstream attempt; an error is a request
with an ``error`` or a status >= 400. Cache-hit % = cache_read / (input + cache_write +
cache_read), i.e. the share of the whole prompt that was read from cache.

Pieces: ``build_report(conn, rules, since, until, by)`` (queries -> Report),
``render_table(report)``, ``report_json(report)``, ``write_charts(report, out_dir)``
(report_charts.py), ``write_html(report, charts, out_dir)`` (report_html.py), ``main(argv)``.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from . import prices
from .rules import Rules, RulesError, default_rules_text, load_rules, parse_rules, resolve_rules_path
from .usage.schema import connect

DIMENSIONS = ("model", "upstream", "route")
NO_UPSTREAM = "(ccswitch)"      # requests ccswitch answered itself
NO_MODEL = "(no model)"


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
            "failovers": self.failovers, "errors": self.errors,
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
SELECT substr(ts, 1, 16) AS minute, route, upstream, COALESCE(NULLIF(upstream_model, ''), model),
       endpoint = 'count_tokens', count(*),
       sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens),
       sum(min(cache_creation_1h_tokens, cache_creation_tokens)), sum(cache_read_tokens),
       sum(reasoning_tokens), sum(attempts > 1), sum(error IS NOT NULL OR coalesce(status, 0) >= 400)
FROM requests
WHERE ts >= ? AND ts < ?
GROUP BY 1, 2, 3, 4, 5
"""

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
    buckets: dict[tuple[date, str, str | None, str | None], Totals] = defaultdict(Totals)
    count_tokens = 0
    if "requests" in tables:
        for (minute, route, upstream, model, is_count, n, inp, out, cw, cw1h, cr, reas, fo, err) in \
                _rows(conn, _REQUESTS_SQL, since, until):
            day = _parse_utc(minute).astimezone(tz).date()
            if not since <= day <= until:
                continue
            if is_count:
                count_tokens += n
                continue
            t = buckets[(day, route, upstream, model)]
            t.add(Totals(n, inp or 0, out or 0, cw or 0, cw1h or 0, cr or 0, reas or 0, fo or 0, err or 0))

    mult = _multipliers(rules)
    unknown_upstreams: set[str] = set()
    unpriced: dict[str, int] = defaultdict(int)
    daily: dict[date, Totals] = {d: Totals() for d in days}
    daily_groups: dict[str, dict[date, dict[str, Totals]]] = {dim: defaultdict(lambda: defaultdict(Totals)) for dim in DIMENSIONS}
    summary: dict[str, dict[str, Totals]] = {dim: defaultdict(Totals) for dim in DIMENSIONS}
    total = Totals()
    for (day, route, upstream, model), t in sorted(buckets.items(), key=lambda kv: (kv[0][0], *(x or "" for x in kv[0][1:]))):
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
        labels = {"model": model or NO_MODEL, "upstream": upstream or NO_UPSTREAM, "route": route}
        for dim in DIMENSIONS:
            daily_groups[dim][day][labels[dim]].add(t)
            summary[dim][labels[dim]].add(t)
        daily[day].add(t)
        total.add(t)

    notes = []
    if count_tokens:
        notes.append(f"{count_tokens} count_tokens request(s) left out of every figure")
    if unpriced:
        listed = ", ".join(f"{m} ({_tok(n)} tokens)" for m, n in sorted(unpriced.items(), key=lambda kv: -kv[1]))
        notes.append(f"no price for: {listed}; their cost shows as '?' (add them under prices: in rules.yaml)")
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
    offset = datetime.now(UTC).astimezone(tz).utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"local time, UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


# --------------------------------------------------------------------------- text output

def _tok(n: int) -> str:
    if n < 10_000:
        return str(n)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.{1 if unit == 'K' else 2}f}{unit}"
    return str(n)  # pragma: no cover


def fmt_cost(t: Totals) -> str:
    if t.unpriced_tokens and not t.cost:
        return "?"
    text = f"${t.cost:,.2f}" if t.cost >= 0.01 or t.cost == 0 else f"${t.cost:.4f}"
    return text + ("+?" if t.unpriced_tokens else "")


def fmt_hit(t: Totals) -> str:
    return "-" if t.cache_hit is None else f"{t.cache_hit * 100:.1f}%"


COLUMNS = ("Requests", "Input", "Output", "Cache write", "Cache read", "Hit %", "Cost USD", "Failovers", "Errors")


def row_cells(t: Totals) -> list[str]:
    return [str(t.requests), _tok(t.input), _tok(t.output), _tok(t.cache_write), _tok(t.cache_read),
            fmt_hit(t), fmt_cost(t), str(t.failovers), str(t.errors)]


def _grid(head: str, rows: list[tuple[str, list[str]]], rules_before: set[int] = frozenset()) -> list[str]:
    cols = [head, *COLUMNS]
    widths = [max(len(c), *(len(r[0]) if i == 0 else len(r[1][i - 1]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    sep = "  ".join("-" * w for w in widths)
    out = [line(cols), sep]
    for i, (label, cells) in enumerate(rows):
        if i in rules_before:
            out.append(sep)
        out.append(line([label, *cells]))
    return out


def _sorted_groups(groups: Mapping[str, Totals]) -> list[tuple[str, Totals]]:
    return sorted(groups.items(), key=lambda kv: (-kv[1].cost, -kv[1].tokens, -kv[1].requests, kv[0]))


def render_table(report: Report) -> str:
    out = [(f"ccswitch usage {report.since} .. {report.until} ({report.tz_name}); "
            f"database {report.db_path or '?'}; prices as of {report.prices_as_of}"), ""]
    rows: list[tuple[str, list[str]]] = []
    for day in report.days:
        t = report.daily[day]
        if not t.requests:
            continue
        rows.append((day.strftime("%Y-%m-%d %a"), row_cells(t)))
        for label, g in _sorted_groups(report.groups(day)):
            rows.append(("  " + label, row_cells(g)))
    idle = sum(1 for d in report.days if not report.daily[d].requests)
    rows.append(("Total", row_cells(report.total)))
    out += _grid("Day", rows, {len(rows) - 1})
    if idle:
        out.append(f"({idle} day(s) without requests not shown)")
    dim = report.by or "upstream"
    out += ["", f"By {dim}:"]
    out += _grid(dim.capitalize(), [(label, row_cells(t)) for label, t in _sorted_groups(report.summary[dim])])
    if report.activations:
        out += ["", "Activation probes:"]
        out += activation_lines(report)
    if report.notes:
        out += ["", *(f"note: {n}" for n in report.notes)]
    return "\n".join(out)


def activation_rows(report: Report) -> list[list[str]]:
    return [[a.upstream, a.last_probe.strftime("%Y-%m-%d %H:%M"), "ok" if a.last_ok else f"failed ({a.last_error})",
             str(a.ok), str(a.failed)] for a in report.activations]


ACTIVATION_COLUMNS = ("Upstream", "Last probe", "Last result", "OK", "Failed")


def activation_lines(report: Report) -> list[str]:
    rows = [list(ACTIVATION_COLUMNS), *activation_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(ACTIVATION_COLUMNS))]
    fmt = lambda r: "  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return [fmt(rows[0]), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows[1:])]


def report_json(report: Report) -> dict:
    return {
        "since": report.since.isoformat(), "until": report.until.isoformat(), "timezone": report.tz_name,
        "database": report.db_path, "prices_as_of": report.prices_as_of, "by": report.by,
        "totals": report.total.to_dict(),
        "days": [{"day": d.isoformat(), **report.daily[d].to_dict(),
                  **({"groups": {k: v.to_dict() for k, v in _sorted_groups(report.groups(d))}} if report.by else {})}
                 for d in report.days],
        "summary": {dim: {k: v.to_dict() for k, v in _sorted_groups(report.summary[dim])} for dim in DIMENSIONS},
        "activations": [{"upstream": a.upstream, "last_probe": a.last_probe.isoformat(), "last_ok": a.last_ok,
                         "last_error": a.last_error, "ok": a.ok, "failed": a.failed} for a in report.activations],
        "unpriced_models": report.unpriced, "count_tokens_requests": report.count_tokens, "notes": report.notes,
    }


# --------------------------------------------------------------------------- command line

class _AnyEnv(Mapping[str, str]):
    """The report never uses secrets: a missing ${VAR} in rules.yaml must not stop it."""

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, "unset")

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-05") from None


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of days")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", metavar="PATH", help="rules.yaml for prices, database and time zone (default: as mitmdump finds it)")
    p.add_argument("--db", metavar="PATH", help="usage database (default: the rules' usage_db)")
    p.add_argument("--days", type=_positive, default=30, metavar="N", help="days up to --until (default 30)")
    p.add_argument("--since", type=_day, metavar="YYYY-MM-DD", help="first day (days are local to the rules' time zone)")
    p.add_argument("--until", type=_day, metavar="YYYY-MM-DD", help="last day (default today)")
    p.add_argument("--by", choices=DIMENSIONS, help="split each day by model, upstream or route")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--out", metavar="DIR", help="write PNG charts and report.html into this directory")


def _load_rules(option: str | None) -> Rules:
    path = resolve_rules_path(option, Path.cwd(), Path.home())
    if path is None:
        return parse_rules(default_rules_text(), "<built-in default>")
    if not path.exists():
        raise RulesError([f"{path}: no such file"])
    return load_rules(path, env=_AnyEnv())


def run(args: argparse.Namespace) -> int:
    try:
        rules = _load_rules(args.rules)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    tz = report_zone(rules)
    today = datetime.now(UTC).astimezone(tz).date()
    until = args.until or today
    since = args.since or (until - timedelta(days=args.days - 1))
    if since > until:
        print(f"--since {since} is after --until {until}", file=sys.stderr)
        return 1
    db = Path(args.db).expanduser() if args.db else rules.usage_db
    if not db.is_file():
        print(f"no usage database at {db} (ccswitch writes one once it has routed a request)", file=sys.stderr)
        return 1
    try:
        conn = connect(str(db), readonly=True)
        try:
            report = build_report(conn, rules, since, until, args.by, tz=tz, db_path=str(db))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        print(f"cannot read usage database {db}: {exc}", file=sys.stderr)
        return 1

    if report.empty:
        message = f"no requests between {since} and {until} ({report.tz_name}) in {db}"
        if args.json:
            print(json.dumps(report_json(report), indent=2))
        print(message, file=sys.stderr if args.json else sys.stdout)
        if report.activations and not args.json:
            print("\nActivation probes:\n" + "\n".join(activation_lines(report)))
        return 0
    print(json.dumps(report_json(report), indent=2) if args.json else render_table(report))
    if args.out:
        from .report_charts import write_charts
        from .report_html import write_html
        out_dir = Path(args.out).expanduser()
        out_dir.mkdir(parents=True, exist_ok=True)
        charts = write_charts(report, out_dir)
        html = write_html(report, charts, out_dir)
        print(f"wrote {len(charts)} chart(s) and {html}", file=sys.stderr if args.json else sys.stdout)
    return 0


def build_parser(prog: str = "ccswitch report") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Daily usage, cost, failovers and errors from ccswitch's usage database.")
    add_arguments(p)
    return p


def main(argv: list[str] | None = None, prog: str = "ccswitch report") -> int:
    try:
        return run(build_parser(prog).parse_args(argv))
    except BrokenPipeError:                      # `... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
