"""`ccswitch report` and session affinity: --by session, moved sessions, cache hit per day and upstream."""
from __future__ import annotations

import itertools
import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from ccswitch.cli import report as report_cli
from ccswitch.config.load import parse_rules
from ccswitch.ledger import schema
from ccswitch.report import terminal, text
from ccswitch.report.data import NO_SESSION, Report, build_report
from ccswitch.report.html import render_html
from tests.unit.report.test_report import RULES, insert_request, write_rules

MAR1, MAR2 = date(2026, 3, 1), date(2026, 3, 2)
LONG = "user_" + "ab" * 32 + "_account__session_0b5e7c1e-3a4f-4c6d-9e8f-123456789abc"

# Asia/Shanghai days: 01:00-05:00 UTC is the same local day.
ROWS = [
    # Mar 1: session A starts on relay-a, stays, then moves to the official upstream; B starts there
    dict(ts="2026-03-01T01:00:00.000+00:00", upstream="relay-a", session="A", affinity="new",
         input_tokens=1000),
    dict(ts="2026-03-01T01:10:00.000+00:00", upstream="relay-a", session="A", affinity="kept",
         input_tokens=100, cache_read_tokens=900),
    dict(ts="2026-03-01T01:20:00.000+00:00", upstream="anthropic-official", session="A", affinity="moved",
         attempts=2, input_tokens=500, cache_creation_tokens=500),
    dict(ts="2026-03-01T02:00:00.000+00:00", upstream="anthropic-official", session=LONG, affinity="new",
         input_tokens=200, cache_read_tokens=800),
    dict(ts="2026-03-01T03:00:00.000+00:00", upstream="relay-a", input_tokens=300, cache_read_tokens=700),
    # Mar 2: A kept on official; the long session moves to relay-a and stays; C is answered by ccswitch
    dict(ts="2026-03-02T01:00:00.000+00:00", upstream="anthropic-official", session="A", affinity="kept",
         input_tokens=100, cache_read_tokens=1900),
    dict(ts="2026-03-02T02:00:00.000+00:00", upstream="relay-a", session=LONG, affinity="moved",
         input_tokens=50, cache_creation_tokens=150, cache_read_tokens=300),
    dict(ts="2026-03-02T02:10:00.000+00:00", upstream="relay-a", session=LONG, affinity="kept",
         cache_read_tokens=1000),
    dict(ts="2026-03-02T03:00:00.000+00:00", upstream=None, session="C", status=503, attempts=0,
         error="no upstream available"),
]

# hand-computed cache hit = cache_read / (input + cache_write + cache_read)
HIT = {
    (MAR1, "relay-a"): (900 + 700) / (1000 + 100 + 300 + 900 + 700),               # 1600 / 3000
    (MAR1, "anthropic-official"): 800 / (500 + 200 + 500 + 800),                    # 800 / 2000
    (MAR2, "relay-a"): (300 + 1000) / (50 + 150 + 300 + 1000),                      # 1300 / 1500
    (MAR2, "anthropic-official"): 1900 / 2000,
}


def insert(conn: sqlite3.Connection, n: int, session: str | None = None, affinity: str | None = None,
           **row) -> None:
    request_id = f"s{n}"
    insert_request(conn, n, request_id=request_id, model="claude-sonnet-4-5", **row)
    conn.execute("UPDATE requests SET session = ?, affinity = ? WHERE request_id = ?", (session, affinity, request_id))


@pytest.fixture
def session_db(tmp_path: Path) -> Path:
    path = tmp_path / "usage.db"
    conn = schema.connect(str(path))
    for i, row in enumerate(ROWS):
        insert(conn, i, **row)
    conn.close()
    return path


def build(path: Path, by: str | None = None, **kw) -> Report:
    conn = schema.connect(str(path), readonly=True)
    try:
        return build_report(conn, parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"}), MAR1, MAR2, by,
                            db_path=str(path), **kw)
    finally:
        conn.close()


def run_cli(tmp_path: Path, db: Path, *args: str) -> int:
    return report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db),
                            "--since", str(MAR1), "--until", str(MAR2), *args])


def test_moved_requests_per_day_and_in_total(session_db):
    r = build(session_db)
    assert (r.daily[MAR1].moved, r.daily[MAR2].moved, r.total.moved) == (1, 1, 2)
    assert (r.sessions(MAR1), r.sessions(MAR2), r.sessions()) == (2, 3, 3)
    assert r.summary["upstream"]["anthropic-official"].moved == 1 and r.summary["upstream"]["relay-a"].moved == 1


def test_cache_hit_per_day_and_upstream_matches_hand_computed_values(session_db):
    r = build(session_db)
    for day in (MAR1, MAR2):
        got = r.hit_by_upstream(day)
        assert set(got) == {"relay-a", "anthropic-official"}       # (ccswitch) saw no prompt tokens
        for upstream, ratio in got.items():
            assert ratio == pytest.approx(HIT[(day, upstream)]), (day, upstream)
    assert r.daily[MAR1].cache_hit == pytest.approx(2400 / 5000)
    assert r.daily[MAR2].cache_hit == pytest.approx(3200 / 3500)


def test_by_session_groups_each_day_and_sums_the_period(session_db):
    r = build(session_db, by="session")
    assert set(r.groups(MAR1)) == {"A", LONG, NO_SESSION}
    assert set(r.groups(MAR2)) == {"A", LONG, "C"}
    s = r.summary["session"]
    assert (s["A"].requests, s["A"].moved, s["A"].failovers) == (4, 1, 1)
    assert (s[LONG].requests, s[LONG].moved, s[LONG].cache_read) == (3, 1, 2100)
    assert (s["C"].requests, s["C"].errors) == (1, 1)
    assert s[NO_SESSION].requests == 1


