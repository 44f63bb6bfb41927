"""The report's attempts per upstream: an upstream that failed and was rescued by another shows
its failures (the usage tables credit the request to the rescuer); a try the client cut is no
failure of the upstream's. Days are the rules' (Asia/Shanghai, UTC+8)."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from ccswitch.ledger.schema import connect
from ccswitch.report import text
from ccswitch.report.attempts import failure_kind
from ccswitch.report.html import render_html
from tests.unit.report.test_report import insert_request
from tests.unit.report.test_views import build, cli

MAR1, MAR2 = date(2026, 3, 1), date(2026, 3, 2)

# (request's ts, [(upstream, status, error), ...]); the last attempt answered the client
REQUESTS = [
    ("2026-03-01T02:00:00.000+00:00", [("relay-a", 429, "HTTP 429"), ("relay-a", 429, "HTTP 429: slow down"),
                                        ("anthropic-official", 200, None)]),
    ("2026-03-01T03:00:00.000+00:00", [("relay-a", None, "connection refused"),
                                        ("anthropic-official", 200, "stream error: overloaded_error: Overloaded")]),
    ("2026-03-01T04:00:00.000+00:00", [("anthropic-official", None, "client_closed")]),
    ("2026-02-28T15:30:00.000+00:00", [("relay-a", 500, "HTTP 500")]),              # Feb 28 23:30 local: before
    ("2026-02-28T16:30:00.000+00:00", [("relay-a", None, "first_byte timeout")]),   # Mar 1 00:30 local: in
]


def make_db(tmp_path: Path, requests=REQUESTS) -> Path:
    path = tmp_path / "usage.db"
    conn = connect(str(path))
    for i, (ts, tries) in enumerate(requests):
        upstream, status, error = tries[-1]
        insert_request(conn, i, ts=ts, upstream=upstream, model="claude-haiku-4-5", status=status, error=error,
                       attempts=0)      # its attempts are written below, as the ledger does
        for n, (up, st, err) in enumerate(tries, 1):
            conn.execute("INSERT INTO attempts (request_id, ts, n, upstream, status, error, ms) VALUES (?,?,?,?,?,?,?)",
                         (f"r{i}-{ts}", ts, n, up, st, err, 100))
    conn.close()
    return path


@pytest.mark.parametrize("error, kind", [
    ("HTTP 429", "HTTP 429"),
    ("HTTP 503: upstream says: try later", "HTTP 503"),
    ("connection refused", "connection refused"),
    ("stream error: overloaded_error: Overloaded: come back", "stream error: overloaded_error"),
    ("stream error", "stream error"),
])
def test_alike_failures_count_together(error, kind):
    assert failure_kind(error) == kind


def test_each_upstream_s_attempts_in_the_period_s_local_days(tmp_path):
    report = build(make_db(tmp_path), MAR1, MAR2)
    by_name = {a.upstream: a for a in report.attempts}
    relay, official = by_name["relay-a"], by_name["anthropic-official"]
    assert [a.upstream for a in report.attempts] == ["relay-a", "anthropic-official"]    # most attempts first
    assert (relay.attempts, relay.failed, relay.cut_by_client) == (4, 4, 0)             # not Feb 28's HTTP 500
    assert dict(relay.kinds) == {"HTTP 429": 2, "connection refused": 1, "first_byte timeout": 1}
    assert (official.attempts, official.failed, official.cut_by_client) == (3, 1, 1)
    assert dict(official.kinds) == {"stream error: overloaded_error": 1}
    # the usage credits relay-a with the one request it answered (the timeout's own row), not its failures
    assert report.summary["upstream"]["relay-a"].requests == 1


def test_the_text_report_names_the_failures_of_an_upstream_that_was_rescued(tmp_path, capsys):
    assert cli(tmp_path, make_db(tmp_path), "--since", "2026-03-01", "--until", "2026-03-02") == 0
    out = capsys.readouterr().out
    lines = out[out.index("Attempts per upstream"):].splitlines()
    assert lines[1].split() == ["Upstream", "Attempts", "Failed", "Failed", "%", "Cut", "by", "client",
                                "Most", "common", "failures"]
    assert lines[3].split() == ["relay-a", "4", "4", "100.0%", "0", "HTTP", "429", "x2,", "connection", "refused",
                                "x1", "(+1", "more)"]
    assert lines[4].split() == ["anthropic-official", "3", "1", "33.3%", "1", "stream", "error:",
                                "overloaded_error", "x1"]


def test_the_usage_by_upstream_says_where_the_failures_of_rescued_upstreams_are(tmp_path):
    # it credits a failover to the upstream that answered: relay-a looked as if it never failed
    out = text.render_table(build(make_db(tmp_path), MAR1, MAR2))
    by_upstream = out.split("By upstream:\n")[1].split("\n\n")[0]
    assert by_upstream.splitlines()[-1] == text.RESCUED
    assert "counts for the upstream that answered" in render_html(build(tmp_path / "usage.db", MAR1, MAR2), [])


def test_the_table_is_left_out_of_the_text_when_no_attempt_failed(tmp_path):
    ok = [("2026-03-01T02:00:00.000+00:00", [("relay-a", 200, None)]),
          ("2026-03-01T03:00:00.000+00:00", [("relay-a", None, "client_closed")])]
    report = build(make_db(tmp_path, ok), MAR1, MAR2)
    assert [(a.attempts, a.failed, a.cut_by_client) for a in report.attempts] == [(2, 0, 1)]
    assert "Attempts per upstream" not in text.render_table(report)
    assert "Attempts per upstream" in render_html(report, [])     # the page has room for it


def test_json_and_html_carry_every_failure(tmp_path):
    report = build(make_db(tmp_path), MAR1, MAR2)
    data = json.loads(json.dumps(text.report_json(report)))
    assert data["attempts_by_upstream"]["relay-a"] == {
        "attempts": 4, "failed": 4, "cut_by_client": 0,
        "failures": {"HTTP 429": 2, "connection refused": 1, "first_byte timeout": 1}}
    assert data["attempts_by_upstream"]["anthropic-official"]["cut_by_client"] == 1
    page = render_html(report, [])
    assert ("<td>relay-a</td><td>4</td><td>4</td><td>100.0%</td><td>0</td>"
            '<td style="text-align:left">HTTP 429 x2, connection refused x1 (+1 more)</td>') in page
    assert '<th style="text-align:left">Most common failures</th>' in page     # a text, after the numbers


def test_a_ledger_without_attempts_reports_none(tmp_path):
    path = make_db(tmp_path, [])
    conn = connect(str(path))
    conn.execute("DROP TABLE attempts")
    conn.close()
    assert build(path, MAR1, MAR2).attempts == []


# one minute of Mar 2 (the period's last local day, 10:00 in Shanghai): alike attempts share a row
# of the grouped read, and each of them counts
ONE_MINUTE = [
    ("2026-03-02T02:00:00.000+00:00", [("relay-a", None, "connection refused"), ("relay-a", None, "connection refused"),
                                        ("relay-b", 200, None)]),
    ("2026-03-02T02:00:20.000+00:00", [("relay-a", 429, "HTTP 429"), ("relay-b", 200, None)]),
    ("2026-03-02T02:00:30.000+00:00", [("relay-a", 200, None)]),
    ("2026-03-02T02:00:40.000+00:00", [("relay-a", None, "killed")]),         # killed in mitmproxy: cut
    ("2026-03-02T02:00:50.000+00:00", [("relay-a", None, "killed")]),
]


def test_alike_attempts_in_one_minute_each_count_and_a_killed_flow_is_cut_by_the_client(tmp_path):
    report = build(make_db(tmp_path, ONE_MINUTE), MAR1, MAR2)
    relay, other = report.attempts
    assert (relay.upstream, relay.attempts, relay.failed, relay.cut_by_client) == ("relay-a", 6, 3, 2)
    assert dict(relay.kinds) == {"connection refused": 2, "HTTP 429": 1}
    assert (other.upstream, other.attempts, other.failed, other.cut_by_client) == ("relay-b", 2, 0, 0)
    assert relay.most_common() == "connection refused x2, HTTP 429 x1"        # two kinds: none more
    failures = json.loads(json.dumps(text.report_json(report)))["attempts_by_upstream"]["relay-a"]["failures"]
    assert list(failures) == ["connection refused", "HTTP 429"]               # the most common first


def test_the_text_table_s_names_and_failures_are_left_aligned_and_its_counts_right(tmp_path):
    lines = text.attempt_lines(build(make_db(tmp_path), MAR1, MAR2))
    head, official = lines[0], lines[3]
    assert official.startswith("anthropic-official  ")
    assert official.index("stream error: overloaded_error x1") == head.index("Most common failures")
    assert official.index("33.3%") + len("33.3%") == head.index("Failed %") + len("Failed %")


def test_the_page_has_no_attempts_table_without_attempts(tmp_path):
    report = build(make_db(tmp_path, []), MAR1, MAR2)
    assert report.attempts == [] and "Attempts per upstream" not in render_html(report, [])


def test_count_tokens_requests_are_left_out_as_from_every_figure(tmp_path):
    # a relay without count_tokens answers each with a 404 and the next upstream is asked: no failure rate
    path = make_db(tmp_path)
    conn = connect(str(path))
    ts = "2026-03-01T05:00:00.000+00:00"
    insert_request(conn, 99, ts=ts, endpoint="count_tokens", upstream="anthropic-official", attempts=0)
    for n, (up, st, err) in enumerate([("relay-a", 404, "HTTP 404"), ("anthropic-official", 200, None)], 1):
        conn.execute("INSERT INTO attempts (request_id, ts, n, upstream, status, error, ms) VALUES (?,?,?,?,?,?,?)",
                     (f"r99-{ts}", ts, n, up, st, err, 10))
    conn.close()
    by_name = {a.upstream: a for a in build(path, MAR1, MAR2).attempts}
    assert (by_name["relay-a"].attempts, by_name["relay-a"].failed) == (4, 4) and "HTTP 404" not in by_name["relay-a"].kinds
    assert by_name["anthropic-official"].attempts == 3
