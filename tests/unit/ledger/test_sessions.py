"""Schema 2 (session affinity): old databases keep their rows and gain the columns; rows carry them."""

import sqlite3
from datetime import UTC, datetime

import pytest

from ccswitch.dial.job import Attempt
from ccswitch.ledger import schema
from ccswitch.ledger.rows import own_answer_row, request_row
from ccswitch.ledger.writer import Ledger
from ccswitch.wire.usage import Usage
from tests.support.helpers import make_job, rules_for
from tests.unit.ledger.test_ledger import row

V1_ROWS = 25


def make_v1_database(path) -> None:
    """A file as ccswitch with schema 1 left it: tables of migration 1, rows, user_version 1."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(schema.migration_sql(1) + "; PRAGMA user_version = 1;")
    for i in range(V1_ROWS):
        r = row(i)
        conn.execute(f"INSERT INTO requests ({', '.join(r)}) VALUES ({', '.join('?' * len(r))})", tuple(r.values()))
    conn.execute("INSERT INTO attempts (request_id, ts, n, upstream) VALUES ('r1', '2026-11-25T10:00:00', 1, 'a')")
    conn.execute("INSERT INTO activations (ts, upstream, ok) VALUES ('2026-11-25T06:00:00', 'a', 1)")
    conn.close()


def dump(conn, table: str) -> list[tuple]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_a_version_1_database_keeps_every_row_and_gains_the_session_columns(tmp_path):
    path = tmp_path / "usage.db"
    make_v1_database(path)
    old = sqlite3.connect(path)
    before = {t: dump(old, t) for t in ("requests", "attempts", "activations")}
    old.close()
    assert len(before["requests"]) == V1_ROWS

    conn = schema.connect(str(path))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION
    assert {"session", "affinity"} <= schema.columns(conn, "requests")
    after = {t: dump(conn, t) for t in before}
    # the old columns come first, in their order; the new ones are NULL on old rows
    assert [r[:len(before["requests"][0])] for r in after["requests"]] == before["requests"]
    assert all(r[-2:] == (None, None) for r in after["requests"])
    assert after["attempts"] == before["attempts"]
    assert [r[:-2] for r in after["activations"]] == before["activations"]        # and no slot, no probe_id
    assert all(r[-2:] == (None, None) for r in after["activations"])
    assert "requests_session" in {r[1] for r in conn.execute("PRAGMA index_list(requests)")}
    conn.close()


def test_the_writer_adds_session_rows_to_a_migrated_version_1_file(tmp_path):
    path = tmp_path / "usage.db"
    make_v1_database(path)
    ledger = Ledger(path).start()
    ledger.add("requests", {**row(99), "session": "s-1", "affinity": "moved"})
    ledger.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == V1_ROWS + 1
    assert conn.execute("SELECT session, affinity FROM requests WHERE request_id = 'r99'").fetchone() == \
        ("s-1", "moved")


def test_a_migration_another_process_finished_meanwhile_is_not_run_again(tmp_path, monkeypatch):
    path = tmp_path / "usage.db"
    make_v1_database(path)
    schema.connect(str(path)).close()                  # "the other process": now at the latest version
    real = schema._version
    calls = []

    def stale_then_real(conn):                         # we read 1 before the other process committed
        calls.append(1)
        return 1 if len(calls) == 1 else real(conn)

    monkeypatch.setattr(schema, "_version", stale_then_real)
    conn = schema.connect(str(path))                   # ALTER TABLE twice would raise "duplicate column"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION and len(calls) >= 2
    assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == V1_ROWS


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "usage.db"
    make_v1_database(path)
    latest = schema.VERSION
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, "ALTER TABLE requests ADD COLUMN x INT; NOT SQL;"])
    monkeypatch.setattr(schema, "VERSION", latest + 1)
    with pytest.raises(sqlite3.OperationalError, match="syntax error"):
        schema.connect(str(path))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == latest   # each migration committed on its own
    assert "x" not in schema.columns(conn, "requests")                  # the failing one rolled back whole


def test_a_read_only_connection_does_not_migrate(tmp_path):
    path = tmp_path / "usage.db"
    make_v1_database(path)
    conn = schema.connect(str(path), readonly=True)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "session" not in schema.columns(conn, "requests")
    assert schema.columns(conn, "no_such_table") == set()


RULES = rules_for(("relay-a", "anthropic", "https://relay-a.example"), ("official", "anthropic", "https://o.example"))


def finished_job(upstream: str | None, session: str | None, bound_to: str | None, status: int = 200):
    job = make_job(RULES)
    job.session, job.bound_to = session, bound_to
    if upstream:
        job.attempts.append(Attempt(upstream, status, usage=Usage(input_tokens=5)))
        job.upstream, job.status = upstream, status
        if session is not None and 200 <= status < 300:
            job.rebound_to = upstream       # as the dialer does after a 2xx
    return job


def test_request_rows_carry_the_session_and_what_happened_to_its_binding():
    cases = [
        (("relay-a", None, None), (None, None)),
        (("relay-a", "s-1", None), ("s-1", "new")),
        (("relay-a", "s-1", "relay-a"), ("s-1", "kept")),
        (("official", "s-1", "relay-a"), ("s-1", "moved")),
        (("official", "s-1", "relay-a", 400), ("s-1", "kept")),     # an error passed on binds nothing
    ]
    for job_args, expected in cases:
        r = request_row(finished_job(*job_args))
        assert (r["session"], r["affinity"]) == expected, job_args
        assert r["input_tokens"] == 5


def test_own_answer_rows_carry_the_session_but_no_affinity_by_default():
    common = dict(request_id="x", started_at=datetime(2026, 3, 1, tzinfo=UTC), route="claude",
                  endpoint="messages", model="m", stream=False, status=429, error="all full", latency_ms=3)
    plain = own_answer_row(**common)
    assert (plain["session"], plain["affinity"]) == (None, None)
    with_session = own_answer_row(**common, session="s-9")
    assert (with_session["session"], with_session["affinity"]) == ("s-9", None)
    assert own_answer_row(**common, session="s-9", affinity="kept")["affinity"] == "kept"
    assert own_answer_row(**common, affinity="kept")["affinity"] is None     # no session, no affinity


def test_request_and_own_answer_rows_round_trip_through_the_writer(tmp_path):
    path = tmp_path / "usage.db"
    ledger = Ledger(path).start()
    ledger.add("requests", request_row(finished_job("official", "s-1", "relay-a")))
    ledger.add("requests", own_answer_row(request_id="own", started_at=datetime(2026, 3, 1, tzinfo=UTC),
                                          route="claude", endpoint="messages", model="m", stream=False,
                                          status=503, error="none available", latency_ms=1, session="s-2"))
    ledger.close()
    got = sqlite3.connect(path).execute("SELECT upstream, session, affinity FROM requests ORDER BY id").fetchall()
    assert got == [("official", "s-1", "moved"), (None, "s-2", None)]
