"""`ccswitch report` refuses days it cannot compute and an --out it cannot write: a message, exit 1."""
from __future__ import annotations

import pytest

from ccswitch.cli import report as report_cli
from tests.unit.report.test_report import small_db, write_rules  # noqa: F401 (a fixture)


@pytest.mark.parametrize("options", [["--until", "9999-12-31"], ["--since", "0001-01-01"], ["--days", "100000000"],
                                     ["--hours", "9999-12-31"], ["--hours", "0001-01-01"],
                                     ["--until", "9999-12-31", "--period", "month"],
                                     ["--since", "0001-01-01", "--period", "week"]])
def test_days_beyond_what_a_report_covers_are_a_message_not_a_traceback(small_db, tmp_path, capsys,  # noqa: F811
                                                                          options):
    assert report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(small_db), *options]) == 1
    assert "a report covers the days from 1970-01-01 to 9998-12-31" in capsys.readouterr().err


def test_the_first_and_last_days_it_covers_still_work(small_db, tmp_path):  # noqa: F811
    rules = str(write_rules(tmp_path))
    assert report_cli.main(["--rules", rules, "--db", str(small_db), "--since", "1970-01-01", "--until",
                            "1970-01-03", "--period", "week"]) == 0
    assert report_cli.main(["--rules", rules, "--db", str(small_db), "--hours", "9998-12-31"]) == 0


@pytest.mark.parametrize("where", ["a file", "under a file", "/proc/ccswitch-nope"])
def test_an_out_directory_that_cannot_be_written_is_a_message(small_db, tmp_path, capsys, where):  # noqa: F811
    (tmp_path / "afile").write_text("x")
    out = {"a file": tmp_path / "afile", "under a file": tmp_path / "afile" / "charts"}.get(where, where)
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(small_db), "--since", "2026-03-01",
                          "--until", "2026-03-02", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"--out {out}: cannot write there (" in err and "Traceback" not in err


@pytest.mark.parametrize("table", ["notes (text TEXT)", "requests (id INTEGER PRIMARY KEY, foo TEXT)"])
def test_a_database_that_is_not_a_ccswitch_ledger_is_said_so(tmp_path, capsys, table):
    import sqlite3
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute(f"CREATE TABLE {table}")
    assert report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(other)]) == 1
    assert f"{other} holds no ccswitch usage tables" in capsys.readouterr().err
