"""`ccswitch report` (and `scripts/report.py`): arguments, the rules and database to read, output."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from pathlib import Path

from ccswitch.cli.rules_file import find_announced
from ccswitch.clock import utc_now
from ccswitch.config.models import Rules, RulesError
from ccswitch.ledger.schema import connect
from ccswitch.report.data import DIMENSIONS, build_report, report_zone
from ccswitch.report.text import activation_lines, render_table, report_json


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
    p.add_argument("--by", choices=DIMENSIONS, help="split each day by model, upstream, route or session")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--out", metavar="DIR", help="write PNG charts and report.html into this directory")


def _load_rules(option: str | None) -> Rules:
    return find_announced(option, env=_AnyEnv())[0]     # says on stderr which file: stdout may be --json


def run(args: argparse.Namespace) -> int:
    try:
        rules = _load_rules(args.rules)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    tz = report_zone(rules)
    today = utc_now().astimezone(tz).date()
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
        from ccswitch.report.charts import write_charts
        from ccswitch.report.html import write_html
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
