"""The SQLite ledger never blocks or breaks the proxy, and loses nothing it can keep."""

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import time
import types
from pathlib import Path

import pytest

from ccswitch.ledger.schema import VERSION, connect
from ccswitch.ledger.schema import migration_sql as schema_sql
from ccswitch.ledger.writer import Ledger


def row(i: int) -> dict:
    return {"request_id": f"r{i}", "ts": "2026-11-25T10:00:00.000+00:00", "route": "claude",
            "endpoint": "messages", "upstream": "a", "model": "m", "status": 200, "stream": 1, "attempts": 1,
            "input_tokens": i, "output_tokens": 1, "cache_creation_tokens": 0, "cache_creation_1h_tokens": 0,
            "cache_read_tokens": 0, "reasoning_tokens": 0}


def count(path) -> int:
    return sqlite3.connect(path).execute("SELECT count(*), sum(input_tokens) FROM requests").fetchone()[0]


def count_so_far(path) -> int:
    """count(path) for a wait: 0 while the file, or its tables, are not there yet (the writer's
    thread creates the file, then the tables in it: a read between the two finds no table)."""
    if not path.exists():
        return 0
    try:
        return count(path)
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return 0


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_rows_are_written_in_batches_with_schema_version(tmp_path):
    path = tmp_path / "sub" / "usage.db"
    ledger = Ledger(path).start()
    for i in range(1000):
        ledger.add("requests", row(i))
    ledger.close()
    assert count(path) == 1000
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_add_never_blocks_while_the_database_is_locked(tmp_path, caplog):
    path = tmp_path / "usage.db"
    connect(str(path)).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    ledger = Ledger(path, busy_timeout=0.05).start()
    started = time.perf_counter()
    for i in range(100):
        ledger.add("requests", row(i))
    assert time.perf_counter() - started < 0.05          # the proxy side only queues
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    assert ledger.pending == 100
    holder.execute("ROLLBACK")
    assert wait_for(lambda: ledger.pending == 0)
    ledger.close()
    assert count(path) == 100
    assert caplog.text.count("cannot write the usage ledger") == 1    # logged once, not per retry
    # a warning: nothing is lost yet, and mitmdump exits on an error logged while it starts (a
    # restart during an outage takes the rows an earlier stop kept, and fails to write them at once)
    assert [r.levelname for r in caplog.records if "cannot write the usage ledger" in r.getMessage()] == ["WARNING"]


def test_the_rows_kept_through_a_lock_are_told_as_requests_and_rows(tmp_path, caplog):
    # 300 requests of one attempt each were told as "keeping 600 row(s) in memory": requests,
    # attempts and probes counted together, as if 600 requests waited
    path = tmp_path / "usage.db"
    connect(str(path)).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    ledger = Ledger(path, busy_timeout=0.05, max_backoff=0.2)
    for i in range(300):
        ledger.add("requests", row(i))
        ledger.add("attempts", attempt(i))
    ledger.start()
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    holder.execute("ROLLBACK")
    assert wait_for(lambda: ledger.pending == 0)
    ledger.close()
    assert "keeping 300 request(s) (600 rows) in memory" in caplog.text
    assert "writing the 300 request(s) (600 rows) kept meanwhile" in caplog.text


def _make_read_only(path) -> bool:
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def test_read_only_database_keeps_rows_in_memory_and_retries(tmp_path, caplog):
    path = tmp_path / "usage.db"
    connect(str(path)).close()
    made_read_only = _make_read_only(path)
    if not made_read_only:            # no chattr: a directory where the file should be is unwritable too
        path.unlink()
        path.mkdir()
    try:
        ledger = Ledger(path).start()
        for i in range(10):
            ledger.add("requests", row(i))
        assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
        assert ledger.pending == 10
    finally:
        if made_read_only:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.rmdir()
    assert wait_for(lambda: ledger.pending == 0, timeout=20)
    ledger.close()
    assert count(path) == 10 and "writable again" in caplog.text


