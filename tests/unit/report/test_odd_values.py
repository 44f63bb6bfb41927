"""A ledger row whose numeric column holds text (a hand-edited or foreign database) is read, not a
traceback: token counts as 0, a latency or first-byte time as missing (as NULL is).  A text column
holding bytes that are no UTF-8, or a BLOB, is read as text, the bytes that are no UTF-8 replaced."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ccswitch.cli import report as report_cli
from ccswitch.config.load import parse_rules
from ccswitch.ledger.schema import connect
from ccswitch.report.spend import ledger_spend
from tests.unit.report.test_report import RULES, insert_request, write_rules

TS = "2026-03-01T02:00:00.000+00:00"


def odd_db(tmp_path, **odd):
    path = tmp_path / "usage.db"
    conn = connect(str(path))
    insert_request(conn, 0, ts=TS, upstream="relay-b", model="gpt-4.1", input_tokens=1000, output_tokens=10,
                   latency_ms=1000, ttfb_ms=200)
    insert_request(conn, 1, ts=TS, upstream="relay-b", model="gpt-4.1", **odd)
    conn.commit()
    conn.close()
    return path


def report_json(tmp_path, capsys, db) -> dict:
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db), "--since", "2026-03-01",
                          "--until", "2026-03-01", "--json"])
    captured = capsys.readouterr()
    assert rc == 0 and "Traceback" not in captured.err
    return json.loads(captured.out)


def test_a_latency_that_is_no_number_is_left_out_of_the_latency(tmp_path, capsys):
    data = report_json(tmp_path, capsys, odd_db(tmp_path, latency_ms="x", ttfb_ms="y"))
    assert data["totals"]["requests"] == 2
    assert data["latency"]["requests"] == 1 and data["latency"]["latency_p50_ms"] == 1000


def test_a_first_byte_time_that_is_no_number_is_missing(tmp_path, capsys):
    data = report_json(tmp_path, capsys, odd_db(tmp_path, latency_ms=3000, ttfb_ms="y"))
    assert data["latency"]["requests"] == 2 and data["latency"]["ttfb_p50_ms"] == 200


def test_numeric_text_is_its_number(tmp_path, capsys):
    data = report_json(tmp_path, capsys, odd_db(tmp_path, latency_ms="3000", ttfb_ms="400.0"))
    assert data["latency"]["requests"] == 2 and data["latency"]["ttfb_p95_ms"] > 200


def test_budget_spend_counts_text_tokens_as_0(tmp_path):
    db = odd_db(tmp_path, input_tokens="abc", output_tokens="1000")
    spend = ledger_spend(db, parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "k"}), datetime(2026, 3, 1, tzinfo=UTC))
    assert spend.error is None and len(spend.rows) == 2
    assert spend.rows[1][3] > 0         # the 1000 output tokens given as text are priced


def test_budget_spend_survives_a_time_it_cannot_read_and_counts_no_negative_tokens(tmp_path):
    # a `25:00` row kept a proxy with a budget from starting; -10M tokens offset the real spend
    db = odd_db(tmp_path, input_tokens=-10_000_000, output_tokens=2.4)
    conn = connect(str(db))
    insert_request(conn, 2, ts="2026-03-01T25:00:00.000+00:00", upstream="relay-b", model="gpt-4.1", input_tokens=5)
    conn.commit()
    conn.close()
    spend = ledger_spend(db, parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "k"}), datetime(2026, 3, 1, tzinfo=UTC))
    assert spend.error is None and spend.unreadable == 1 and len(spend.rows) == 2
    assert spend.rows[1][3] > 0 and spend.rows[1][3] < spend.rows[0][3]    # 2 output tokens, no -10M input


def test_budget_spend_reads_a_hand_written_offset_as_the_instant_it_names(tmp_path):
    # the month's bounds were compared with the text: `08:00+09:00` on the 1st (23:00 UTC the day
    # before) counted in the month, `20:00-05:00` on the last day (01:00 UTC the next) left out
    db = odd_db(tmp_path)
    conn = connect(str(db))
    for n, ts in enumerate(["2026-03-01T08:00:00.000+09:00", "2026-02-28T20:00:00-05:00", "2026-03-31T20:00:00-05:00",
                            "2026-03-31T23:30:00Z"]):
        insert_request(conn, 10 + n, ts=ts, upstream="relay-b", model="gpt-4.1", input_tokens=7)
    conn.commit()
    conn.close()
    spend = ledger_spend(db, parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "k"}), datetime(2026, 3, 1, tzinfo=UTC),
                         datetime(2026, 4, 1, tzinfo=UTC))
    assert spend.error is None and spend.unreadable == 0
    assert sorted(ts.isoformat() for ts, *_ in spend.rows) == [
        "2026-03-01T01:00:00+00:00", "2026-03-01T02:00:00+00:00", "2026-03-01T02:00:00+00:00",
        "2026-03-31T23:30:00+00:00"]


# what SQLite keeps in a text column besides text: bytes that are no UTF-8 (a hand edit's
# `CAST(X'..' AS TEXT)`: "gpt" and two stray bytes), and a BLOB another tool wrote (b"gpt-4.1")
NOT_TEXT = {"no-utf8": "CAST(X'67707480ff' AS TEXT)", "blob": "X'6770742d342e31'"}


def with_second_row_set(db, table: str, column: str, sql_value: str):
    conn = connect(str(db))
    conn.execute(f"UPDATE {table} SET {column} = {sql_value} WHERE request_id LIKE 'r1-%'")
    conn.commit()
    conn.close()
    return db


@pytest.mark.parametrize("column", ["model", "upstream_model", "upstream", "client"])
@pytest.mark.parametrize("stored", NOT_TEXT)
def test_budget_spend_reads_a_name_that_is_no_text_as_text(tmp_path, column, stored):
    # one such row of the month made every budget count from $0
    db = with_second_row_set(odd_db(tmp_path, input_tokens=1000, client="alice"), "requests", column, NOT_TEXT[stored])
    spend = ledger_spend(db, parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "k"}), datetime(2026, 3, 1, tzinfo=UTC))
    assert spend.error is None
    assert spend.requests >= 1 and spend.rows[0][3] > 0
    assert not [name for _, upstream, client, _ in spend.rows for name in (upstream, client) if isinstance(name, bytes)]


@pytest.mark.parametrize("column", ["model", "upstream_model", "upstream", "route", "session", "client"])
@pytest.mark.parametrize("stored", NOT_TEXT)
def test_the_report_reads_a_name_that_is_no_text_as_text(tmp_path, capsys, column, stored):
    db = with_second_row_set(odd_db(tmp_path), "requests", column, NOT_TEXT[stored])
    assert report_json(tmp_path, capsys, db)["totals"]["requests"] == 2
    by = "model" if column == "upstream_model" else column
    assert report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db), "--since", "2026-03-01",
                            "--until", "2026-03-01", "--by", by]) == 0
    assert ("gpt\ufffd\ufffd" if stored == "no-utf8" else "gpt-4.1") in capsys.readouterr().out


@pytest.mark.parametrize("stored", NOT_TEXT)
def test_an_attempt_s_error_that_is_no_text_is_a_failure_kind(tmp_path, capsys, stored):
    db = odd_db(tmp_path, attempts=2)
    with_second_row_set(db, "attempts", "error", NOT_TEXT[stored])
    failures = report_json(tmp_path, capsys, db)["attempts_by_upstream"]["relay-b"]["failures"]
    assert list(failures) == ["gpt\ufffd\ufffd" if stored == "no-utf8" else "gpt-4.1"]


@pytest.mark.parametrize("stored", NOT_TEXT)
def test_a_hand_written_offset_row_whose_model_is_no_text(tmp_path, capsys, stored):
    # both at once: `11:00+09:00` is 02:00 UTC on the 1st, its model a BLOB or bytes that are no UTF-8
    db = odd_db(tmp_path)
    conn = connect(str(db))
    insert_request(conn, 10, ts="2026-03-01T11:00:00.000+09:00", upstream="relay-b", model="gpt-4.1", input_tokens=7)
    conn.execute(f"UPDATE requests SET model = {NOT_TEXT[stored]} WHERE request_id LIKE 'r10-%'")
    conn.commit()
    conn.close()
    spend = ledger_spend(db, parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "k"}), datetime(2026, 3, 1, tzinfo=UTC),
                         datetime(2026, 4, 1, tzinfo=UTC))
    assert spend.error is None and spend.unreadable == 0
    if stored == "blob":        # b"gpt-4.1" is priced as gpt-4.1, on the instant its time names
        assert sorted(ts.isoformat() for ts, *_ in spend.rows) == ["2026-03-01T02:00:00+00:00"] * 3
    else:                       # "gpt\ufffd\ufffd" is a model with no price, said so
        assert spend.unpriced == {"gpt\ufffd\ufffd"} and len(spend.rows) == 2
    assert report_json(tmp_path, capsys, db)["totals"]["requests"] == 3
    assert report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db), "--since", "2026-03-01",
                            "--until", "2026-03-01", "--by", "model"]) == 0
    assert ("gpt\ufffd\ufffd" if stored == "no-utf8" else "gpt-4.1") in capsys.readouterr().out
