"""The same rows written by the ledger to SQLite and to a real PostgreSQL read back the same:
the report in every view (JSON and table), `ccswitch report --db postgresql://…`, the month's
spend that budgets start from (the activator's seed: tests/mitm/test_activator_postgres.py)."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ccswitch.cli import report as report_cli
from ccswitch.config.database_url import PostgresURL
from ccswitch.config.load import parse_rules
from ccswitch.ledger.reading import open_reader
from ccswitch.ledger.writer import Ledger
from ccswitch.report.data import build_report
from ccswitch.report.spend import ledger_spend
from ccswitch.report.text import render_table, report_json

RULES = """\
timezone: Asia/Shanghai
upstreams:
  - {name: official, protocol: anthropic, base_url: "https://api.anthropic.com", auth: client}
  - {name: relay-a, protocol: anthropic, base_url: "https://relay-a.example.com", api_key: k, price_multiplier: 0.3,
     activate_at: ["06:00"]}
  - {name: codex, protocol: openai-responses, base_url: "https://api.openai.com/v1", auth: client}
  - {name: relay-b, protocol: openai-chat, base_url: "https://relay-b.example.com/v1", api_key: k}
routes: {claude: [relay-a, official], codex: [codex], chat: [relay-b]}
"""
START = datetime(2026, 3, 1, tzinfo=UTC)
UPSTREAMS = {"claude": ["relay-a", "official", None, "gone-relay"], "codex": ["codex"], "chat": ["relay-b"]}
MODELS = {"claude": ["claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5"], "codex": ["gpt-5-codex"],
          "chat": ["mystery-1", "claude-sonnet-4-5"]}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def random_rows(seed: int = 7, n: int = 600) -> list[tuple[str, dict]]:
    """Ten days of varied traffic: every route, failovers, errors, sessions that move, clients,
    count_tokens, 1-hour cache writes, requests ccswitch answered itself; and probes."""
    rng = random.Random(seed)
    rows: list[tuple[str, dict]] = []
    for i in range(n):
        route = rng.choice(list(UPSTREAMS))
        upstream = rng.choice(UPSTREAMS[route])
        written = rng.choice([0, 0, 1200, 40000])
        session = rng.choice([None, "s-1", "s-2", f"s-{i % 13}"])
        status = rng.choice([200] * 8 + [429, 529, None])
        rows.append(("requests", {
            "request_id": f"r{i}", "ts": iso(START + timedelta(minutes=rng.randrange(10 * 24 * 60),
                                                               milliseconds=rng.randrange(1000))),
            "route": route, "endpoint": rng.choice(["messages"] * 6 + ["count_tokens"]) if route == "claude"
            else {"codex": "responses", "chat": "chat"}[route],
            "upstream": upstream, "upstream_protocol": None, "model": rng.choice(MODELS[route]),
            "upstream_model": rng.choice([None, "", "claude-sonnet-4-5-20250929"]),
            "status": status if upstream else 503, "stream": rng.randrange(2),
            "attempts": rng.choice([1, 1, 1, 2, 3]) if upstream else 0,
            "input_tokens": rng.randrange(5000), "output_tokens": rng.randrange(3000),
            "cache_creation_tokens": written, "cache_creation_1h_tokens": rng.choice([0, written, written + 5]),
            "cache_read_tokens": rng.choice([0, rng.randrange(200000)]), "reasoning_tokens": rng.randrange(100),
            "latency_ms": rng.choice([None, rng.randrange(20, 90000)]), "ttfb_ms": rng.choice([None, rng.randrange(900)]),
            "error": rng.choice([None] * 6 + ["HTTP 529", "client_closed"]),
            "session": session, "affinity": rng.choice(["new", "kept", "moved"]) if session else None,
            "client": rng.choice([None, "alice", "bob"]),
        }))
        request = rows[-1][1]
        for n in range(1, request["attempts"] + 1):
            last = n == request["attempts"]
            rows.append(("attempts", {
                "request_id": request["request_id"], "ts": request["ts"], "n": n,
                "upstream": upstream if last else rng.choice([u for u in UPSTREAMS[route] if u]), "ms": rng.randrange(5000),
                "status": request["status"] if last else rng.choice([429, 529, None]),
                "error": request["error"] if last else rng.choice(["HTTP 429", "connection refused",
                                                                   "stream error: overloaded_error: busy"]),
                "input_tokens": 0, "output_tokens": 0, "cache_creation_tokens": 0, "cache_read_tokens": 0,
                "reasoning_tokens": 0, "raw_usage": None,
            }))
    for day in range(10):
        for upstream, ok in (("relay-a", day % 3 != 0), ("official", True)):
            rows.append(("activations", {"ts": iso(START + timedelta(days=day, hours=22, minutes=1)),
                                         "upstream": upstream, "status": 200 if ok else 401, "ok": ok,
                                         "error": None if ok else "HTTP 401", "latency_ms": 700,
                                         "slot": f"{(START + timedelta(days=day + 1)).date()} 06:00"}))
    return rows


@pytest.fixture
def both(tmp_path, postgres_url) -> tuple[Path, PostgresURL]:
    """The same rows, through the ledger's writer, in a SQLite file and in PostgreSQL."""
    lite, pg = tmp_path / "usage.db", PostgresURL.parse(postgres_url)
    rows = random_rows()
    for target in (lite, pg):
        ledger = Ledger(target).start()
        for table, row in rows:
            ledger.add(table, row)
        ledger.close()
        assert ledger.written == len(rows) and ledger.dropped == 0
    return lite, pg


