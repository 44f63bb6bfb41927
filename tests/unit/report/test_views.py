"""`ccswitch report` views beside the days: --by model (the client's model and what it was sent as),
--hours, --period week|month, --blocks, latency / time to first byte, one cost precision per table,
and `| head` without a traceback. Expectations are computed by hand from small ledgers."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ccswitch.cli import report as report_cli
from ccswitch.config.load import parse_rules
from ccswitch.ledger.schema import connect
from ccswitch.money import cost_digits
from ccswitch.report import text
from ccswitch.report.charts import CHART_FILES, hit_limits, write_charts
from ccswitch.report.data import Report, build_report
from ccswitch.report.html import render_html
from tests.support import REPO as ROOT
from tests.unit.report.test_report import RULES, insert_request, make_60_day_db, write_rules

NEW_YORK_RULES = RULES.replace("Asia/Shanghai", "America/New_York")
FEB23, FEB28, MAR1, MAR2 = date(2026, 2, 23), date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 2)


def make_db(tmp_path: Path, rows: list[dict], name: str = "usage.db") -> Path:
    path = tmp_path / name
    conn = connect(str(path))
    for i, row in enumerate(rows):
        insert_request(conn, i, **{"upstream": "relay-a", "model": "claude-haiku-4-5", **row})
    conn.close()
    return path


def build(path: Path, since: date, until: date, rules: str = RULES, **kw) -> Report:
    conn = connect(str(path), readonly=True)
    try:
        return build_report(conn, parse_rules(rules, env={"RELAY_A_KEY_FOR_TEST": "x"}), since, until,
                            db_path=str(path), **kw)
    finally:
        conn.close()


def cli(tmp_path: Path, db: Path, *args: str) -> int:
    return report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db), *args])


# --------------------------------------------------------------------------- weeks, months and hours (Shanghai)

TIMES = [
    dict(ts="2026-02-28T15:30:00.000+00:00", input_tokens=1000),     # Sat Feb 28 23:30 local
    dict(ts="2026-02-28T16:30:00.000+00:00", input_tokens=100),      # Sun Mar 1 00:30 local (UTC: still February)
    dict(ts="2026-03-01T15:30:00.000+00:00", input_tokens=1),        # Sun Mar 1 23:30 local
    dict(ts="2026-03-01T16:30:00.000+00:00", input_tokens=10),       # Mon Mar 2 00:30 local (UTC: still Sunday)
    dict(ts="2026-03-02T01:59:00.000+00:00", input_tokens=20000, upstream="anthropic-official"),  # 09:59 local
    dict(ts="2026-03-02T02:00:00.000+00:00", input_tokens=300),      # 10:00 local
]


@pytest.fixture
def times_db(tmp_path: Path) -> Path:
    return make_db(tmp_path, TIMES)


def test_weeks_start_on_monday_in_the_rules_zone(times_db):
    r = build(times_db, FEB23, MAR2, period="week")
    rows = r.rows()
    assert [s.label for s in rows] == ["2026-W09 02-23..03-01", "2026-W10 03-02..03-02"]
    assert [s.total.input for s in rows] == [1000 + 100 + 1, 10 + 20000 + 300]
    assert sum(s.total.requests for s in rows) == r.total.requests == 6


def test_months_in_the_rules_zone(times_db):
    r = build(times_db, date(2026, 2, 1), MAR2, period="month")
    assert [(s.label, s.total.input) for s in r.rows()] == [("2026-02", 1000), ("2026-03 01..02", 20411)]


def test_cli_period_starts_on_the_periods_first_day(times_db, tmp_path, capsys):
    assert cli(tmp_path, times_db, "--period", "week", "--since", "2026-02-25", "--until", "2026-03-02",
               "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["since"] == "2026-02-23" and data["view"] == "week"
    first, second = data["periods"]
    assert (first["period"], first["first_day"], first["last_day"], first["input_tokens"]) == \
        ("2026-W09", "2026-02-23", "2026-03-01", 1101)
    assert (second["period"], second["first_day"], second["input_tokens"]) == ("2026-W10", "2026-03-02", 20310)
    assert first["start"] == "2026-02-23T00:00:00+08:00" and second["end"] == "2026-03-03T00:00:00+08:00"
    assert cli(tmp_path, times_db, "--period", "month", "--since", "2026-02-25", "--until", "2026-03-02") == 0
    out = capsys.readouterr().out
    assert "by month" in out and "\nMonth " in out and "\n2026-02 " in out and "\n2026-03 01..02 " in out


def test_hours_of_one_day(times_db):
    r = build(times_db, MAR2, MAR2, hours_day=MAR2)
    assert len(r.hours) == 24 and r.view == "hour"
    busy = [(s.label, s.total.input) for s in r.rows() if s.total.requests]
    assert busy == [("00:00", 10), ("09:00", 20000), ("10:00", 300)]
    out = text.render_table(r)
    assert "\nHour " in out and "(21 hour(s) without requests not shown)" in out
    assert "\n09:00 " in out and "2026-03-02 Mon" not in out.split("By upstream:")[0]
    # a day under way: its hours yet to come are not "without requests"
    r.now = datetime(2026, 3, 2, 10, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert "(8 hour(s) without requests not shown)" in text.render_table(r)
    # the hour that begins at this very moment has come: it counts
    r.now = datetime(2026, 3, 2, 11, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert "(9 hour(s) without requests not shown)" in text.render_table(r)


def test_cli_hours_json_and_option_errors(times_db, tmp_path, capsys):
    assert cli(tmp_path, times_db, "--hours", "--until", "2026-03-02", "--json", "--by", "upstream") == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["since"], data["until"], data["view"]) == ("2026-03-02", "2026-03-02", "hour")
    nine = data["hours"][9]
    assert (nine["hour"], nine["start"], nine["input_tokens"]) == ("09:00", "2026-03-02T09:00:00+08:00", 20000)
    assert set(nine["groups"]) == {"anthropic-official"} and data["hours"][3]["requests"] == 0
    assert cli(tmp_path, times_db, "--hours", "2026-03-01", "--period", "week") == 1
    assert "cannot be combined with --period" in capsys.readouterr().err
    assert cli(tmp_path, times_db, "--hours", "2026-03-01", "--since", "2026-02-01") == 1
    assert "instead of --since" in capsys.readouterr().err
    assert cli(tmp_path, times_db, "--hours", "--days", "3") == 1
    assert "instead of --days" in capsys.readouterr().err


def test_cli_without_days_or_since_reports_the_30_days_up_to_until(times_db, tmp_path, capsys):
    assert cli(tmp_path, times_db, "--until", "2026-03-02", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["since"], data["until"]) == ("2026-02-01", "2026-03-02")


def test_hours_on_the_day_the_clocks_go_back(tmp_path):
    db = make_db(tmp_path, [dict(ts="2026-11-01T05:30:00.000+00:00", input_tokens=1),     # 01:30 EDT
                            dict(ts="2026-11-01T06:30:00.000+00:00", input_tokens=2)])    # 01:30 EST
    day = date(2026, 11, 1)
    r = build(db, day, day, NEW_YORK_RULES, hours_day=day)
    assert len(r.hours) == 25
    assert [(s.label, s.total.input) for s in r.hours[1:3]] == [("01:00 EDT", 1), ("01:00 EST", 2)]


# --------------------------------------------------------------------------- latency and time to first byte

def _timed(minute: int, **row) -> dict:
    return {"ts": f"2026-03-02T01:{minute:02d}:00.000+00:00", **row}


LATENCY = [
    *(_timed(i, latency_ms=100 * (i + 1), ttfb_ms=10 * (i + 1)) for i in range(10)),     # relay-a 100..1000
    _timed(10, upstream="anthropic-official", latency_ms=2000, ttfb_ms=500),
    dict(ts="2026-03-01T01:00:00.000+00:00", latency_ms=777, ttfb_ms=77),                # Mar 1
    # not timed: not a successful answer, or not counted at all
    _timed(20, latency_ms=50000, error="client_closed"),
    _timed(21, upstream=None, status=503, attempts=0, error="no upstream available", latency_ms=1),
    _timed(22, status=529, error="overloaded", latency_ms=40000),
    _timed(23, endpoint="count_tokens", latency_ms=30000),
    _timed(24, status=None, latency_ms=60000),
    _timed(25, endpoint="websocket", status=426, latency_ms=3000),
]


@pytest.fixture
def latency_db(tmp_path: Path) -> Path:
    return make_db(tmp_path, LATENCY)


def test_latency_percentiles_per_day_and_upstream(latency_db):
    r = build(latency_db, MAR1, MAR2)
    day = r.latency(r.by_day[MAR2])
    # 100..1000 and 2000: p50 is the 6th of 11, p95 the 11th (ceil(10.45))
    assert (day.requests, day.latency_p50, day.latency_p95, day.ttfb_p50, day.ttfb_p95) == (11, 600, 2000, 60, 500)
    by = r.latency_by_upstream(r.by_day[MAR2])
    assert list(by) == ["relay-a", "anthropic-official"]
    assert (by["relay-a"].latency_p50, by["relay-a"].latency_p95, by["relay-a"].ttfb_p50, by["relay-a"].ttfb_p95) == \
        (500, 1000, 50, 100)
    assert (by["anthropic-official"].latency_p50, by["anthropic-official"].ttfb_p95) == (2000, 500)
    assert r.latency(r.by_day[MAR1]).latency_p50 == 777
    whole = r.latency()                                   # 12 values, 777 among them: 6th = 600, 12th = 2000
    assert (whole.requests, whole.latency_p50, whole.latency_p95) == (12, 600, 2000)


def test_latency_in_the_table_and_json(latency_db, tmp_path, capsys):
    out = text.render_table(build(latency_db, MAR1, MAR2, by="upstream"))
    section = out.split("Latency and time to first byte (successful answers; p50 / p95):\n")[1]
    lines = section.splitlines()
    assert lines[0].split() == ["Day", "Timed", "Latency", "p50", "Latency", "p95", "TTFB", "p50", "TTFB", "p95"]
    assert lines[4].split() == ["2026-03-02", "Mon", "11", "600ms", "2.00s", "60ms", "500ms"]
    assert lines[5].split() == ["relay-a", "10", "500ms", "1.00s", "50ms", "100ms"]
    all_row = next(line for line in lines if line.startswith("All"))
    assert all_row.split() == ["All", "12", "600ms", "2.00s", "60ms", "500ms"]
    assert cli(tmp_path, latency_db, "--since", "2026-03-01", "--until", "2026-03-02", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["latency"]["requests"] == 12 and data["latency"]["latency_p95_ms"] == 2000
    assert data["days"][1]["latency"]["ttfb_p50_ms"] == 60
    assert data["days"][1]["latency"]["by_upstream"]["relay-a"]["latency_p95_ms"] == 1000
    assert data["days"][0]["latency"]["by_upstream"] == {"relay-a": {
        "requests": 1, "latency_p50_ms": 777, "latency_p95_ms": 777, "ttfb_p50_ms": 77, "ttfb_p95_ms": 77}}


def test_fmt_ms():
    assert [text.fmt_ms(v) for v in (None, 0, 999, 1000, 1234, 9999, 10000, 65432)] == \
        ["-", "0ms", "999ms", "1.00s", "1.23s", "10.00s", "10.0s", "65.4s"]


# --------------------------------------------------------------------------- the client's model and what it was sent as

MODELS = [
    dict(ts="2026-03-02T01:00:00.000+00:00", model="claude-sonnet-4-5", upstream_model="claude-haiku-4-5",
         input_tokens=1000),
    dict(ts="2026-03-02T01:01:00.000+00:00", model="claude-sonnet-4-5", upstream_model="claude-haiku-4-5",
         input_tokens=1000),
    dict(ts="2026-03-02T01:02:00.000+00:00", model="claude-sonnet-4-5", upstream="anthropic-official",
         upstream_model="claude-sonnet-4-5", input_tokens=1000),
    dict(ts="2026-03-02T01:03:00.000+00:00", model="claude-sonnet-4-5", upstream=None, status=503, attempts=0,
         error="no upstream available"),
    dict(ts="2026-03-02T01:04:00.000+00:00", route="codex", endpoint="responses", upstream="openai-official",
         model="gpt-5", upstream_model="gpt-5", input_tokens=1000),
]


def test_by_model_groups_by_the_clients_model_and_prices_what_was_sent(tmp_path):
    r = build(make_db(tmp_path, MODELS), MAR2, MAR2, by="model")
    assert set(r.summary["model"]) == {"claude-sonnet-4-5", "gpt-5"}
    sonnet = r.summary["model"]["claude-sonnet-4-5"]
    assert (sonnet.requests, sonnet.errors) == (4, 1)
    sent = r.whole.sent_as["claude-sonnet-4-5"]
    assert {k: v.requests for k, v in sent.items()} == {"claude-haiku-4-5": 2, "claude-sonnet-4-5": 1}
    # haiku 4.5 at $1/M through relay-a (x0.3); sonnet 4.5 at $3/M at list price
    assert sent["claude-haiku-4-5"].cost == pytest.approx(2 * 1000 * 1 / 1e6 * 0.3, abs=1e-12)
    assert sonnet.cost == pytest.approx(0.0006 + 0.003, abs=1e-12)
    assert not r.whole.renamed("gpt-5")
    out = text.render_table(r)
    assert "  claude-sonnet-4-5 -> claude-haiku-4-5, claude-sonnet-4-5" in out     # the day's group row
    summary = out.split("By model:\n")[1].splitlines()
    assert summary[0].split()[:5] == ["Model", "Sent", "upstream", "as", "Requests"]
    assert summary[2].split()[:4] == ["claude-sonnet-4-5", "claude-haiku-4-5,", "claude-sonnet-4-5", "4"]
    assert summary[3].split()[:2] == ["gpt-5", "1"]                                # sent as named: nothing beside
    page = render_html(r, [])
    assert '<th style="text-align:left">Sent upstream as</th>' in page and "claude-haiku-4-5, claude-sonnet-4-5</td>" in page


def test_by_model_json_lists_the_upstream_models(tmp_path, capsys):
    db = make_db(tmp_path, MODELS)
    assert cli(tmp_path, db, "--since", "2026-03-02", "--until", "2026-03-02", "--json", "--by", "model") == 0
    data = json.loads(capsys.readouterr().out)
    sonnet = data["summary"]["model"]["claude-sonnet-4-5"]
    assert list(sonnet["upstream_models"]) == ["claude-sonnet-4-5", "claude-haiku-4-5"]       # costliest first
    assert sonnet["upstream_models"]["claude-haiku-4-5"]["requests"] == 2
    assert data["days"][0]["groups"]["gpt-5"]["upstream_models"] == {"gpt-5": pytest.approx(
        data["summary"]["model"]["gpt-5"]["upstream_models"]["gpt-5"])}


# --------------------------------------------------------------------------- one cost precision per table

@pytest.mark.parametrize(("costs", "digits"), [
    ([], 2), ([0.0], 2), ([1.5, 0.05], 2), ([0.01], 2), ([0.0070], 4), ([0.0070, 12.0], 4), ([0.00015], 5),
    ([0.001], 4), ([0.0015], 4), ([0.0000001], 6),
])
def test_cost_digits(costs, digits):
    assert cost_digits(costs) == digits


def test_the_total_and_the_headline_use_the_tables_precision(tmp_path):
    db = make_db(tmp_path, [
        dict(ts="2026-03-01T01:00:00.000+00:00", upstream="anthropic-official", input_tokens=7000),   # $0.0070
        dict(ts="2026-03-02T01:00:00.000+00:00", upstream="anthropic-official", input_tokens=5300),   # $0.0053
        dict(ts="2026-03-02T02:00:00.000+00:00", route="chat", endpoint="chat", upstream="relay-b",
             model="mystery-1", input_tokens=10)])
    r = build(db, MAR1, MAR2)
    lines = text.render_table(r).splitlines()
    cells = lambda start: next(line for line in lines if line.startswith(start)).split()
    assert "$0.0070" in cells("2026-03-01") and "$0.0053+?" in cells("2026-03-02")
    assert "$0.0123+?" in cells("Total")                            # was "$0.01+?"
    assert "$0.0123" in cells("anthropic-official")                 # a summary never shows fewer decimals
    assert '<b>$0.0123+?</b><span>cost (USD)</span>' in render_html(r, [])


# --------------------------------------------------------------------------- 5-hour blocks

BLOCK_ROWS = [
    dict(ts="2026-02-28T13:00:00.000+00:00", input_tokens=1000),          # Feb 28 21:00 local: a block long gone
    dict(ts="2026-03-01T14:30:00.000+00:00", upstream=None, status=503, attempts=0,
         error="no upstream available"),                                   # answered by ccswitch: starts nothing
    dict(ts="2026-03-01T15:10:00.000+00:00", input_tokens=1),             # Mar 1 23:10 local
    dict(ts="2026-03-01T17:00:00.000+00:00", route="codex", endpoint="responses", upstream="openai-official",
         model="gpt-5", input_tokens=5000),                                # not the claude route
    dict(ts="2026-03-01T19:59:00.000+00:00", upstream="anthropic-official", input_tokens=10),   # Mar 2 03:59
    dict(ts="2026-03-01T20:00:00.000+00:00", input_tokens=100),           # Mar 2 04:00: the next block
]
NOW = datetime(2026, 3, 1, 22, 47, tzinfo=UTC)                            # Mar 2 06:47 local


@pytest.fixture
def blocks_db(tmp_path: Path) -> Path:
    return make_db(tmp_path, BLOCK_ROWS)


def test_blocks_across_midnight_shown_whole(blocks_db):
    r = build(blocks_db, MAR2, MAR2, blocks=True, now=NOW)
    local = lambda m: m.astimezone(r.tz).strftime("%m-%d %H:%M")
    assert [(local(b.start), local(b.end), b.total.requests, b.total.input) for b in r.blocks] == [
        ("03-01 23:00", "03-02 04:00", 2, 11),        # starts the evening before the period, shown whole
        ("03-02 04:00", "03-02 09:00", 1, 100)]
    assert r.total.requests == 3 and r.total.input == 10 + 5000 + 100      # the period counts its own day only
    assert [b.active(NOW) for b in r.blocks] == [False, True]
    out = text.render_table(r)
    assert "5-hour blocks (claude route, any upstream; times in Asia/Shanghai):" in out
    row = next(line for line in out.splitlines() if line.startswith("2026-03-02 04:00"))
    assert row.split()[:3] == ["2026-03-02", "04:00", "2026-03-02"] and row.endswith("active, 2h 13m left")
    data = text.report_json(r)
    assert data["blocks"][0]["start"] == "2026-03-01T23:00:00+08:00"
    assert data["blocks"][0]["first_request"] == "2026-03-01T23:10:00+08:00"
    assert data["blocks"][0]["last_request"] == "2026-03-02T03:59:00+08:00"
    assert (data["blocks"][1]["active"], data["blocks"][1]["minutes_left"]) == (True, 133)
    assert (data["blocks"][0]["active"], data["blocks"][0]["minutes_left"]) == (False, None)
    page = render_html(r, [])
    assert '<tr class="active">' in page and "5-hour blocks" in page


def test_blocks_of_one_upstream(blocks_db):
    r = build(blocks_db, MAR2, MAR2, blocks=True, blocks_upstream="relay-a", now=NOW)
    assert [(b.total.requests, b.total.input) for b in r.blocks] == [(1, 1), (1, 100)]
    assert "answered by relay-a" in text.blocks_title(r)


def test_blocks_over_the_clock_change(tmp_path):
    db = make_db(tmp_path, [dict(ts="2026-03-08T05:30:00.000+00:00"),      # 00:30 EST
                            dict(ts="2026-03-08T09:50:00.000+00:00"),      # 05:50 EDT
                            dict(ts="2026-03-08T10:10:00.000+00:00")])     # 06:10 EDT
    day = date(2026, 3, 8)
    r = build(db, day, day, NEW_YORK_RULES, blocks=True, now=NOW)
    rows = text.block_rows(r)
    assert [r_[:3] for r_ in rows] == [["2026-03-08 00:00", "2026-03-08 06:00", "2"],   # five real hours
                                       ["2026-03-08 06:00", "2026-03-08 11:00", "1"]]


def test_cli_blocks(blocks_db, tmp_path, capsys):
    assert cli(tmp_path, blocks_db, "--since", "2026-03-02", "--until", "2026-03-02", "--blocks", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [b["requests"] for b in data["blocks"]] == [2, 1] and data["blocks_upstream"] is None
    assert cli(tmp_path, blocks_db, "--since", "2026-03-02", "--until", "2026-03-02", "--blocks", "nobody") == 0
    captured = capsys.readouterr()
    assert "no upstream named 'nobody'" in captured.err and "(no claude requests in the period)" in captured.out


# --------------------------------------------------------------------------- charts and | head

def test_hit_axis_is_zoomed_to_the_data():
    nan = float("nan")
    assert hit_limits([55.0, nan, 88.5]) == (50, 95)
    assert hit_limits([97.0, 99.0]) == (90, 100)
    assert hit_limits([2.0, 3.0]) == (0, 10)
    assert hit_limits([nan]) == (0, 100)


@pytest.mark.parametrize("kw", [dict(hours_day=MAR2), dict(period="week")])
def test_charts_of_hours_and_weeks(times_db, tmp_path, kw):
    import matplotlib.image as mpimg
    since = MAR2 if "hours_day" in kw else FEB23
    paths = write_charts(build(times_db, since, MAR2, **kw), tmp_path / "charts")
    assert [p.name for p in paths] == list(CHART_FILES)
    for path in paths:
        img = mpimg.imread(path)
        assert img.shape[1] == 1100 and img[..., :3].std() > 0.05, path.name


@pytest.fixture(scope="module")
def sixty_days(tmp_path_factory) -> list[str]:
    tmp = tmp_path_factory.mktemp("pipe")
    db = make_60_day_db(tmp / "usage.db")
    return ["--rules", str(write_rules(tmp)), "--db", str(db), "--since", "2026-09-02", "--until", "2026-10-31"]


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "ccswitch.cli.app", "report"],          # the `ccswitch` entry point
    [sys.executable, str(ROOT / "scripts" / "report.py")],
])
def test_a_reader_that_stops_early_gets_no_traceback(sixty_days, command, tmp_path):
    """`ccswitch report | head -1`: the table (85 KB with --by model) is more than a pipe holds, so the
    command is still writing when the reader leaves."""
    proc = subprocess.Popen([*command, *sixty_days, "--by", "model"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert first.startswith(b"ccswitch usage 2026-09-02 .. 2026-10-31")
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_totals_add_every_field():
    # `add` names its fields one by one (for speed): a field added to Totals must be added there too
    from dataclasses import fields

    from ccswitch.report.totals import Totals
    names = [f.name for f in fields(Totals)]
    one = Totals(**{name: (i + 1) * (0.5 if name == "cost" else 1) for i, name in enumerate(names)})
    total = Totals()
    total.add(one)
    total.add(one)
    assert all(getattr(total, name) == 2 * getattr(one, name) for name in names)


@pytest.mark.parametrize("by", ["model", "session"])
def test_a_clients_control_characters_are_shown_as_escapes_never_obeyed_by_the_terminal(tmp_path, by):
    evil = "evil\x1b[2J\x1b[31mRED\nnext-line\u202e"
    db = make_db(tmp_path, [dict(ts="2026-03-02T02:00:00.000+00:00", input_tokens=300, model=evil, session=evil)])
    out = text.render_table(build(db, MAR2, MAR2, by=by))
    assert "\x1b" not in out and "\u202e" not in out and "next-line" in out
    assert not any(line.startswith("next-line") for line in out.splitlines())   # the row is one line
    assert "evil\\x1b[2J" in out


def test_a_request_no_upstream_answered_costs_nothing_whatever_model_it_named(tmp_path):
    rows = [dict(ts="2026-03-02T02:00:00.000+00:00", upstream=None, model=model, status=status)
            for model, status in ((None, 401), ("no-such-model-7", 429), ("claude-haiku-4-5", 503))]
    rows.append(dict(ts="2026-03-02T02:00:00.000+00:00", model="no-such-model-7", input_tokens=5))
    out = text.report_json(build(make_db(tmp_path, rows), MAR2, MAR2))
    assert out["totals"]["requests"] == 4 and out["totals"]["unpriced_requests"] == 1   # only the answered one


def test_money_reads_zero_as_zero_thousands_with_commas_and_tells_near_amounts_apart():
    from ccswitch.money import usd
    assert usd(0.0, 5.0) == ("$0.00", "$5.00")
    assert usd(1234.5) == ("$1,234.50",)
    assert usd(0.001001, 0.001002) == ("$0.001001", "$0.001002")     # the sixth decimal, no fewer


def test_an_upstream_has_one_colour_in_every_chart(tmp_path, monkeypatch):
    """The cost chart coloured upstreams by name, the latency chart by how busy they were: the same
    upstream had two colours on one page."""
    import matplotlib.axes

    from ccswitch.report import charts
    db = make_db(tmp_path, [*(dict(ts=f"2026-03-02T0{h}:00:00.000+00:00", input_tokens=10 ** 6, upstream="relay-a")
                              for h in (1, 2, 3)),
                            dict(ts="2026-03-02T04:00:00.000+00:00", input_tokens=10, upstream="anthropic-official")])
    report = build(db, MAR2, MAR2)
    drawn: dict[str, set] = {}
    real_plot, real_bar = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.bar

    def plot(self, *args, **kw):
        drawn.setdefault(str(kw.get("label", "")).removesuffix(" p50"), set()).add(tuple(kw.get("color") or ()))
        return real_plot(self, *args, **kw)

    def bar(self, *args, **kw):
        drawn.setdefault(str(kw.get("label", "")), set()).add(tuple(kw.get("color") or ()))
        return real_bar(self, *args, **kw)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", bar)
    charts.chart_cost(report, tmp_path / "cost.png")
    charts.chart_latency(report, tmp_path / "latency.png")
    charts.chart_cache_hit(report, tmp_path / "cache_hit.png")     # per upstream, as the tables beside it
    assert drawn.keys() >= {"relay-a", "anthropic-official", "all requests"}
    # relay-a costs most and answered most (first in the latency chart, second by name): one colour each
    assert len(drawn["relay-a"]) == 1 and len(drawn["anthropic-official"]) == 1
    assert drawn["relay-a"] != drawn["anthropic-official"]


def test_the_cost_chart_s_grey_bar_says_how_many_upstreams_it_holds(tmp_path, monkeypatch):
    import matplotlib.axes

    from ccswitch.report import charts
    db = make_db(tmp_path, [dict(ts="2026-03-02T01:00:00.000+00:00", input_tokens=1000 * (i + 1), upstream=f"up-{i}")
                            for i in range(10)])
    labels = []
    real_bar = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar",
                        lambda self, *a, **kw: labels.append(kw.get("label")) or real_bar(self, *a, **kw))
    charts.chart_cost(build(db, MAR2, MAR2), tmp_path / "cost.png")
    assert labels[-1] == "3 other upstreams" and len(labels) == charts.MAX_SERIES      # 7 named, then the rest
    page = render_html(build(make_db(tmp_path, [dict(ts="2026-03-02T01:00:00.000+00:00", cache_creation_tokens=1_264_586,
                                                     cache_creation_1h_tokens=1_264_586)], "h.db"), MAR2, MAR2), [])
    assert "1-hour writes (1.26M tokens" in page


def test_twenty_upstreams_have_twenty_colours(tmp_path):
    from ccswitch.report.charts import upstream_colors
    db = make_db(tmp_path, [dict(ts="2026-03-02T01:00:00.000+00:00", input_tokens=1000 * (i + 1), upstream=f"up-{i}")
                            for i in range(20)])
    colors = upstream_colors(build(db, MAR2, MAR2), [f"up-{i}" for i in range(20)])
    assert len(set(colors.values())) == 20