def test_buffer_is_bounded_and_drops_oldest(tmp_path, caplog):
    path = tmp_path / "usage.db"
    path.mkdir()    # unwritable for now
    ledger = Ledger(path, max_pending=5).start()
    with caplog.at_level(logging.ERROR):
        for i in range(8):
            ledger.add("requests", row(i))
    assert ledger.pending == 5 and ledger.dropped == 3 and "buffer full" in caplog.text
    ledger.close(timeout=0.5)


def test_pending_rows_are_flushed_on_close(tmp_path):
    path = tmp_path / "usage.db"
    ledger = Ledger(path, interval=60).start()
    for i in range(50):
        ledger.add("requests", row(i))
    ledger.close()
    assert count(path) == 50


def test_rows_a_moved_from_ledger_could_not_write_go_to_the_new_one_first(tmp_path, caplog):
    # a reload fixing a bad usage_db: what waited in memory for the old one is not thrown away
    (tmp_path / "afile").write_text("not a directory")
    bad, good = tmp_path / "afile" / "usage.db", tmp_path / "usage.db"
    old = Ledger(bad, max_backoff=0.1).start()
    for i in range(5):
        old.add("requests", row(i))
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    new = Ledger(good).start()
    new.add("requests", row(5))
    old.close(timeout=5, successor=new)
    new.close()
    rows = sqlite3.connect(good).execute("SELECT request_id FROM requests").fetchall()
    assert sorted(r for (r,) in rows) == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert f"5 usage row(s) that {bad} did not take go to {good} instead" in caplog.text
    # the old writer retries on after its close (every 0.1 s: its backoff never grows past the 2 s
    # that ends a closing writer's tries); the path mended, it writes its rows and ends
    (tmp_path / "afile").unlink()
    (tmp_path / "afile").mkdir()
    assert wait_for(lambda: old.pending == 0)


def test_a_successor_closed_first_takes_nothing_and_the_rows_are_kept_for_the_next_start(tmp_path, caplog):
    # a second reload (or a stop) closed the ledger the rows were to go to: they are spilled, not lost
    (tmp_path / "afile").write_text("not a directory")
    old = Ledger(tmp_path / "afile" / "usage.db", max_backoff=0.1, spill_dir=tmp_path / "unwritten").start()
    for i in range(3):
        old.add("requests", row(i))
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    gone = Ledger(tmp_path / "usage.db").start()
    gone.close()
    old.close(timeout=5, successor=gone)
    assert gone.pending == 0 and "go to" not in caplog.text
    assert "could not be written" in caplog.text and list((tmp_path / "unwritten").iterdir())


def test_a_row_the_database_rejects_does_not_block_the_others(tmp_path, caplog):
    path = tmp_path / "usage.db"
    ledger = Ledger(path).start()
    bad = row(1)
    bad["input_tokens"] = None      # NOT NULL
    ledger.add("requests", row(0))
    ledger.add("requests", bad)
    ledger.add("requests", row(2))
    ledger.close()
    assert count(path) == 2 and ledger.dropped == 1


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "usage.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        connect(str(path))


def test_rows_written_one_by_one_are_not_written_again_after_a_lock(tmp_path, monkeypatch):
    """A rejected row forces one-by-one writes; a lock half way must not duplicate rows."""
    path = tmp_path / "usage.db"
    ledger = Ledger(path, interval=60, busy_timeout=0.05)
    bad = row(1)
    bad["input_tokens"] = None
    for r in (row(0), bad, row(2), row(3)):
        ledger.add("requests", r)
    calls = {"n": 0}
    real_write = Ledger._write

    def flaky(self, rows):
        calls["n"] += 1
        if calls["n"] == 5:        # batch, then rows 0, 1(bad), 2 one by one: the 5th call (row 3) hits a lock
            raise sqlite3.OperationalError("database is locked")
        return real_write(self, rows)

    monkeypatch.setattr(ledger, "_write", types.MethodType(flaky, ledger))     # this ledger's alone (see below)
    ledger.start()
    ledger.close()
    conn = sqlite3.connect(path)
    ids = [r[0] for r in conn.execute("SELECT request_id FROM requests ORDER BY id")]
    assert ids == ["r0", "r2", "r3"] and ledger.dropped == 1


