"""Rows a ledger could not take before a stop: kept in a file for the same ledger's next start,
whatever the rows hold, never read half-written, never taken twice."""

import os
import sqlite3
import time

from ccswitch.ledger import spill
from ccswitch.ledger.writer import _COLUMNS, Ledger
from tests.unit.ledger.test_ledger import row, wait_for

LEDGER_A = "postgresql://ccswitch:***@db-a:5432/ledger"
LEDGER_B = "postgresql://ccswitch:***@db-b:5432/ledger"


def rows(*ids):
    return [("requests", tuple(row(i).get(c) for c in _COLUMNS["requests"])) for i in ids]


def test_a_file_is_for_its_ledger_only(tmp_path):
    spill.spill(rows(1, 2), tmp_path, _COLUMNS, LEDGER_A)
    assert spill.spilled(tmp_path, LEDGER_B) == []
    [found] = spill.spilled(tmp_path, LEDGER_A)
    assert [r[1][0] for r in spill.read(found, _COLUMNS)] == ["r1", "r2"]


def test_a_row_sqlite_cannot_hold_loses_only_itself(tmp_path):
    bad_text = rows(2)[0][0], tuple("bad\ud800" if v == "m" else v for v in rows(2)[0][1])
    huge = rows(3)[0][0], tuple(2**70 if v == 3 else v for v in rows(3)[0][1])
    path, lost = spill.spill([*rows(1), bad_text, huge, *rows(4)], tmp_path, _COLUMNS, LEDGER_A)
    assert lost == 2 and [r[1][0] for r in spill.read(path, _COLUMNS)] == ["r1", "r4"]


def test_a_file_being_written_is_not_seen_and_a_claimed_one_is_taken_once(tmp_path):
    (tmp_path / ("." + spill._prefix(LEDGER_A) + "x.db.part")).write_bytes(b"")   # another stop, mid-write
    assert spill.spilled(tmp_path, LEDGER_A) == []
    spill.spill(rows(1), tmp_path, _COLUMNS, LEDGER_A)
    [found] = spill.spilled(tmp_path, LEDGER_A)
    mine = spill.claim(found)
    assert mine is not None and spill.claim(found) is None          # a second start finds it gone
    assert spill.spilled(tmp_path, LEDGER_A) == []                   # claimed by a live process
    gone = mine.with_name(mine.name.replace(f"taken-{os.getpid()}", "taken-999999999"))
    os.rename(mine, gone)                                            # its claimer was killed
    assert spill.spilled(tmp_path, LEDGER_A) == [gone]


def test_a_claim_left_by_an_earlier_process_under_this_process_s_pid_is_taken_again(tmp_path):
    # in a container ccswitch is PID 1 (or tini's child) in every run: a run killed after its
    # claim left a file no later run would take (its PID alive: this very process)
    spill.spill(rows(1), tmp_path, _COLUMNS, LEDGER_A)
    mine = spill.claim(spill.spilled(tmp_path, LEDGER_A)[0])
    assert spill.spilled(tmp_path, LEDGER_A) == []                   # this process's own claim: being written
    base, _, claimer = mine.name.partition(".taken-")
    assert claimer.startswith(f"{os.getpid()}.")
    earlier = mine.with_name(f"{base}.taken-{os.getpid()}.1")        # same PID, another start
    os.rename(mine, earlier)
    assert spill.spilled(tmp_path, LEDGER_A) == [earlier]
    older_format = mine.with_name(f"{base}.taken-{os.getpid()}")      # an older ccswitch's claim: kept as alive
    os.rename(earlier, older_format)
    assert spill.spilled(tmp_path, LEDGER_A) == []


def test_an_older_ccswitch_s_claim_whose_process_is_gone_is_taken_again(tmp_path):
    # a claim without a start time (`<pid>` alone) is still a claim: its claimer killed, the
    # rows in it go into the ledger at the next start instead of staying on disk for good
    spill.spill(rows(1), tmp_path, _COLUMNS, LEDGER_A)
    mine = spill.claim(spill.spilled(tmp_path, LEDGER_A)[0])
    base, _, _ = mine.name.partition(".taken-")
    gone = mine.with_name(f"{base}.taken-999999999")
    os.rename(mine, gone)
    assert spill.spilled(tmp_path, LEDGER_A) == [gone]


