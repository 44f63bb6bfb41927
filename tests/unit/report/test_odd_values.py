"""A ledger row whose numeric column holds text (a hand-edited or foreign database) is read, not a
traceback: token counts as 0, a latency or first-byte time as missing (as NULL is)."""
from __future__ import annotations

import json
from datetime import UTC, datetime

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