def test_a_full_buffer_while_a_batch_is_being_written_drops_the_oldest_not_the_batch(tmp_path, monkeypatch):
    """The writer holds a batch while the proxy keeps adding past the bound: when the write
    fails, the batch goes back to the front, and exactly the oldest rows are dropped."""
    import threading
    path = tmp_path / "usage.db"
    ledger = Ledger(path, max_pending=4, batch=2, linger=0, busy_timeout=0.05)
    in_write, release = threading.Event(), threading.Event()
    calls = {"n": 0}
    real_write = Ledger._write

    def slow_then_locked(self, rows):
        calls["n"] += 1
        if calls["n"] == 1:        # holds rows r0, r1
            in_write.set()
            release.wait(5)
            raise sqlite3.OperationalError("database is locked")
        return real_write(self, rows)

    # this ledger's alone: patched on the class, an earlier test's writer still retrying in its
    # thread took the first (locked) call, and this ledger's batch went in at once (met under load)
    monkeypatch.setattr(ledger, "_write", types.MethodType(slow_then_locked, ledger))
    monkeypatch.setattr(ledger, "_sleep", lambda seconds: None)
    ledger.add("requests", row(0))
    ledger.add("requests", row(1))
    ledger.start()
    assert in_write.wait(5)
    for i in range(2, 7):          # r2..r6 queued while r0, r1 are in hand: the queue drops r2
        ledger.add("requests", row(i))
    assert ledger.pending == 6 and ledger.dropped == 1
    release.set()
    ledger.close()
    ids = [r[0] for r in sqlite3.connect(path).execute("SELECT request_id FROM requests ORDER BY id")]
    # given back: r0 r1 r3 r4 r5 r6 -> over the bound of 4 by 2 -> r0, r1 (the oldest) dropped
    assert ids == ["r3", "r4", "r5", "r6"] and ledger.dropped == 3 and ledger.pending == 0


def test_a_burst_of_rows_is_committed_in_few_transactions(tmp_path, monkeypatch):
    path = tmp_path / "usage.db"
    batches = []
    real_write = Ledger._write
    # only this ledger's writes: an earlier test's writer may still be retrying in its thread
    monkeypatch.setattr(Ledger, "_write", lambda self, rows: (batches.append(len(rows)) if self.path == path else None,
                                                                real_write(self, rows)))
    ledger = Ledger(path, linger=0.2).start()
    for i in range(20):            # one row every few milliseconds, as a busy proxy adds them
        ledger.add("requests", row(i))
        time.sleep(0.003)
    assert wait_for(lambda: sum(batches) == 20)
    ledger.close()
    assert count(path) == 20 and len(batches) <= 3


def test_a_value_sqlite_cannot_store_is_a_bad_row_not_a_stopped_writer(tmp_path, caplog):
    """A relay's absurd token count must not end the thread; a lone surrogate from a client's JSON
    must not cost the request's usage either: its text is made storable."""
    path = tmp_path / "usage.db"
    ledger = Ledger(path).start()
    huge, surrogate = row(1), row(2)
    huge["input_tokens"] = 10 ** 30
    surrogate["model"] = "claude-\ud800"
    for r in (row(0), huge, surrogate, row(3)):
        ledger.add("requests", r)
    assert wait_for(lambda: ledger.written == 3)
    ledger.add("requests", row(4))                      # the writer still runs
    ledger.close()
    rows = list(sqlite3.connect(path).execute("SELECT request_id, model, input_tokens FROM requests ORDER BY id"))
    assert [r[0] for r in rows] == ["r0", "r2", "r3", "r4"] and ledger.dropped == 1
    assert rows[1] == ("r2", "claude-\ufffd", 2)
    assert "OverflowError" in caplog.text and "written with it replaced" in caplog.text