VIEWS = [
    dict(by=None), dict(by="model"), dict(by="upstream"), dict(by="route"), dict(by="session"),
    dict(period="week"), dict(period="month", by="upstream"),
    dict(hours_day=date(2026, 3, 4)), dict(blocks=True), dict(blocks=True, blocks_upstream="relay-a"),
]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_the_report_on_postgresql_equals_the_report_on_sqlite(both, view):
    rules = parse_rules(RULES)
    now = datetime(2026, 3, 12, tzinfo=UTC)
    reports = []
    for target in both:
        with open_reader(target) as reader:
            reports.append(build_report(reader, rules, date(2026, 3, 1), date(2026, 3, 10), db_path="db",
                                        now=now, **view))
    on_sqlite, on_postgres = reports
    assert on_sqlite.total.requests > 300 and on_sqlite.activations        # the rows are there to compare
    assert sum(a.failed for a in on_sqlite.attempts) > 50
    assert report_json(on_postgres) == report_json(on_sqlite)
    assert render_table(on_postgres) == render_table(on_sqlite)


def test_ccswitch_report_reads_a_postgresql_url(both, tmp_path, capsys):
    lite, pg = both
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    outputs = []
    for db in (str(lite), pg.conninfo):
        code = report_cli.main(["--rules", str(rules), "--db", db, "--since", "2026-03-01", "--until",
                                "2026-03-10", "--by", "upstream", "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        outputs.append(json.loads(out.out))
    assert outputs[1].pop("database") == pg.redacted and pg.conninfo not in json.dumps(outputs[1])
    outputs[0].pop("database")
    assert outputs[0] == outputs[1]


NO_TOKENS = dict.fromkeys(("input_tokens", "output_tokens", "cache_creation_tokens", "cache_creation_1h_tokens",
                           "cache_read_tokens", "reasoning_tokens"), 0)


def test_a_hand_written_offset_is_read_as_the_same_instant_on_both(tmp_path, postgres_url):
    from tests.unit.report.test_report import HAND_WRITTEN_TIMES
    lite, pg = tmp_path / "usage.db", PostgresURL.parse(postgres_url)
    for target in (lite, pg):
        ledger = Ledger(target).start()
        for n, ts in enumerate(HAND_WRITTEN_TIMES):
            ledger.add("requests", {"request_id": f"h{n}", "ts": ts, "route": "claude", "endpoint": "messages",
                                    "upstream": "relay-a", "model": "claude-haiku-4-5", "status": 200, "stream": 0,
                                    "attempts": 1, **NO_TOKENS, "input_tokens": 10, "latency_ms": 900,
                                    "ttfb_ms": 90})
            ledger.add("attempts", {"request_id": f"h{n}", "ts": ts, "n": 1, "upstream": "relay-a", "status": 200,
                                    "ms": 900, **NO_TOKENS})
        ledger.close()
    days = sorted(set(HAND_WRITTEN_TIMES.values()))
    expected = {day: list(HAND_WRITTEN_TIMES.values()).count(day) for day in days}
    rules = parse_rules(RULES)
    for target in (lite, pg):
        with open_reader(target) as reader:
            r = build_report(reader, rules, days[0], days[-1])
            one_day = [build_report(reader, rules, day, day) for day in days]
        assert {day: r.daily[day].requests for day in days} == expected, target
        assert {day: r.latency(r.by_day[day]).requests for day in days} == expected, target
        assert [sum(a.attempts for a in each.attempts) for each in one_day] == [expected[day] for day in days]
    spend = [ledger_spend(target, rules, datetime(2026, 6, 16, 16, tzinfo=UTC), datetime(2026, 6, 17, 16, tzinfo=UTC))
             for target in (lite, pg)]
    assert [len(each.rows) for each in spend] == [expected[days[-1]]] * 2


@pytest.mark.parametrize("reader", ["owner", "a user with no rights on its tables"])
@pytest.mark.parametrize("tables", ["another program's", "a ccswitch ledger"])
def test_a_postgresql_database_says_what_it_holds_whoever_reads_it(postgres_url, postgres_server, tmp_path,
                                                                   capsys, reader, tables):
    # another program's tables read by a user who may not read them were "no requests", exit 0;
    # a ledger read so is a permission to mend, not "not a ccswitch ledger"
    import uuid
    from urllib.parse import urlsplit

    import psycopg

    from ccswitch.ledger.postgres import connect
    role = f"r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        if tables == "a ccswitch ledger":
            connect(PostgresURL.parse(postgres_url)).close()       # migrated: ccswitch's tables
        else:
            conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pw'")
    url = postgres_url
    if reader != "owner":
        parts = urlsplit(postgres_url)
        url = parts._replace(netloc=f"{role}:reader-pw@{parts.hostname}:{parts.port}").geturl()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    try:
        code = report_cli.main(["--rules", str(rules), "--db", url])
    finally:
        with psycopg.connect(postgres_server.url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")    # (its CONNECT grant on the database, if any)
        postgres_server.drop_database(postgres_url)
        with psycopg.connect(postgres_server.url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")
    out = capsys.readouterr()
    if tables == "another program's":
        assert code == 1 and "holds no ccswitch usage tables" in out.err
    elif reader == "owner":
        assert code == 0 and "no requests between" in out.out
    else:
        assert code == 1 and "cannot read usage database" in out.err and "permission denied" in out.err


def test_ccswitch_report_says_when_postgresql_is_unreachable(tmp_path, capsys):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    code = report_cli.main(["--rules", str(rules), "--db", "postgresql://u:hunter2@127.0.0.1:1/none"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot read usage database: cannot connect to postgresql://u:***@127.0.0.1:1/none" in err
    assert "hunter2" not in err


def test_budgets_start_from_the_same_spend_on_both(both):
    rules = parse_rules(RULES)
    since = datetime(2026, 3, 1, tzinfo=UTC)
    on_sqlite, on_postgres = (ledger_spend(target, rules, since) for target in both)
    assert len(on_sqlite.rows) > 100 and on_postgres.unpriced == on_sqlite.unpriced
    key = lambda r: (r[0], r[1] or "", r[2] or "")
    assert sorted(on_postgres.rows, key=key) == sorted(on_sqlite.rows, key=key)


def test_budgets_start_from_zero_on_an_empty_or_unreachable_database(postgres_url, caplog):
    rules = parse_rules(RULES)
    since = datetime(2026, 3, 1, tzinfo=UTC)
    assert ledger_spend(PostgresURL.parse(postgres_url), rules, since).rows == []     # no table yet
    assert "cannot read" not in caplog.text
    unreachable = ledger_spend(PostgresURL.parse("postgresql://u:hunter2@127.0.0.1:1/x"), rules, since)
    assert unreachable.rows == [] and "127.0.0.1" in unreachable.error and "hunter2" not in unreachable.error


def test_the_tables_of_a_postgresql_ledger_are_its_own_schema_s_only(postgres_url):
    # the catalog holds every schema's tables (PostgreSQL's own included): an empty database, or
    # one whose only tables are in another schema, is an empty ledger, not "another program's"
    import psycopg
    with open_reader(PostgresURL.parse(postgres_url)) as reader:
        assert reader.tables() == set()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA elsewhere")
        conn.execute("CREATE TABLE elsewhere.requests (ts TEXT)")
        conn.execute("CREATE SEQUENCE numbers")
    with open_reader(PostgresURL.parse(postgres_url)) as reader:
        assert reader.tables() == set()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    with open_reader(PostgresURL.parse(postgres_url)) as reader:
        assert reader.tables() == {"notes"}
