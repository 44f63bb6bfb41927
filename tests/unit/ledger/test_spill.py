"""Rows a ledger could not take before a stop: kept in a file for the same ledger's next start,
whatever the rows hold, never read half-written, never taken twice."""

import os
import sqlite3

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


def test_a_stop_whose_rows_cannot_be_kept_either_still_stops_and_says_so(tmp_path, monkeypatch, caplog):
    ledger = Ledger(tmp_path / "u.db", spill_dir=tmp_path / "unwritten", max_backoff=0.1)
    monkeypatch.setattr(ledger.backend, "insert", lambda batch: (_ for _ in ()).throw(sqlite3.OperationalError("down")))
    monkeypatch.setattr(spill, "spill", lambda *a: (_ for _ in ()).throw(PermissionError("read-only home")))
    ledger.start()
    ledger.add("requests", row(1))
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    ledger.close(timeout=5)
    assert "1 usage row(s) could not be written to" in caplog.text and "read-only home" in caplog.text