@pytest.mark.parametrize("directory", ["d#1", "d%41", "d?x"])
def test_a_read_only_open_takes_the_path_as_written(tmp_path, directory):
    path = tmp_path / directory / "usage.db"
    ledger = Ledger(path).start()
    ledger.add("requests", row(7))
    ledger.close()
    reader = connect(str(path), readonly=True)
    assert reader.execute("SELECT request_id FROM requests").fetchall() == [("r7",)]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM requests")
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [directory]     # no stray file beside it


def test_a_database_error_is_told_on_one_line(tmp_path):
    # libpq's messages run over lines ("connection failed\n\tIs the server running...")
    from ccswitch.ledger.backend import SQLiteBackend
    backend = SQLiteBackend(tmp_path / "usage.db", {})
    said = backend.describe(OSError('connection to server at "127.0.0.1", port 5432 failed:\n\tConnection refused'))
    assert said == 'OSError: connection to server at "127.0.0.1", port 5432 failed: Connection refused'


def attempt(i: int, n: int = 1) -> dict:
    return {"request_id": f"r{i}", "ts": "2026-11-25T10:00:00.000+00:00", "n": n, "upstream": "a", "status": 200,
            "input_tokens": i, "output_tokens": 1, "cache_creation_tokens": 0, "cache_read_tokens": 0,
            "reasoning_tokens": 0}


def lose_the_first_commits_answer(ledger, monkeypatch, error: type[Exception]):
    """The batch is committed, and then the writer hears of an error (the answer to the commit was
    lost on the way back): it cannot know, and writes the batch again."""
    real, lost = ledger.backend.insert, []

    def insert(rows):
        real(rows)
        if not lost:
            lost.append(len(rows))
            raise error("server closed the connection unexpectedly")
    monkeypatch.setattr(ledger.backend, "insert", insert)
    return lost


ACTIVATION = {"ts": "2026-03-10T09:00:00.512+00:00", "upstream": "relay", "status": 503, "ok": 0,
              "error": "HTTP 503", "latency_ms": 12, "slot": "2026-03-10 17:00", "probe_id": "p1"}


def test_a_batch_written_again_after_its_commits_answer_was_lost_is_stored_once(tmp_path, monkeypatch):
    ledger = Ledger(tmp_path / "u.db", linger=0.2)
    lost = lose_the_first_commits_answer(ledger, monkeypatch, sqlite3.OperationalError)
    ledger.start()
    for i in range(3):
        ledger.add("requests", row(i))
        ledger.add("attempts", attempt(i))
    ledger.add("attempts", attempt(2, n=2))
    assert wait_for(lambda: ledger.written == 7)
    ledger.close()
    assert lost == [7]
    db = sqlite3.connect(tmp_path / "u.db")
    assert db.execute("SELECT count(*), count(DISTINCT request_id) FROM requests").fetchone() == (3, 3)
    assert db.execute("SELECT count(*) FROM attempts").fetchone() == (4,)


def test_an_activation_row_written_again_is_stored_once(tmp_path, monkeypatch):
    # its failed rows count as the tries made: a copy made a restart give up a time early
    ledger = Ledger(tmp_path / "u.db", linger=0.2)
    lose_the_first_commits_answer(ledger, monkeypatch, sqlite3.OperationalError)
    ledger.start()
    ledger.add("activations", ACTIVATION)
    ledger.add("activations", {**ACTIVATION, "ts": "2026-03-10T09:00:02.000+00:00", "probe_id": "p2"})  # the retry
    assert wait_for(lambda: ledger.written == 2)
    ledger.close()
    db = sqlite3.connect(tmp_path / "u.db")
    assert db.execute("SELECT count(*) FROM activations").fetchone() == (2,)


