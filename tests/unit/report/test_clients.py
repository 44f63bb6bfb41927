"""`ccswitch report --by client`: who spent what, by the client key's name."""

from datetime import date

from ccswitch.cli import report as report_cli
from ccswitch.config.load import parse_rules
from ccswitch.ledger import schema
from ccswitch.report.data import build_report
from tests.unit.report.test_report import RULES, insert_request, write_rules


def make_db(path):
    conn = schema.connect(str(path))
    rows = [("alice", 1000), ("alice", 500), ("bob", 200), (None, 50)]
    for n, (client, tokens) in enumerate(rows):
        request_id = f"c{n}"
        insert_request(conn, n, request_id=request_id, ts=f"2026-03-01T0{n + 1}:00:00.000+00:00", upstream="relay-a",
                       model="claude-sonnet-4-5", input_tokens=tokens)
        conn.execute("UPDATE requests SET client = ? WHERE request_id = ?", (client, request_id))
    conn.close()


def test_by_client_groups_and_prices_each_client(tmp_path, capsys):
    path = tmp_path / "usage.db"
    make_db(path)
    with schema.connect(str(path), readonly=True) as conn:
        rules = parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"})
        report = build_report(conn, rules, date(2026, 3, 1), date(2026, 3, 1), "client", db_path=str(path))
    clients = report.summary["client"]
    assert {k: v.input for k, v in clients.items()} == {"alice": 1500, "bob": 200, "(no client key)": 50}
    assert clients["alice"].cost > clients["bob"].cost > 0
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(path), "--since", "2026-03-01",
                          "--until", "2026-03-01", "--by", "client"])
    out = capsys.readouterr().out
    assert rc == 0 and "alice" in out and "bob" in out and "(no client key)" in out