def test_another_user_s_process_under_the_claim_s_pid_is_judged_by_its_start_time(tmp_path, monkeypatch):
    # signalling another user's process is refused (PermissionError): that says its PID is in
    # use, not that it is the claimer; one started at another time than the claim says is not
    spill.spill(rows(1), tmp_path, _COLUMNS, LEDGER_A)
    mine = spill.claim(spill.spilled(tmp_path, LEDGER_A)[0])
    base, _, claimer = mine.name.partition(".taken-")

    def refused(pid, signal):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(spill.os, "kill", refused)
    assert spill.spilled(tmp_path, LEDGER_A) == []                   # its start time is the claim's: alive
    earlier = mine.with_name(f"{base}.taken-{os.getpid()}.1")        # another start under that PID
    os.rename(mine, earlier)
    assert spill.spilled(tmp_path, LEDGER_A) == [earlier]


def test_a_claimer_s_start_time_is_read_whatever_its_process_is_named():
    # /proc/<pid>/stat puts the name in parentheses, spaces and all: the fields are counted
    # after its last `)`, so a renamed process keeps the identity its claim holds
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline(); "
                              "open('/proc/self/comm', 'w').write('a b) c d'); print('renamed', flush=True); "
                              "sys.stdin.readline()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        before = spill._process(child.pid)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline() == "renamed\n"
        with open(f"/proc/{child.pid}/comm") as comm:
            assert comm.read().strip() == "a b) c d"
        assert spill._process(child.pid) == before and "." in before
    finally:
        child.kill()
        child.wait()


def test_the_sidecar_files_of_a_claimed_file_being_read_are_never_taken_for_claims_of_their_own(tmp_path):
    """Reading a claimed file (SQLite in WAL mode) makes its `-wal` and `-shm` beside it; a second
    instance starting then took `….taken-<pid>-shm` for a claim of a process gone (no pid in
    `<pid>-shm`), renamed it to a claim of its own and found no database in it."""
    spill.spill(rows(1, 2), tmp_path, _COLUMNS, LEDGER_A)
    mine = spill.claim(spill.spilled(tmp_path, LEDGER_A)[0])
    conn = sqlite3.connect(mine.absolute().as_uri() + "?mode=ro", uri=True)   # as `read` opens it
    conn.execute("SELECT count(*) FROM requests").fetchone()
    for sidecar in ("-wal", "-shm"):                                 # as SQLite leaves them meanwhile
        mine.with_name(mine.name + sidecar).write_bytes(b"x")
    assert spill.spilled(tmp_path, LEDGER_A) == []
    conn.close()
    gone = mine.with_name(mine.name.replace(f"taken-{os.getpid()}", "taken-999999999"))
    for sidecar in ("", "-wal", "-shm"):                             # its claimer was killed mid-read
        os.replace(mine.with_name(mine.name + sidecar), gone.with_name(gone.name + sidecar))
    assert spill.spilled(tmp_path, LEDGER_A) == [gone]
    again = spill.claim(gone)                                        # the next start takes it, not its sidecars
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(spill._prefix(LEDGER_A))] == [again.name]


def test_a_stop_whose_rows_cannot_be_kept_either_still_stops_and_says_so(tmp_path, monkeypatch, caplog):
    ledger = Ledger(tmp_path / "u.db", spill_dir=tmp_path / "unwritten", max_backoff=0.1)
    monkeypatch.setattr(ledger.backend, "insert", lambda batch: (_ for _ in ()).throw(sqlite3.OperationalError("down")))
    monkeypatch.setattr(spill, "spill", lambda *a: (_ for _ in ()).throw(PermissionError("read-only home")))
    ledger.start()
    ledger.add("requests", row(1))
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    ledger.close(timeout=5)
    assert "1 usage row(s) could not be written to" in caplog.text and "read-only home" in caplog.text


def test_a_file_that_cannot_be_read_is_left_there_with_a_warning_and_the_ledger_starts(tmp_path, caplog):
    """An error logged while mitmdump starts ends the start: a damaged file must not keep every
    instance on the machine from starting."""
    unwritten = tmp_path / "unwritten"
    unwritten.mkdir()
    ledger = Ledger(tmp_path / "u.db", spill_dir=unwritten)
    damaged = unwritten / f"{spill._prefix(ledger.backend.label)}20261205T000000000000Z-1.db"
    damaged.write_bytes(b"not a database, but long enough for SQLite to read a header from it" * 10)
    ledger.start()
    ledger.add("requests", row(1))
    ledger.close()
    assert [r.levelname for r in caplog.records if "cannot read the unwritten usage rows" in r.getMessage()] \
        == ["WARNING"]
    assert [p.name.partition(".taken-")[0] for p in unwritten.iterdir()] == [damaged.name]