def test_an_older_ledger_holding_copies_of_an_activation_keeps_the_first(tmp_path):
    db = sqlite3.connect(tmp_path / "u.db", isolation_level=None)
    for number in range(1, 6):
        db.executescript(schema_sql(number))
    db.execute("PRAGMA user_version = 5")
    older = {k: v for k, v in ACTIVATION.items() if k != "probe_id"}
    for values in (older, older, {**older, "upstream": "other"}, {**older, "slot": None}, {**older, "slot": None}):
        db.execute(f"INSERT INTO activations ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                   tuple(values.values()))
    db.close()
    connect(str(tmp_path / "u.db")).close()        # opened for writing: migrated
    db = sqlite3.connect(tmp_path / "u.db")
    assert db.execute("SELECT id, upstream FROM activations ORDER BY id").fetchall() == [(1, "relay"), (3, "other"), (4, "relay")]


@pytest.mark.parametrize("column, other", [("ts", "2026-03-10T09:00:01.000+00:00"), ("upstream", "other"),
                                           ("status", 502), ("ok", 1), ("error", "HTTP 502"), ("latency_ms", 13),
                                           ("slot", "2026-03-10 18:00")])
def test_an_older_ledger_s_activations_that_differ_in_any_column_are_no_copies(tmp_path, column, other):
    # two probes a second apart, or with another error: both were made, and a restart counts both
    db = sqlite3.connect(tmp_path / "u.db", isolation_level=None)
    for number in range(1, 6):
        db.executescript(schema_sql(number))
    db.execute("PRAGMA user_version = 5")
    older = {k: v for k, v in ACTIVATION.items() if k != "probe_id"}
    for values in (older, {**older, column: other}):
        db.execute(f"INSERT INTO activations ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                   tuple(values.values()))
    db.close()
    connect(str(tmp_path / "u.db")).close()        # opened for writing: migrated
    db = sqlite3.connect(tmp_path / "u.db")
    assert db.execute("SELECT count(*) FROM activations").fetchone() == (2,)


def test_an_older_ledger_holding_such_duplicates_keeps_the_first_of_each(tmp_path):
    db = sqlite3.connect(tmp_path / "u.db", isolation_level=None)
    for number in range(1, 5):
        db.executescript(schema_sql(number))
    db.execute("PRAGMA user_version = 4")
    for values in (row(1), row(1), row(2)):
        db.execute(f"INSERT INTO requests ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                   tuple(values.values()))
    for values in (attempt(1), attempt(1), attempt(1, n=2)):
        db.execute(f"INSERT INTO attempts ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                   tuple(values.values()))
    db.close()
    connect(str(tmp_path / "u.db")).close()        # opened for writing: migrated
    db = sqlite3.connect(tmp_path / "u.db")
    assert db.execute("SELECT id, request_id FROM requests ORDER BY id").fetchall() == [(1, "r1"), (3, "r2")]
    assert db.execute("SELECT request_id, n FROM attempts ORDER BY id").fetchall() == [("r1", 1), ("r1", 2)]


def test_a_database_that_fails_to_open_or_migrate_drops_no_row(tmp_path, monkeypatch, caplog):
    """Even with an error that would mean a bad row elsewhere (a migration's unique index meeting a
    copy an older instance wrote meanwhile): opening failed, the rows wait for the next try."""
    from ccswitch.ledger import backend as backend_module
    real, failures = backend_module.schema.connect, []

    def connect(path, **kwargs):
        if len(failures) < 2:
            failures.append(path)
            raise sqlite3.IntegrityError("UNIQUE constraint failed: requests.request_id")
        return real(path, **kwargs)
    monkeypatch.setattr(backend_module.schema, "connect", connect)
    ledger = Ledger(tmp_path / "u.db", max_backoff=0.1).start()
    for i in range(3):
        ledger.add("requests", row(i))
    assert wait_for(lambda: ledger.written == 3)
    ledger.close()
    assert ledger.dropped == 0 and count(tmp_path / "u.db") == 3 and len(failures) == 2
    assert "cannot write the usage ledger" in caplog.text and "IntegrityError: UNIQUE" in caplog.text
    assert "dropped" not in caplog.text


def test_a_batch_goes_in_a_few_statements_per_table_not_one_per_row(tmp_path, monkeypatch):
    """Each statement hands the GIL to the proxy's thread and back: one per row cost the proxy
    about 5 % of its throughput under load."""
    from ccswitch.ledger.backend import SQLiteBackend
    from ccswitch.ledger.writer import _COLUMNS
    backend = SQLiteBackend(tmp_path / "u.db", _COLUMNS)
    backend.connect()
    inserts = []
    backend._conn.set_trace_callback(lambda sql: inserts.append(sql) if sql.startswith("INSERT") else None)
    rows = [(t, tuple((row(i) if t == "requests" else attempt(i)).get(c) for c in _COLUMNS[t]))
            for i in range(150) for t in ("requests", "attempts")]
    backend.insert(rows)
    backend.close()
    assert len(inserts) == 2 * 6       # 150 rows of each table: 64 + 64 + 16 + 4 + 1 + 1
    db = sqlite3.connect(tmp_path / "u.db")
    assert db.execute("SELECT count(*), sum(input_tokens) FROM requests").fetchone() == (150, sum(range(150)))
    assert db.execute("SELECT count(*), sum(input_tokens) FROM attempts").fetchone() == (150, sum(range(150)))


@pytest.mark.parametrize("rows", [1, 3, 4, 17, 64, 65, 130])
def test_any_number_of_rows_goes_in_once_each_duplicates_within_a_statement_too(tmp_path, rows):
    ledger = Ledger(tmp_path / "u.db", linger=0.2).start()
    for i in range(rows):
        ledger.add("requests", row(i))
        ledger.add("requests", row(i))       # the same request twice (spilled and taken again)
    ledger.close()
    db = sqlite3.connect(tmp_path / "u.db")
    assert db.execute("SELECT count(*), count(DISTINCT request_id), sum(input_tokens) FROM requests").fetchone() \
        == (rows, rows, sum(range(rows)))


def test_a_bad_row_in_a_large_batch_costs_only_itself(tmp_path, caplog):
    path = tmp_path / "usage.db"
    ledger = Ledger(path, linger=0.2).start()
    for i in range(100):
        bad = row(i)
        if i == 70:
            bad["input_tokens"] = None      # NOT NULL
        ledger.add("requests", bad)
    ledger.close()
    assert count(path) == 99 and ledger.dropped == 1


def test_statement_sizes_cover_every_row_largest_first():
    from ccswitch.ledger.backend import statement_sizes
    assert statement_sizes(0, (64, 16, 4, 1)) == []
    assert statement_sizes(63, (64, 16, 4, 1)) == [16, 16, 16, 4, 4, 4, 1, 1, 1]
    assert statement_sizes(130, (64, 16, 4, 1)) == [64, 64, 1, 1]
    assert statement_sizes(3, (1,)) == [1, 1, 1]


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_database_removed_or_replaced_while_open_gets_the_rows_after_it(tmp_path, caplog, how):
    """SQLite goes on writing to a removed file: those rows were lost without a word."""
    path = tmp_path / "usage.db"
    ledger = Ledger(path, linger=0.01).start()
    try:
        ledger.add("requests", row(1))
        assert wait_for(lambda: count_so_far(path) == 1)
        for leftover in tmp_path.glob("usage.db*"):      # a user resetting the numbers
            leftover.unlink()
        if how == "replaced":
            connect(str(path)).close()                   # a fresh database put in its place
        with caplog.at_level(logging.WARNING, logger="ccswitch.ledger"):
            for i in (2, 3):
                ledger.add("requests", row(i))
            assert wait_for(lambda: count_so_far(path) == 2)
    finally:
        ledger.close()
    assert count(path) == 2
    assert [r.getMessage() for r in caplog.records if "removed or replaced" in r.getMessage()] == [
        f"ccswitch: the usage database {path} was removed or replaced while ccswitch ran: usage rows now go to "
        + ("the new file" if how == "replaced" else "a new file there")]


def test_a_database_that_grows_is_not_taken_for_one_replaced(tmp_path, caplog):
    """The file is known by its device and inode: its size changes with every checkpoint."""
    from ccswitch.ledger.backend import SQLiteBackend
    from ccswitch.ledger.writer import _COLUMNS
    backend = SQLiteBackend(tmp_path / "u.db", _COLUMNS)
    rows = [("requests", tuple(row(i).get(c) for c in _COLUMNS["requests"])) for i in range(200)]
    with caplog.at_level(logging.WARNING, logger="ccswitch.ledger"):
        backend.insert(rows[:100])
        opened = backend._conn
        opened.execute("PRAGMA wal_checkpoint(TRUNCATE)")      # the rows into the file: it grew
        backend.insert(rows[100:])
    assert backend._conn is opened and "removed or replaced" not in caplog.text
    backend.close()


def test_a_file_that_cannot_be_looked_at_once_opened_is_unavailable_and_left_closed(tmp_path, monkeypatch):
    """An OSError of the file's identity is the ledger out for now (the rows wait), not a crash."""
    from ccswitch.ledger import backend as module
    from ccswitch.ledger.backend import SQLiteBackend, Unavailable
    from ccswitch.ledger.writer import _COLUMNS

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(module, "_identity", denied)
    backend = SQLiteBackend(tmp_path / "u.db", _COLUMNS)
    with pytest.raises(Unavailable, match="Permission denied"):
        backend.connect()
    assert backend._conn is None


@contextlib.contextmanager
def unwritable(folder: Path):
    """`folder` as a user who cannot write there sees it: immutable as root (root writes anywhere
    else), its write bits off otherwise."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("root, and no chattr to make a folder unwritable")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    try:
        assert not os.access(folder, os.W_OK)
        yield
    finally:
        subprocess.run(undo, check=True)


def test_a_wal_ledger_in_a_folder_this_user_cannot_write_is_read_as_it_stands(tmp_path):
    # the service user's ledger, read by another user: SQLite reads a WAL database through an
    # index file (usage.db-shm) it creates beside it, could not, and the report failed with
    # "unable to open database file"; with no usage.db-wal no writer has it open, so its file is all of it
    from ccswitch.ledger.reading import open_reader
    folder = tmp_path / "ledger"
    ledger = Ledger(folder / "usage.db").start()
    ledger.add("requests", row(7))
    ledger.close()
    assert sorted(p.name for p in folder.iterdir()) == ["usage.db"]
    with unwritable(folder), open_reader(folder / "usage.db") as reader:
        assert list(reader.execute("SELECT request_id FROM requests")) == [("r7",)]
        assert reader.tables() >= {"requests", "attempts"}


def test_a_wal_ledger_being_written_in_a_folder_this_user_cannot_write_says_why_it_cannot_be_read(tmp_path):
    # its write-ahead log holds rows its file does not yet: reading the file alone would leave them out
    from ccswitch.ledger.reading import LedgerReadError, open_reader
    written, folder = tmp_path / "written", tmp_path / "ledger"
    folder.mkdir()
    written.mkdir()
    writer = connect(str(written / "usage.db"))
    writer.execute("INSERT INTO requests (request_id, ts, route, endpoint) VALUES ('r1', 'x', 'claude', 'messages')")
    for name in ("usage.db", "usage.db-wal"):      # as a writer that crashed leaves them, without its index
        shutil.copy(written / name, folder / name)
    writer.close()
    with unwritable(folder), pytest.raises(LedgerReadError) as err:
        open_reader(folder / "usage.db")
    assert str(err.value) == (
        f"cannot read {folder / 'usage.db'}: this user cannot write in {folder}, where SQLite must create "
        f"usage.db-shm to read the rows usage.db-wal holds: read it as the user ccswitch writes it as, "
        f"or copy both files to a folder of yours")
