"""`ccswitch report`: daily usage, cost, failovers and errors from the usage database.

This file owns the command and its text output: the terminal table (``render_table``), the
JSON document (``report_json``), argument parsing and ``main``. What is counted and priced,
and how (``Report``, ``Totals``, ``build_report``), lives in report_data.py; those names are
importable from here too.

Pieces: ``build_report(conn, rules, since, until, by)`` (report_data.py: queries -> Report),
``render_table(report)``, ``report_json(report)``, ``write_charts(report, out_dir)``
(report_charts.py), ``write_html(report, charts, out_dir)`` (report_html.py), ``main(argv)``.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from .report_data import DIMENSIONS, Report, Totals, build_report, fmt_tokens, report_zone
from .rules import Rules, RulesError
from .rules_load import default_rules_text, load_rules, parse_rules, resolve_rules_path
from .usage.schema import connect

# --------------------------------------------------------------------------- text output

def fmt_cost(t: Totals) -> str:
    if t.unpriced_tokens and not t.cost:
        return "?"
    text = f"${t.cost:,.2f}" if t.cost >= 0.01 or t.cost == 0 else f"${t.cost:.4f}"
    return text + ("+?" if t.unpriced_tokens else "")


def fmt_hit(t: Totals) -> str:
    return "-" if t.cache_hit is None else f"{t.cache_hit * 100:.1f}%"


COLUMNS = ("Requests", "Input", "Output", "Cache write", "Cache read", "Hit %", "Cost USD", "Failovers", "Errors")


def row_cells(t: Totals) -> list[str]:
    return [str(t.requests), fmt_tokens(t.input), fmt_tokens(t.output), fmt_tokens(t.cache_write),
            fmt_tokens(t.cache_read), fmt_hit(t), fmt_cost(t), str(t.failovers), str(t.errors)]


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