def test_a_shared_ledger_whose_driver_is_missing_keeps_its_rows_for_the_next_start(tmp_path, monkeypatch, caplog):
    # the rows vanished: judging the driver's error asked the missing driver what a bad row is
    from ccswitch.config.database_url import PostgresURL
    from ccswitch.ledger import postgres

    def missing():
        raise postgres.DriverMissing("a PostgreSQL usage_db needs psycopg: pip install 'ccswitch[postgres]'")
    monkeypatch.setattr(postgres, "driver", missing)
    ledger = Ledger(PostgresURL.parse("postgresql://u:pw@127.0.0.1:9/db"), spill_dir=tmp_path / "unwritten",
                    max_backoff=0.1).start()
    ledger.add("requests", row(1))
    assert wait_for(lambda: "pip install 'ccswitch[postgres]'" in caplog.text)   # what the driver's refusal said
    assert ledger.pending == 1
    ledger.close(timeout=5)
    assert "1 usage row(s) could not be written to postgresql://u:***@127.0.0.1:9/db: kept in" in caplog.text
    [kept] = spill.spilled(tmp_path / "unwritten", ledger.backend.label)
    assert [r[1][_COLUMNS["requests"].index("request_id")] for r in spill.read(kept, _COLUMNS)] == [row(1)["request_id"]]


def test_a_file_an_older_ccswitch_left_is_read_with_null_in_the_columns_added_since(tmp_path):
    # a redeploy while PostgreSQL was down, then an upgrade: the new `activations.probe_id` was
    # selected from a file without it, and every start failed to read the file, its rows never written
    from tests.unit.ledger.test_ledger import ACTIVATION, row, schema_sql
    path = tmp_path / f"{spill._prefix(LEDGER_A)}20261205T000000000000Z-1.db"
    db = sqlite3.connect(path, isolation_level=None)
    for number in range(1, 6):                       # as schema version 5 left it
        db.executescript(schema_sql(number))
    older = {k: v for k, v in ACTIVATION.items() if k != "probe_id"}
    for table, values in (("requests", row(1)), ("activations", older)):
        db.execute(f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                   tuple(values.values()))
    db.close()
    read = spill.read(path, _COLUMNS)
    assert [r[1][0] for r in read if r[0] == "requests"] == ["r1"]
    assert [dict(zip(_COLUMNS["activations"], r[1], strict=True)) for r in read if r[0] == "activations"] == \
        [{**older, "probe_id": None}]


def test_a_stop_during_an_outage_spills_at_once_instead_of_retrying_past_the_sigkill(tmp_path, monkeypatch, caplog):
    # each try waited out the database (a silent PostgreSQL: its connect timeout), and a stop
    # tried three more times before spilling: 3.6-10 s, past `docker stop`'s 10 s with the drain
    import time

    def silent(batch):
        time.sleep(0.4)
        raise sqlite3.OperationalError("connection timeout expired")
    ledger = Ledger(tmp_path / "u.db", spill_dir=tmp_path / "unwritten")
    monkeypatch.setattr(ledger.backend, "insert", silent)
    ledger.start()
    ledger.add("requests", row(1))
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    started = time.monotonic()
    ledger.close(timeout=10)
    assert time.monotonic() - started < 3      # about 0.4 s now; 4 s and more before
    [kept] = spill.spilled(tmp_path / "unwritten", ledger.backend.label)
    assert [r[1][_COLUMNS["requests"].index("request_id")] for r in spill.read(kept, _COLUMNS)] == [row(1)["request_id"]]


def _gated_insert(ledger, monkeypatch, gate, fail_after=None):
    """The backend's insert waits for `gate`, then writes; past `fail_after` rows it refuses."""
    written = []
    insert = ledger.backend.insert

    def gated(batch):
        gate.wait(10)
        if fail_after is not None and len(written) + len(batch) > fail_after:
            raise sqlite3.OperationalError("down")
        insert(batch)
        written.extend(batch)
    monkeypatch.setattr(ledger.backend, "insert", gated)
    return written


