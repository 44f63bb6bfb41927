"""`ccswitch report` (and `scripts/report.py`): arguments, the rules and database to read, output."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import date, timedelta
from pathlib import Path

from ccswitch.cli.out_dir import cannot_write
from ccswitch.cli.output import quiet_on_broken_pipe
from ccswitch.cli.rules_file import MarkedEnv, find_announced, named_file, unset_in
from ccswitch.clock import utc_now
from ccswitch.config.database_url import PostgresURL, parse_usage_db
from ccswitch.config.models import Rules
from ccswitch.config.values import RulesError
from ccswitch.ledger.reading import LedgerReadError, exists, open_reader
from ccswitch.report.data import DIMENSIONS, Report, build_report, report_zone
from ccswitch.report.text import activation_lines, render_table, report_json
from ccswitch.report.timeline import PERIODS, period_start

_UNTIL = object()        # --hours without a day: the --until day, else today (not a str: argparse would parse it)


def terminal_columns() -> int | None:
    """The width the text report's tables fit: the terminal's (or `COLUMNS`), None for a file or a
    pipe (whole lines, for tools that read them)."""
    if "COLUMNS" in os.environ or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


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
    p.add_argument("--rules", metavar="PATH", type=named_file,
                   help="rules.yaml for prices, database and time zone (default: as mitmdump finds it)")
    p.add_argument("--db", metavar="PATH|URL", type=named_file,
                   help="usage database: a SQLite file or a postgresql:// URL (default: the rules' usage_db)")
    p.add_argument("--days", type=_positive, metavar="N", help="days up to --until (default 30)")
    p.add_argument("--since", type=_day, metavar="YYYY-MM-DD", help="first day (days are local to the rules' time zone)")
    p.add_argument("--until", type=_day, metavar="YYYY-MM-DD", help="last day (default today)")
    p.add_argument("--by", choices=DIMENSIONS,
                   help="split each row by model (as the client named it; what it was sent upstream as is shown "
                        "beside it), upstream, route, session or client key")
    p.add_argument("--period", choices=PERIODS, default="day",
                   help="one row per day (default), week (Monday first) or month; the first row starts on the "
                        "period's first day")
    p.add_argument("--hours", nargs="?", const=_UNTIL, type=_day, metavar="DAY",
                   help="one row per hour of DAY (default --until, else today) instead of one per day")
    p.add_argument("--blocks", nargs="?", const="", metavar="UPSTREAM",
                   help="also list the 5-hour blocks of the claude route (Claude subscription windows), of "
                        "UPSTREAM's answers only when given")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--out", metavar="DIR", type=named_file, help="write PNG charts and report.html into this directory")


# the days a report can cover: their local midnights, a week or month around them and the few days
# read on either side must all be dates Python can hold (years 1..9999)
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


def _beyond_reach(option: str, day: date) -> str | None:
    if FIRST_DAY <= day <= LAST_DAY:
        return None
    return f"{option} {day}: a report covers the days from {FIRST_DAY} to {LAST_DAY}"


def _period(args: argparse.Namespace, today: date) -> tuple[date, date, date | None] | str:
    """(since, until, the day to split by hour) from the options, or what is wrong with them."""
    hours = args.hours
    if hours is not None:
        if args.period != "day":
            return "--hours shows one day: it cannot be combined with --period"
        if args.days is not None:
            return "--hours shows one day: give the day to --hours instead of --days"
        if args.since:
            return "--hours shows one day: give the day to --hours instead of --since"
        day = (args.until or today) if hours is _UNTIL else hours
        return _beyond_reach("--hours", day) or (day, day, day)
    until = args.until or today
    if wrong := _beyond_reach("--until", until) or (args.since and _beyond_reach("--since", args.since)):
        return wrong
    days = 30 if args.days is None else args.days
    if not args.since and days - 1 > (until - FIRST_DAY).days:
        return f"--days {days}: a report covers the days from {FIRST_DAY} to {LAST_DAY}"
    since = args.since or (until - timedelta(days=days - 1))
    if since > until:
        return f"--since {since} is after --until {until}"
    return period_start(since, args.period), until, None


def _load_rules(option: str | None) -> Rules:
    # an unset ${VAR} elsewhere (an upstream's key) does not matter here; the ledger's is named
    return find_announced(option, env=MarkedEnv())[0]     # says on stderr which file: stdout may be --json


def run(args: argparse.Namespace) -> int:
    try:
        rules = _load_rules(args.rules)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    tz = report_zone(rules)
    today = utc_now().astimezone(tz).date()
    period = _period(args, today)
    if isinstance(period, str):
        print(period, file=sys.stderr)
        return 1
    since, until, hours_day = period
    if args.blocks and args.blocks not in {up.name for up in rules.upstreams}:
        print(f"note: no upstream named {args.blocks!r} in the rules; blocks count its answers in the database",
              file=sys.stderr)
    try:
        db = parse_usage_db(args.db) if args.db else rules.usage_db
    except ValueError as exc:
        print(f"--db: {exc}", file=sys.stderr)
        return 1
    if not args.db and (unset := unset_in(db.conninfo if isinstance(db, PostgresURL) else str(db))):
        print(f"usage_db needs {', '.join('${' + name + '}' for name in unset)}, which "
              f"{'is' if len(unset) == 1 else 'are'} not set in this shell (or pass --db)", file=sys.stderr)
        return 1
    if not exists(db):
        print(f"{db} is a folder, not a usage database (--db names the file)" if isinstance(db, Path) and db.is_dir()
              else f"no usage database at {db} (ccswitch writes one once it has routed a request)", file=sys.stderr)
        return 1
    try:
        with open_reader(db) as reader:
            tables = reader.tables()     # none at all: an empty database, which has no requests
            ours = {"requests": {"ts", "route", "model"}, "activations": {"ts", "upstream"}}
            if tables and not any(name in tables and need <= reader.columns(name) for name, need in ours.items()):
                print(f"{db} holds no ccswitch usage tables: it is not a ccswitch ledger", file=sys.stderr)
                return 1
            report = build_report(reader, rules, since, until, args.by, tz=tz, db_path=str(db), period=args.period,
                                  hours_day=hours_day, blocks=args.blocks is not None,
                                  blocks_upstream=args.blocks or None)
    except LedgerReadError as exc:              # names the database, never its password
        print(f"cannot read usage database: {exc}", file=sys.stderr)
        return 1

    if report.empty and not report.blocks:
        message = f"no requests between {since} and {until} ({report.tz_name}) in {db}"
        if args.json:
            print(json.dumps(report_json(report), indent=2))
        print(message, file=sys.stderr if args.json else sys.stdout)
        if report.count_tokens and not args.json:     # the only kind there was: not "nothing at all"
            print(f"({report.count_tokens} count_tokens request(s), which the report leaves out of every figure)")
        if report.activations and not args.json:
            print("\nActivation probes:\n" + "\n".join(activation_lines(report)))
        return 0
    written = None
    if args.out:                                 # before the table: a reader that stops early (| head) keeps them
        out_dir = Path(args.out).expanduser()
        try:
            written = _write_out(report, out_dir)
        except OSError as exc:
            print(cannot_write("--out", out_dir, exc), file=sys.stderr)
            return 1
    print(json.dumps(report_json(report), indent=2) if args.json else render_table(report, terminal_columns()))
    if written:
        print(written, file=sys.stderr if args.json else sys.stdout)
    return 0


def _write_out(report: Report, out_dir: Path) -> str:
    """The charts and report.html in out_dir; what was written, for the user."""
    from ccswitch.report.charts import write_charts
    from ccswitch.report.html import write_html
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = write_charts(report, out_dir)
    return f"wrote {len(charts)} chart(s) and {write_html(report, charts, out_dir)}"


def build_parser(prog: str = "ccswitch report") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Daily usage, cost, failovers and errors from ccswitch's usage database.")
    add_arguments(p)
    return p


def main(argv: list[str] | None = None, prog: str = "ccswitch report") -> int:
    return quiet_on_broken_pipe(lambda: run(build_parser(prog).parse_args(argv)))
