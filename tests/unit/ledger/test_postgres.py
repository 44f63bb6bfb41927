"""The ledger in a real PostgreSQL: the same tables and columns as SQLite's, schema versions,
migrations from empty and from an older version (once, with instances starting at once), bad
rows dropped, and an outage of the server (stopped mid-run) that loses no row and logs once."""

import logging
import sqlite3
import threading
import time

import psycopg
import pytest

from ccswitch.config.database_url import PostgresURL
from ccswitch.ledger import postgres, schema
from ccswitch.ledger.reading import LedgerReadError, open_reader
from ccswitch.ledger.writer import Ledger
from tests.unit.ledger.test_ledger import row, wait_for

TABLES = ("requests", "attempts", "activations")


def query(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def pg_columns(url: str, table: str) -> list[str]:
    return [r[0] for r in query(url, "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                                     "AND table_schema = current_schema() ORDER BY ordinal_position", (table,))]


def test_an_empty_database_gets_sqlites_tables_and_columns_and_the_schema_version(postgres_url, tmp_path):
    ledger = Ledger(PostgresURL.parse(postgres_url)).start()
    for i in range(1200):                        # more than one batch
        ledger.add("requests", row(i))
    ledger.add("attempts", {"request_id": "r1", "ts": "2026-11-25T10:00:00.000+00:00", "n": 1, "upstream": "a"})
    ledger.add("activations", {"ts": "2026-11-25T06:00:00.000+00:00", "upstream": "a", "ok": True})
    ledger.close()
    assert query(postgres_url, "SELECT count(*), sum(input_tokens) FROM requests") == [(1200, sum(range(1200)))]
    assert query(postgres_url, "SELECT version FROM ccswitch_schema") == [(schema.VERSION,)]
    assert query(postgres_url, "SELECT ok FROM activations") == [(1,)]   # a bool goes in as SQLite's 0/1
    lite = sqlite3.connect(tmp_path / "usage.db")
    for number in range(1, schema.VERSION + 1):
        lite.executescript(schema.migration_sql(number))
    for table in TABLES:
        assert pg_columns(postgres_url, table) == [r[1] for r in lite.execute(f"PRAGMA table_info({table})")]
    indexes = {r[0] for r in query(postgres_url, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    assert {"requests_ts", "requests_session", "requests_request_id", "attempts_request_n", "activations_ts"} <= indexes


def make_v1_database(url: str, rows: int = 25) -> None:
    """A database as a ccswitch with schema 1 would have left it."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in schema.statements(1, schema.POSTGRESQL):
            conn.execute(statement)
        conn.execute("CREATE TABLE ccswitch_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO ccswitch_schema VALUES (1)")
        for i in range(rows):
            r = row(i)
            conn.execute(f"INSERT INTO requests ({', '.join(r)}) VALUES ({', '.join(['%s'] * len(r))})",
                         tuple(r.values()))


def test_an_older_database_is_migrated_keeping_every_row(postgres_url):
    make_v1_database(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:    # a batch written twice (a lost commit answer)
        r = row(3)
        conn.execute(f"INSERT INTO requests ({', '.join(r)}) VALUES ({', '.join(['%s'] * len(r))})", tuple(r.values()))
    assert "session" not in pg_columns(postgres_url, "requests")
    with open_reader(PostgresURL.parse(postgres_url)) as reader:      # reading never migrates
        assert "session" not in reader.columns("requests")
    ledger = Ledger(postgres_url).start()                               # a URL as text works too
    ledger.add("requests", {**row(99), "session": "s-1", "affinity": "moved", "client": "alice"})
    ledger.close()
    assert query(postgres_url, "SELECT version FROM ccswitch_schema") == [(schema.VERSION,)]
    assert query(postgres_url, "SELECT count(*), count(session) FROM requests") == [(26, 1)]   # r3 once
    assert query(postgres_url, "SELECT session, affinity, client FROM requests WHERE request_id = 'r99'") == \
        [("s-1", "moved", "alice")]


def test_instances_starting_at_once_migrate_once(postgres_url):
    url = PostgresURL.parse(postgres_url)
    errors, start = [], threading.Barrier(4)

    def open_one():
        start.wait()
        try:
            postgres.connect(url).close()
        except Exception as exc:                 # reported below: a race shows as a duplicate table or column
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert query(postgres_url, "SELECT version FROM ccswitch_schema") == [(schema.VERSION,)]


def test_a_newer_schema_is_refused(postgres_url):
    postgres.connect(PostgresURL.parse(postgres_url)).close()
    query(postgres_url, "UPDATE ccswitch_schema SET version = %s RETURNING version", (schema.VERSION + 1,))
    with pytest.raises(RuntimeError, match="newer"):
        postgres.connect(PostgresURL.parse(postgres_url))


def test_rows_postgresql_refuses_are_dropped_and_the_others_written(postgres_url, caplog):
    ledger = Ledger(postgres_url).start()
    nul, huge, missing, surrogate = row(1), row(2), row(3), row(5)
    nul["model"] = "claude\x00"                  # SQLite takes it; PostgreSQL text cannot hold NUL
    huge["input_tokens"] = 10 ** 30              # beyond BIGINT
    missing["route"] = None                      # NOT NULL
    surrogate["session"] = "s-\udc80"           # a client's JSON can say "\udc80"
    for r in (row(0), nul, huge, missing, row(4), surrogate):
        ledger.add("requests", r)
    ledger.close()
    written = query(postgres_url, "SELECT request_id, model, session FROM requests ORDER BY id")
    # the client's odd text is made storable (its usage counts); what cannot be, is dropped
    assert [r[0] for r in written] == ["r0", "r1", "r4", "r5"] and written[1][1] == "claude"
    assert written[3][2] == "s-\ufffd"
    assert ledger.dropped == 2 and caplog.text.count("dropped a requests row") == 2


def test_a_stopped_server_loses_no_row_and_is_logged_once(own_postgres, caplog):
    """The server stops mid-run (as if it crashed) while rows keep coming; nothing blocks, the
    rows wait, one line says it cannot write (without the password), one says it caught up."""
    url = PostgresURL.parse(own_postgres.url)
    ledger = Ledger(url, batch=50, max_backoff=0.5, busy_timeout=2).start()
    sent = 0

    def send(n):
        nonlocal sent
        started = time.perf_counter()
        for _ in range(n):
            ledger.add("requests", row(sent))
            sent += 1
        assert time.perf_counter() - started < 0.5          # the proxy side only queues
    with caplog.at_level(logging.INFO, logger="ccswitch.ledger"):
        send(300)
        assert wait_for(lambda: ledger.written == 300)
        own_postgres.stop(mode="immediate")
        for _ in range(20):                                  # rows keep coming through the outage
            send(25)
            time.sleep(0.1)
        assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
        assert ledger.pending > 0
        own_postgres.start()
        assert wait_for(lambda: ledger.pending == 0, timeout=30)
        ledger.close()
    assert query(own_postgres.url, "SELECT count(*), count(DISTINCT request_id) FROM requests") == [(sent, sent)]
    assert caplog.text.count("cannot write the usage ledger") == 1
    assert caplog.text.count("is writable again") == 1
    assert url.redacted in caplog.text and own_postgres.password not in caplog.text


def test_an_unreachable_server_at_start_keeps_rows_until_it_comes(own_postgres, caplog):
    own_postgres.stop()
    ledger = Ledger(PostgresURL.parse(own_postgres.url), max_backoff=0.5, busy_timeout=2).start()
    for i in range(40):
        ledger.add("requests", row(i))
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    with pytest.raises(LedgerReadError) as err:              # readers say so, without the password
        open_reader(PostgresURL.parse(own_postgres.url), timeout=2)
    assert own_postgres.password not in str(err.value) and "127.0.0.1" in str(err.value)
    own_postgres.start()
    assert wait_for(lambda: ledger.pending == 0, timeout=30)
    ledger.close()
    assert query(own_postgres.url, "SELECT count(*) FROM requests") == [(40,)]


def test_a_full_buffer_during_an_outage_drops_the_oldest_with_one_line(own_postgres, caplog):
    own_postgres.stop()
    ledger = Ledger(PostgresURL.parse(own_postgres.url), max_pending=100, max_backoff=0.5, busy_timeout=2).start()
    for i in range(350):
        ledger.add("requests", row(i))
    assert ledger.dropped == 250 and caplog.text.count("buffer full") == 1
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    own_postgres.start()
    assert wait_for(lambda: ledger.pending == 0, timeout=30)
    ledger.close()
    kept = [r[0] for r in query(own_postgres.url, "SELECT request_id FROM requests ORDER BY id")]
    assert kept == [f"r{i}" for i in range(250, 350)]                 # the newest hundred
    assert "writing the 100 request(s) (100 rows) kept meanwhile; 250 row(s) dropped so far" in caplog.text


def test_a_kept_connection_the_server_closed_meanwhile_is_replaced_without_an_outage(postgres_url, caplog):
    ledger = Ledger(postgres_url).start()
    ledger.add("requests", row(0))
    assert wait_for(lambda: ledger.written == 1)
    killed = query(postgres_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE application_name = 'ccswitch' AND pid != pg_backend_pid()")
    assert killed == [(True,)]                          # the writer's connection, as an idle timeout would
    ledger.add("requests", row(1))
    assert wait_for(lambda: ledger.written == 2)
    ledger.close()
    assert query(postgres_url, "SELECT count(*) FROM requests") == [(2,)]
    assert "cannot write" not in caplog.text


def test_a_batch_written_again_after_its_commits_answer_was_lost_is_stored_once(postgres_url, monkeypatch):
    from tests.unit.ledger.test_ledger import attempt, lose_the_first_commits_answer
    ledger = Ledger(postgres_url, linger=0.2)
    lost = lose_the_first_commits_answer(ledger, monkeypatch, psycopg.OperationalError)
    ledger.start()
    for i in range(3):
        ledger.add("requests", row(i))
        ledger.add("attempts", attempt(i))
    assert wait_for(lambda: ledger.written == 6)
    ledger.close()
    assert lost == [6]
    assert query(postgres_url, "SELECT count(*), count(DISTINCT request_id) FROM requests") == [(3, 3)]
    assert query(postgres_url, "SELECT count(*) FROM attempts") == [(3,)]


def test_an_activation_row_written_again_is_stored_once(postgres_url, monkeypatch):
    from tests.unit.ledger.test_ledger import ACTIVATION, lose_the_first_commits_answer
    ledger = Ledger(postgres_url, linger=0.2)
    lose_the_first_commits_answer(ledger, monkeypatch, psycopg.OperationalError)
    ledger.start()
    ledger.add("activations", ACTIVATION)
    assert wait_for(lambda: ledger.written == 1)
    ledger.close()
    assert query(postgres_url, "SELECT count(*) FROM activations") == [(1,)]


def test_rows_unwritten_at_a_stop_during_an_outage_are_written_by_the_next_start(own_postgres, tmp_path, caplog):
    """A restart or a redeploy while PostgreSQL is down: what the stop could not write is kept in a
    file on this machine, and the next start writes it (once) and removes the file."""
    from tests.unit.ledger.test_ledger import attempt
    url, spill_dir = PostgresURL.parse(own_postgres.url), tmp_path / "unwritten"
    ledger = Ledger(url, max_backoff=0.5, busy_timeout=2, spill_dir=spill_dir).start()
    ledger.add("requests", row(0))
    assert wait_for(lambda: ledger.written == 1)
    own_postgres.stop(mode="immediate")
    with caplog.at_level(logging.INFO, logger="ccswitch.ledger"):
        for i in range(1, 5):
            ledger.add("requests", row(i))
            ledger.add("attempts", attempt(i))
        ledger.close()
        kept = list(spill_dir.glob("usage-*.db"))
        assert len(kept) == 1 and f"8 usage row(s) could not be written to {url.redacted}: kept in {kept[0]}" \
            in caplog.text
        again = Ledger(url, max_backoff=0.5, busy_timeout=2, spill_dir=spill_dir).start()   # still down
        again.add("requests", row(5))
        again.close()                                  # the 8 and its own 1: one file again
        assert [p.name for p in spill_dir.glob("usage-*.db")] != [kept[0].name]
        assert len(list(spill_dir.glob("usage-*.db"))) == 1 and "9 usage row(s)" in caplog.text
        own_postgres.start()
        last = Ledger(url, spill_dir=spill_dir).start()
        assert wait_for(lambda: last.written == 9)
        assert wait_for(lambda: not list(spill_dir.iterdir()))
        last.close()
    assert query(own_postgres.url, "SELECT count(*), count(DISTINCT request_id) FROM requests") == [(6, 6)]
    assert query(own_postgres.url, "SELECT count(*) FROM attempts") == [(4,)]
    assert "writing 8 usage row(s) an earlier stop could not write" in caplog.text
    assert own_postgres.password not in caplog.text


@pytest.mark.parametrize("change, mend", [
    (lambda parts: parts._replace(path="/no_such_ledger"), "check the URL's database name"),
    (lambda parts: parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":wrong-password@")),
     "check the URL's password"),
])
def test_a_server_that_refuses_the_url_is_named_as_a_setting_to_mend_not_an_outage(postgres_url, caplog, change, mend):
    # it read like a server down ("cannot write the usage ledger ... retrying"), as Redis's does not
    from urllib.parse import urlsplit, urlunsplit
    url = PostgresURL.parse(urlunsplit(change(urlsplit(postgres_url))))
    ledger = Ledger(url, max_backoff=0.5, busy_timeout=2).start()
    ledger.add("requests", row(1))
    assert wait_for(lambda: "refuses ccswitch" in caplog.text)
    ledger.close(timeout=2)
    assert mend in caplog.text and "wrong-password" not in caplog.text
    assert "cannot write the usage ledger" not in caplog.text


@pytest.mark.parametrize("said, mend", [
    ('connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.5", user "me", database "x", no encryption',
     "the server's pg_hba.conf, or the URL's user or sslmode"),     # names a database too: pg_hba.conf first
    ('connection failed: FATAL:  role "me" does not exist', "the URL's user"),
    ("connection failed: fe_sendauth: no password supplied", "the URL's password"),
    ("permission denied for table requests", "the user's rights on that database"),
    ("connection failed: connection timeout expired", None),        # an outage: nothing to mend
])
def test_each_refusal_libpq_words_names_what_to_mend(said, mend):
    # the server-less half of the test above: the refusals a test server is not set up to give
    backend = postgres.PostgresBackend(PostgresURL.parse("postgresql://me:pw@db.internal/x"), {})
    assert backend.refusal(psycopg.OperationalError(said)) == mend