def test_a_spill_file_stays_until_its_own_rows_are_written_not_rows_a_reload_put_before_them(tmp_path, monkeypatch):
    # a predecessor's rows (a reload) queued ahead of the spilled ones counted as theirs: the file
    # went while its rows were still only in memory, and a crash then lost them
    import threading
    unwritten = tmp_path / "unwritten"
    ledger = Ledger(tmp_path / "u.db", spill_dir=unwritten, batch=1, max_backoff=0.1)
    spill.spill(rows(1, 2), unwritten, _COLUMNS, ledger.backend.label)
    gate = threading.Event()
    written = _gated_insert(ledger, monkeypatch, gate, fail_after=3)
    ledger.start()
    [taken] = ledger._taken_files
    assert wait_for(lambda: ledger._hand)                # row 1 in the writer's hand, held at the gate
    assert ledger.take(rows(10, 11, 12))
    gate.set()
    assert wait_for(lambda: len(written) == 3)           # r1, r10, r11; then the database refuses
    time.sleep(0.1)
    assert taken.exists()                                # r2 is written by no one yet
    ledger.close(timeout=5)


def test_rows_an_earlier_stop_left_are_not_dropped_to_make_room_for_new_ones(tmp_path, monkeypatch):
    import threading
    unwritten = tmp_path / "unwritten"
    ledger = Ledger(tmp_path / "u.db", spill_dir=unwritten, max_pending=3, batch=1)
    spill.spill(rows(1, 2, 3, 4, 5), unwritten, _COLUMNS, ledger.backend.label)
    gate = threading.Event()
    written = _gated_insert(ledger, monkeypatch, gate)
    ledger.start()
    assert wait_for(lambda: ledger._hand)
    ledger.add("requests", row(6))
    ledger.add("requests", row(7))
    assert ledger.dropped == 0
    gate.set()
    assert wait_for(lambda: len(written) == 7)
    ledger.close(timeout=5)
    assert ledger.dropped == 0 and not list(unwritten.iterdir())


def _down(ledger, monkeypatch, hang_on=None, until=None):
    """The backend's insert refuses every try; try number `hang_on` first waits for `until`
    (a try waiting out a silent server's connect timeout).  Returns the batches tried."""
    tried = []

    def refuse(batch):
        tried.append(batch)
        if len(tried) == hang_on:
            until.wait(20)
        raise sqlite3.OperationalError("connection timeout expired")
    monkeypatch.setattr(ledger.backend, "insert", refuse)
    return tried


def _writing_while_down(tmp_path, monkeypatch, hang_on):
    """A started ledger with one row, whose database refuses every try and whose try number
    `hang_on` hangs until `release` is set: (ledger, its spill folder, the tries, release)."""
    import threading
    unwritten, release = tmp_path / "unwritten", threading.Event()
    ledger = Ledger(tmp_path / "u.db", spill_dir=unwritten)
    tried = _down(ledger, monkeypatch, hang_on=hang_on, until=release)
    ledger.start()
    ledger.add("requests", row(1))
    return ledger, unwritten, tried, release


def _kept_ids(ledger, unwritten):
    [kept] = spill.spilled(unwritten, ledger.backend.label)
    return [r[1][_COLUMNS["requests"].index("request_id")] for r in spill.read(kept, _COLUMNS)]


def test_a_stop_between_tries_in_an_outage_tries_no_more(tmp_path, monkeypatch, caplog):
    # woken from its backoff by the stop, the writer went for one more try (a connect timeout
    # more) before it saw the outage
    unwritten = tmp_path / "unwritten"
    ledger = Ledger(tmp_path / "u.db", spill_dir=unwritten)
    tried = _down(ledger, monkeypatch)
    ledger.start()
    ledger.add("requests", row(1))
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    time.sleep(0.1)                             # in its 0.5 s backoff
    ledger.close(timeout=10)
    assert len(tried) == 1
    assert _kept_ids(ledger, unwritten) == [row(1)["request_id"]]


def test_a_stop_while_a_try_hangs_on_the_database_does_not_wait_for_it(tmp_path, monkeypatch):
    # a try already waiting out the connect timeout when the stop came: the stop gives it a second,
    # then spills the rows it holds (should the try yet write them, the ledger skips a row it has)
    ledger, unwritten, tried, release = _writing_while_down(tmp_path, monkeypatch, hang_on=2)
    assert wait_for(lambda: len(tried) == 2)    # refused once, now hanging
    took = _close_timed(ledger, release)
    assert took < 3, took                       # about 1 s; the whole hang (here 10 s) before
    assert _kept_ids(ledger, unwritten) == [row(1)["request_id"]]