def test_by_session_table_shortens_long_keys_and_names_the_rest(session_db):
    out = text.render_table(build(session_db, by="session"))
    short = terminal.short_label(LONG)
    assert len(short) == terminal.LABEL_WIDTH and short.startswith("user_abab") and short.endswith("123456789abc")
    assert LONG not in out and f"  {short}" in out and "(no session)" in out
    assert "By session:" in out and "3 session(s)" in out
    header = out.splitlines()[2].split()
    assert header[-1] == "Moved"


def test_table_has_a_moved_column_and_a_per_upstream_hit_grid(session_db):
    out = text.render_table(build(session_db))
    lines = out.splitlines()
    total = next(line for line in lines if line.startswith("Total"))
    assert total.split()[-1] == "2"                               # moved in the period
    grid = lines[lines.index("Cache hit % per day and upstream:") + 1:]
    assert grid[0].split() == ["Day", "anthropic-official", "relay-a"]   # costliest first, as in "By upstream"
    assert grid[2].split() == ["2026-03-01", "Sun", "40.0%", "53.3%"]
    assert grid[3].split() == ["2026-03-02", "Mon", "95.0%", "86.7%"]


def test_the_hit_grid_has_the_main_views_rows(session_db):
    # a 17-month report by month printed 493 rows of days in its grid
    report = build(session_db, period="month")
    out = text.render_table(report)
    lines = out.splitlines()
    grid = lines[lines.index("Cache hit % per month and upstream:") + 1:]
    rows = list(itertools.takewhile(str.strip, grid[2:]))
    assert grid[0].split() == ["Month", "anthropic-official", "relay-a"]
    assert [row.split()[0] for row in rows] == ["2026-03"]                    # one row for the month, not each day
    assert "<h2>Cache hit per month and upstream</h2>" in render_html(report, [])


def test_by_upstream_shows_the_hit_per_day_in_its_groups_instead_of_the_grid(session_db):
    out = text.render_table(build(session_db, by="upstream"))
    assert "Cache hit % per day and upstream:" not in out
    day2 = out.split("2026-03-02 Mon")[1]
    relay = next(line for line in day2.splitlines() if line.startswith("  relay-a"))
    assert "86.7%" in relay.split()


def test_json_by_session_with_hits_moved_and_sessions(session_db, tmp_path, capsys):
    assert run_cli(tmp_path, session_db, "--json", "--by", "session") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["moved"] == 2 and data["sessions"] == 3
    d1, d2 = data["days"]
    assert (d1["moved"], d1["sessions"], d2["moved"], d2["sessions"]) == (1, 2, 1, 3)
    assert d1["cache_hit_by_upstream"] == {"relay-a": pytest.approx(1600 / 3000, abs=1e-6),
                                           "anthropic-official": pytest.approx(0.4)}
    assert d2["cache_hit_by_upstream"]["relay-a"] == pytest.approx(1300 / 1500, abs=1e-6)
    assert d2["groups"][LONG]["moved"] == 1                       # JSON keeps the whole key
    assert set(data["summary"]) == {"model", "upstream", "route", "session"}
    assert data["summary"]["session"]["A"]["requests"] == 4


def test_json_without_by_session_leaves_the_session_summary_out(session_db, tmp_path, capsys):
    assert run_cli(tmp_path, session_db, "--json", "--by", "upstream") == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["summary"]) == {"model", "upstream", "route"}
    assert data["days"][1]["groups"]["anthropic-official"]["cache_hit"] == pytest.approx(0.95)


def test_html_shows_moved_sessions_and_the_hit_grid(session_db):
    page = render_html(build(session_db, by="session"), [])
    assert "<th>Moved</th>" in page and "moved (session left its upstream)" in page
    assert "<h2>Cache hit per day and upstream</h2>" in page and "<td>53.3%</td>" in page
    assert "<h2>By session</h2>" in page and LONG not in page
    assert "<h2>By session</h2>" not in render_html(build(session_db), [])


def test_a_version_1_database_read_only_reports_no_sessions(tmp_path, capsys):
    """The report opens the file read-only, so it is not migrated: it must read it as it is."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(schema.migration_sql(1) + "; PRAGMA user_version = 1;")
    for i, row in enumerate(ROWS):
        row = {k: v for k, v in row.items() if k not in ("session", "affinity")}
        insert_request(conn, i, model="claude-sonnet-4-5", **row)
    conn.close()
    assert run_cli(tmp_path, path, "--json", "--by", "session") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["requests"] == len(ROWS) and data["totals"]["moved"] == 0 and data["sessions"] == 0
    assert set(data["summary"]["session"]) == {NO_SESSION}
    assert data["days"][0]["cache_hit_by_upstream"]["relay-a"] == pytest.approx(1600 / 3000, abs=1e-6)
    probe = sqlite3.connect(path)
    assert probe.execute("PRAGMA user_version").fetchone()[0] == 1           # left as it was
    assert run_cli(tmp_path, path) == 0 and "Total" in capsys.readouterr().out


def test_wide_characters_in_names_keep_the_columns_in_line():
    # an emoji or CJK name takes two terminal columns: padded by len(), its row's columns shifted
    lines = text._grid("Model", [("🦄-unicorn", ["1", "2"]), ("会话-x", ["3", "4"]), ("plain", ["5", "6"])],
                       columns=("A", "B"))
    ends = {terminal.width(line) for line in lines}
    assert len(ends) == 1 and terminal.width("🦄会e\u0301") == 5