def test_a_stop_during_a_refused_try_ends_the_writer_with_it(tmp_path, monkeypatch):
    # not left to sleep its backoff (2 s by the third try, up to max_backoff) after the stop
    import threading
    ledger, unwritten, tried, release = _writing_while_down(tmp_path, monkeypatch, hang_on=3)
    assert wait_for(lambda: len(tried) == 3)    # after 0.5 s and 1 s of backoff
    threading.Timer(0.2, release.set).start()   # refused while the stop waits for it
    ledger.close(timeout=10)
    assert not ledger._thread.is_alive() and len(tried) == 3
    assert _kept_ids(ledger, unwritten) == [row(1)["request_id"]]


def test_a_spilled_row_the_database_rejects_no_longer_counts_over_the_bound(tmp_path, monkeypatch):
    # the room over max_pending is the spilled rows not yet written *nor dropped*: a rejected one
    # is no longer waiting to be written
    import threading
    unwritten = tmp_path / "unwritten"
    ledger = Ledger(tmp_path / "u.db", spill_dir=unwritten, max_pending=2, batch=1)
    spill.spill(rows(1, 2, 3), unwritten, _COLUMNS, ledger.backend.label)
    gate, insert, ids = threading.Event(), ledger.backend.insert, _COLUMNS["requests"].index("request_id")

    def rejects_1_holds_2(batch):
        [(_, values)] = batch
        if values[ids] == row(1)["request_id"]:
            raise sqlite3.IntegrityError("CHECK constraint failed")
        if values[ids] == row(2)["request_id"]:
            gate.wait(10)
        insert(batch)
    monkeypatch.setattr(ledger.backend, "insert", rejects_1_holds_2)
    ledger.start()
    # row 1 rejected, row 2 in hand (not row 1 still, a moment before the writer lets it go)
    assert wait_for(lambda: ledger.dropped == 1 and [values[ids] for _, values in ledger._hand] == [row(2)["request_id"]])
    for i in (6, 7, 8):                  # room for 2, and for spilled rows 2 and 3: 4 pending with row 3
        ledger.add("requests", row(i))
    assert ledger.dropped == 1
    ledger.add("requests", row(9))
    assert ledger.dropped == 2
    gate.set()
    ledger.close(timeout=5)


def test_a_stop_while_the_first_write_hangs_keeps_its_rows_within_seconds(tmp_path, monkeypatch, caplog):
    # a server that takes the connection and never answers (a frozen PostgreSQL): no try had failed,
    # so the stop waited its whole 10 s for the write, and `docker stop`'s SIGKILL at 10 s lost the rows
    unwritten = tmp_path / "unwritten"
    ledger, release = _writing_held(Ledger(tmp_path / "u.db", spill_dir=unwritten), monkeypatch, 20)
    ledger.add("requests", row(2))
    took = _close_timed(ledger, release)
    assert took < 4, took                       # about 1.5 s
    assert sorted(_kept_ids(ledger, unwritten)) == [row(1)["request_id"], row(2)["request_id"]]
    assert "has not answered a write for" in caplog.text


def test_a_stop_waits_for_a_slow_flush_that_goes_on_writing(tmp_path, monkeypatch):
    # each batch slower than the stall limit's share, but the flush moves: nothing spilled
    unwritten = tmp_path / "unwritten"
    ledger = Ledger(tmp_path / "u.db", spill_dir=unwritten, batch=1)
    insert = ledger.backend.insert

    def slow(batch):
        time.sleep(0.6)
        insert(batch)
    monkeypatch.setattr(ledger.backend, "insert", slow)
    ledger.start()
    for n in range(1, 6):
        ledger.add("requests", row(n))
    ledger.close(timeout=10)                    # about 3 s, twice the stall limit
    assert ledger.written == 5
    assert not unwritten.exists() or not list(unwritten.iterdir())


def test_a_write_that_hangs_is_logged_once_and_so_is_its_answer(tmp_path, monkeypatch, caplog):
    # a frozen server raises nothing: rows piled up in memory for minutes without a word in the log

    from ccswitch.ledger import writer
    monkeypatch.setattr(writer, "_STALL_TELL", 0.3)
    ledger, release = _writing_held(Ledger(tmp_path / "u.db", spill_dir=tmp_path / "unwritten", batch=1),
                                    monkeypatch, 20)
    try:
        ledger.add("requests", row(2))
        assert "has not answered a write" not in caplog.text    # not yet that long
        time.sleep(0.4)
        for n in (3, 4):
            ledger.add("requests", row(n))
        assert caplog.text.count("has not answered a write for") == 1
        assert ledger.trouble.startswith("no answer to a write for ")    # the live page's and the metrics'
    finally:
        release.set()
    assert wait_for(lambda: ledger.written == 4)
    assert ledger.trouble is None
    assert caplog.text.count("answered again") == 1
    ledger.close(timeout=5)


def test_a_stop_without_a_spill_file_waits_its_whole_timeout_for_a_slow_write(tmp_path, monkeypatch):
    # with nowhere else to keep them, rows given up after the stall limit's 1.5 s are lost: the
    # stop waits for a write that answers late instead
    ledger, _ = _writing_held(Ledger(tmp_path / "u.db"), monkeypatch, 2.5)
    ledger.add("requests", row(2))
    ledger.close(timeout=10)
    assert ledger.written == 2


def test_a_stop_waits_for_a_slow_flush_that_goes_on_rejecting_rows(tmp_path, monkeypatch):
    # a row the database refuses is progress as much as one it takes: counted as a stall, the
    # rows still to come were spilled, to be refused again at the next start
    unwritten = tmp_path / "unwritten"
    ledger = Ledger(tmp_path / "u.db", spill_dir=unwritten, batch=1)

    def slow_refusal(batch):
        time.sleep(0.4)
        raise sqlite3.IntegrityError("CHECK constraint failed")
    monkeypatch.setattr(ledger.backend, "insert", slow_refusal)
    ledger.start()
    for n in range(1, 4):
        ledger.add("requests", row(n))
    ledger.close(timeout=10)                    # each row refused twice (its batch, then alone): 0.8 s
    assert ledger.dropped == 3
    assert not unwritten.exists() or not list(unwritten.iterdir())


def test_a_ledger_idle_after_its_last_write_is_in_no_trouble(tmp_path, monkeypatch, caplog):
    # the write's start outliving the write read as a hang once the ledger sat idle a while
    from ccswitch.ledger import writer
    monkeypatch.setattr(writer, "_STALL_TELL", 0.2)
    ledger = Ledger(tmp_path / "u.db", spill_dir=tmp_path / "unwritten", batch=1)
    ledger.start()
    try:
        ledger.add("requests", row(1))
        assert wait_for(lambda: ledger.written == 1)
        time.sleep(0.4)
        assert ledger.trouble is None
        ledger.add("requests", row(2))
        assert "has not answered a write" not in caplog.text
    finally:
        ledger.close(timeout=5)


def test_a_write_of_a_second_or_so_is_not_yet_called_a_hang(tmp_path, monkeypatch, caplog):
    # a busy server takes a second now and then: said to hang only after 10 s
    ledger, release = _writing_held(Ledger(tmp_path / "u.db", spill_dir=tmp_path / "unwritten", batch=1),
                                    monkeypatch, 5)
    try:
        time.sleep(1.2)
        ledger.add("requests", row(2))
        assert ledger.trouble is None and "has not answered a write" not in caplog.text
    finally:
        release.set()
    ledger.close(timeout=5)
    assert ledger.written == 2


def _writing_held(ledger, monkeypatch, most: float):
    """`ledger` started, its writes waiting for the returned event (at most `most` seconds) before
    they go in, and row 1 in its writer's hand: (ledger, the event)."""
    import threading
    release = threading.Event()
    insert = ledger.backend.insert

    def held(batch):
        release.wait(most)
        insert(batch)
    monkeypatch.setattr(ledger.backend, "insert", held)
    ledger.start()
    ledger.add("requests", row(1))
    assert wait_for(lambda: ledger._hand)
    return ledger, release


def _close_timed(ledger, release) -> float:
    """Seconds `ledger.close(timeout=10)` took; its held write let go after, whatever happened."""
    started = time.monotonic()
    try:
        ledger.close(timeout=10)
        return time.monotonic() - started
    finally:
        release.set()
