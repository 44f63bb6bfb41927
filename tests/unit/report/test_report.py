"""`ccswitch report`: totals, cost, time-zone days, JSON, charts, HTML, messages."""
from __future__ import annotations

import contextlib
import io
import json
import math
import random
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ccswitch.cli import app as cli
from ccswitch.cli import report as report_cli
from ccswitch.config.load import parse_rules
from ccswitch.ledger.schema import connect
from ccswitch.report import text as report
from ccswitch.report.charts import CHART_FILES
from ccswitch.report.data import Report, build_report
from ccswitch.report.spend import ledger_spend
from tests.support import REPO as ROOT

RULES = """\
timezone: Asia/Shanghai
upstreams:
  - {name: anthropic-official, protocol: anthropic, base_url: "https://api.anthropic.com", auth: client}
  - {name: relay-a, protocol: anthropic, base_url: "https://relay-a.example.com", api_key: "${RELAY_A_KEY_FOR_TEST}",
     price_multiplier: 0.3}
  - {name: openai-official, protocol: openai-responses, base_url: "https://api.openai.com/v1", auth: client}
  - {name: relay-b, protocol: openai-chat, base_url: "https://relay-b.example.com/v1", api_key: k, price_multiplier: 0.5}
routes: {claude: [relay-a, anthropic-official], codex: [openai-official], chat: [relay-b]}
"""

REQ_COLS = ("request_id", "ts", "route", "endpoint", "upstream", "model", "upstream_model", "status", "stream",
            "attempts", "input_tokens", "output_tokens", "cache_creation_tokens", "cache_creation_1h_tokens",
            "cache_read_tokens", "reasoning_tokens", "latency_ms", "ttfb_ms", "error")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def insert_request(conn, n: int = 0, **row) -> None:
    row.setdefault("request_id", f"r{n}-{row['ts']}")
    defaults = {"route": "claude", "endpoint": "messages", "upstream": None, "model": None, "upstream_model": None,
                "status": 200, "stream": 1, "attempts": 1, "input_tokens": 0, "output_tokens": 0,
                "cache_creation_tokens": 0, "cache_creation_1h_tokens": 0, "cache_read_tokens": 0,
                "reasoning_tokens": 0, "latency_ms": 1000, "ttfb_ms": 300, "error": None}
    values = [row.get(c, defaults.get(c)) for c in REQ_COLS]
    conn.execute(f"INSERT INTO requests ({', '.join(REQ_COLS)}) VALUES ({', '.join('?' * len(REQ_COLS))})", values)
    for i in range(1, (row.get("attempts") or 0) + 1):
        last = i == row.get("attempts")
        conn.execute("INSERT INTO attempts (request_id, ts, n, upstream, status, error, ms) VALUES (?,?,?,?,?,?,?)",
                     (row["request_id"], row["ts"], i, row.get("upstream") or "relay-a",
                      row.get("status", 200) if last else 529, None if last else "overloaded", 500))


def insert_activation(conn, ts: str, upstream: str, ok: bool, status: int | None = 200, error: str | None = None):
    conn.execute("INSERT INTO activations (ts, upstream, status, ok, error, latency_ms) VALUES (?,?,?,?,?,?)",
                 (ts, upstream, status, int(ok), error, 800))


def write_rules(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES + extra)
    return path


@pytest.fixture(autouse=True)
def _no_relay_key(monkeypatch):
    # the report needs no secrets: an unset ${VAR} in rules.yaml must not stop it
    monkeypatch.delenv("RELAY_A_KEY_FOR_TEST", raising=False)


# --------------------------------------------------------------------------- small, hand-computed database

@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    path = tmp_path / "usage.db"
    conn = connect(str(path))
    rows = [
        # 10:00 on Mar 1 in Shanghai; relay-a (x0.3); 1h writes are part of the 10000 written
        dict(ts="2026-03-01T02:00:00.000+00:00", upstream="relay-a", model="claude-sonnet-4-5",
             upstream_model="claude-sonnet-4-5-20250929", attempts=2, input_tokens=1000, output_tokens=2000,
             cache_creation_tokens=10000, cache_creation_1h_tokens=4000, cache_read_tokens=100000,
             reasoning_tokens=500),
        # 23:30 UTC on Feb 28 is 07:30 on Mar 1 in Shanghai
        dict(ts="2026-02-28T23:30:00.000+00:00", upstream="anthropic-official", model="claude-opus-4-5",
             input_tokens=2000, output_tokens=1000),
        # 23:30 UTC on Mar 1 is Mar 2 in Shanghai
        dict(ts="2026-03-01T23:30:00.000+00:00", route="codex", endpoint="responses", upstream="openai-official",
             model="gpt-5-codex", input_tokens=10000, output_tokens=500, cache_read_tokens=90000),
        dict(ts="2026-03-02T03:00:00.000+00:00", upstream="relay-a", model="claude-sonnet-4-5", status=529,
             attempts=3, error="overloaded"),
        dict(ts="2026-03-02T04:00:00.000+00:00", upstream=None, model="claude-sonnet-4-5", status=503, attempts=0,
             error="no upstream available"),
        dict(ts="2026-03-02T05:00:00.000+00:00", route="chat", endpoint="chat", upstream="relay-b",
             model="mystery-1", input_tokens=100, output_tokens=50),
        # count_tokens: left out everywhere (but counted: two in the same minute are two)
        dict(ts="2026-03-01T03:00:00.000+00:00", endpoint="count_tokens", upstream="relay-a",
             model="claude-sonnet-4-5", input_tokens=5000, status=500, error="x", attempts=2),
        dict(ts="2026-03-01T03:00:20.000+00:00", endpoint="count_tokens", upstream="relay-a",
             model="claude-sonnet-4-5", input_tokens=5000),
        # outside the two local days
        dict(ts="2026-02-28T15:59:00.000+00:00", upstream="relay-a", model="claude-opus-4-5", input_tokens=7),
        dict(ts="2026-03-02T16:00:00.000+00:00", upstream="relay-a", model="claude-opus-4-5", input_tokens=7),
    ]
    for i, row in enumerate(rows):
        insert_request(conn, i, **row)
    insert_activation(conn, "2026-02-28T22:00:00.000+00:00", "relay-a", False, 401, "unauthorized")
    insert_activation(conn, "2026-03-01T22:00:00.000+00:00", "relay-a", True)
    insert_activation(conn, "2026-03-02T22:00:00.000+00:00", "relay-a", False, 500, "late")  # Mar 3 local
    conn.close()
    return path


def _small(small_db: Path, extra: str = "", by: str | None = None) -> Report:
    rules = parse_rules(RULES + extra, env={"RELAY_A_KEY_FOR_TEST": "x"})
    conn = connect(str(small_db), readonly=True)
    try:
        return build_report(conn, rules, date(2026, 3, 1), date(2026, 3, 2), by, db_path=str(small_db))
    finally:
        conn.close()


def test_small_totals_and_cost(small_db):
    r = _small(small_db)
    d1, d2 = r.daily[date(2026, 3, 1)], r.daily[date(2026, 3, 2)]
    assert (d1.requests, d1.input, d1.output, d1.cache_write, d1.cache_write_1h, d1.cache_read) == \
        (2, 3000, 3000, 10000, 4000, 100000)
    assert (d1.failovers, d1.errors, d1.reasoning) == (1, 0, 500)
    # sonnet 4.5 via relay-a: (1000*3 + 2000*15 + 6000*3.75 + 4000*6 + 100000*0.3)/1e6 * 0.3
    # opus 4.5 at list price: (2000*5 + 1000*25)/1e6
    assert d1.cost == pytest.approx(0.1095 * 0.3 + 0.035, abs=1e-12)
    assert d1.cache_hit == pytest.approx(100000 / 113000)
    assert (d2.requests, d2.input, d2.output, d2.cache_read, d2.failovers, d2.errors) == (4, 10100, 550, 90000, 1, 2)
    assert d2.cost == pytest.approx((10000 * 1.25 + 500 * 10 + 90000 * 0.125) / 1e6, abs=1e-12)
    assert d2.unpriced_tokens == 150 and r.unpriced == {"mystery-1": 150}
    assert r.total.requests == 6 and r.total.cost == pytest.approx(0.03285 + 0.035 + 0.02875, abs=1e-12)
    assert r.count_tokens == 2
    assert r.summary["upstream"]["(ccswitch)"].errors == 1
    assert r.summary["upstream"]["relay-a"].cost == pytest.approx(0.03285, abs=1e-12)
    assert set(r.summary["route"]) == {"claude", "codex", "chat"}
    # grouped by the model the client named; what relay-a was sent is kept beside it
    assert set(r.summary["model"]) == {"claude-opus-4-5", "gpt-5-codex", "claude-sonnet-4-5", "mystery-1"}
    sent = r.whole.sent_as["claude-sonnet-4-5"]
    assert {k: v.requests for k, v in sent.items()} == {"claude-sonnet-4-5-20250929": 1, "claude-sonnet-4-5": 1}
    assert sent["claude-sonnet-4-5-20250929"].cost == pytest.approx(0.03285, abs=1e-12)
    assert "(no model)" not in r.whole.sent_as and r.whole.renamed("claude-sonnet-4-5")
    assert not r.whole.renamed("claude-opus-4-5")
    [a] = r.activations
    assert (a.upstream, a.ok, a.failed, a.last_ok) == ("relay-a", 1, 1, True)
    assert a.last_probe.strftime("%Y-%m-%d %H:%M") == "2026-03-02 06:00"
    assert any("count_tokens" in n for n in r.notes) and any("mystery-1" in n for n in r.notes)
    assert any("relay-a x0.3" in n for n in r.notes)


def test_small_overrides_and_multipliers(small_db):
    r = _small(small_db, "prices:\n  claude-opus-4-5: {output: 20}\n  'mystery-*': {input: 1, output: 2}\n")
    d1, d2 = r.daily[date(2026, 3, 1)], r.daily[date(2026, 3, 2)]
    assert d1.cost == pytest.approx(0.03285 + (2000 * 5 + 1000 * 20) / 1e6, abs=1e-12)
    assert d2.cost == pytest.approx(0.02875 + (100 * 1 + 50 * 2) / 1e6 * 0.5, abs=1e-12)
    assert d2.unpriced_tokens == 0 and r.unpriced == {}


def test_budgets_warn_only_of_unpriced_models_that_had_tokens(small_db):
    conn = connect(str(small_db))
    insert_request(conn, 99, ts="2026-03-02T03:00:00.000+00:00", upstream="relay-a", model="mystery-400",
                   status=400, error="HTTP 400")       # refused: no usage, nothing to price
    conn.commit()
    conn.close()
    rules = parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"})
    spend = ledger_spend(small_db, rules, datetime(2026, 3, 1, tzinfo=UTC))
    assert spend.unpriced == {"mystery-1"} and spend.error is None


def test_the_spend_read_for_budgets_is_summed_per_day_as_it_is_read(small_db):
    # a month of a busy ledger held a tuple per request in memory before it was summed
    from zoneinfo import ZoneInfo

    from ccswitch.report.spend import by_day

    rules = parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"})
    tz = ZoneInfo("Asia/Shanghai")
    each = ledger_spend(small_db, rules, datetime(2026, 3, 1, tzinfo=UTC))
    summed = ledger_spend(small_db, rules, datetime(2026, 3, 1, tzinfo=UTC), per_day=tz)
    assert summed.requests == each.requests == len(each.rows) > len(summed.rows)
    assert sorted(summed.rows, key=repr) == sorted(by_day(each.rows, tz), key=repr)


def test_a_model_without_a_price_costs_question_mark_even_with_no_tokens(small_db):
    conn = connect(str(small_db))
    insert_request(conn, 99, ts="2026-03-02T03:00:00.000+00:00", upstream="relay-b", model="mystery-400",
                   status=400, error="HTTP 400")
    conn.commit()
    conn.close()
    model = _small(small_db).summary["model"]
    assert report.fmt_cost(model["mystery-400"]) == "?"           # never "$0.00"
    assert report.fmt_cost(model["claude-opus-4-5"]).startswith("$")
    assert model["mystery-400"].to_dict()["unpriced_requests"] == 1    # --json: its cost_usd 0 is not all


def test_an_unpriced_model_is_named_as_billed_not_as_the_client_asked(small_db):
    conn = connect(str(small_db))
    insert_request(conn, 100, ts="2026-03-02T06:00:00.000+00:00", upstream="relay-b", route="claude",
                   model="claude-opus-4-5", upstream_model="relay-special-9", input_tokens=1000)
    conn.close()
    r = _small(small_db)
    [note] = [n for n in r.notes if n.startswith("no price for:")]
    assert "relay-special-9" in note and r.unpriced["relay-special-9"] == 1000
    assert "claude-opus-4-5" not in r.unpriced      # it has a price; the model billed had none


def test_many_unpriced_models_are_named_up_to_a_few_then_counted(small_db):
    conn = connect(str(small_db))
    for i in range(12):       # mystery-1 (150 tokens) is already there: 13 unpriced models in all
        insert_request(conn, 100 + i, ts="2026-03-02T06:00:00.000+00:00", upstream="relay-b", route="chat",
                       endpoint="chat", model=f"unknown-{i:02}", input_tokens=1000 * (i + 1))
    conn.close()
    r = _small(small_db)
    [note] = [n for n in r.notes if n.startswith("no price for:")]
    assert len(r.unpriced) == 13                  # the JSON keeps every one
    named = [f"unknown-{i:02}" for i in range(11, 6, -1)]      # the five with the most tokens, in order
    assert note.index(named[0]) < note.index(named[4]) and all(m in note for m in named)
    assert "unknown-06" not in note and "mystery-1" not in note
    rest = sum(1000 * (i + 1) for i in range(7)) + 150
    assert f"and 8 more ({report.fmt_tokens(rest)} tokens)" in note


def test_small_by_upstream_groups(small_db):
    r = _small(small_db, by="upstream")
    g = r.groups(date(2026, 3, 2))
    assert set(g) == {"openai-official", "relay-a", "(ccswitch)", "relay-b"}
    assert (g["relay-a"].requests, g["relay-a"].failovers, g["relay-a"].errors) == (1, 1, 1)
    text = report.render_table(r)
    assert "  relay-b" in text and "Total" in text and "By upstream:" in text


def test_table_text(small_db):
    text = report.render_table(_small(small_db))
    assert "2026-03-01 Sun" in text and "2026-03-02 Mon" in text
    assert "$0.07" in text                     # Mar 1 cost: 0.06785
    assert "$0.03+?" in text                   # Mar 2: priced part, plus unpriced tokens
    assert "88.5%" in text                     # Mar 1 cache hit
    assert "Asia/Shanghai" in text and "Activation probes:" in text and "unauthorized" not in text
    assert "note: 2 count_tokens request(s)" in text


def test_activation_probes_name_their_results_left_aligned_and_count_them_right(small_db):
    conn = connect(str(small_db))
    insert_activation(conn, "2026-03-01T21:00:00.000+00:00", "anthropic-official", False, 401, "unauthorized")
    conn.close()
    head, _, failed, ok = report.activation_lines(_small(small_db))
    assert failed.startswith("anthropic-official  2026-03-02 05:00  failed (unauthorized)")
    assert ok.index("ok") == head.index("Last result") and ok.endswith(" 1       1")


def test_main_json(small_db, tmp_path, capsys):
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(small_db),
                      "--since", "2026-03-01", "--until", "2026-03-02", "--json", "--by", "route"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["day"] for d in data["days"]] == ["2026-03-01", "2026-03-02"]
    assert data["timezone"] == "Asia/Shanghai" and data["by"] == "route"
    assert data["totals"]["requests"] == 6 and data["totals"]["cost_usd"] == pytest.approx(0.0966)
    assert data["days"][1]["groups"]["chat"]["unpriced_tokens"] == 150
    assert data["days"][0]["cache_write_1h_tokens"] == 4000
    assert data["summary"]["upstream"]["relay-a"]["failovers"] == 2
    assert data["activations"][0]["ok"] == 1 and data["count_tokens_requests"] == 2
    assert data["unpriced_models"] == {"mystery-1": 150}


def test_days_option_counts_back_from_until(small_db, tmp_path, capsys):
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(small_db), "--until", "2026-03-02",
                      "--days", "1", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["since"] == "2026-03-02" and data["totals"]["requests"] == 4


def test_missing_database(tmp_path, capsys):
    db = tmp_path / "nope.db"
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db)])
    assert rc == 1
    err = capsys.readouterr().err
    # the line before says which rules file the command uses
    assert err.strip().splitlines()[-1] == f"no usage database at {db} (ccswitch writes one once it has routed a request)"
    assert not db.exists()
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(tmp_path)])
    assert rc == 1 and capsys.readouterr().err.strip().splitlines()[-1] == \
        f"{tmp_path} is a folder, not a usage database (--db names the file)"


@pytest.mark.parametrize("kind", ["migrated", "zero-bytes"])
def test_empty_database(tmp_path, capsys, kind):
    db = tmp_path / "usage.db"
    if kind == "migrated":
        connect(str(db)).close()
    else:
        db.write_bytes(b"")
    out = tmp_path / "out"
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db), "--since", "2026-03-01",
                      "--until", "2026-03-02", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith(f"no requests between 2026-03-01 and 2026-03-02 (Asia/Shanghai) in {db}")
    assert "count_tokens" not in text      # none of those either: nothing to note
    assert not out.exists()


def test_a_ledger_of_count_tokens_requests_only_says_it_holds_those(tmp_path, capsys):
    db = tmp_path / "usage.db"
    conn = connect(str(db))
    insert_request(conn, ts="2026-03-01T03:00:00.000+00:00", endpoint="count_tokens", upstream="relay-a",
                   model="claude-sonnet-4-5", input_tokens=5000)
    conn.commit()
    conn.close()
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db), "--since", "2026-03-01",
                          "--until", "2026-03-02"])
    assert rc == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "(1 count_tokens request(s), which the report leaves out of every figure)")
    # with --json, stdout is the JSON alone: the note would break a reader of it
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db), "--since", "2026-03-01",
                          "--until", "2026-03-02", "--json"])
    assert rc == 0
    assert isinstance(json.loads(capsys.readouterr().out), dict)


def test_not_a_database(tmp_path, capsys):
    db = tmp_path / "usage.db"
    db.write_text("hello, this is not sqlite" * 100)
    rc = report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db)])
    assert rc == 1 and "cannot read usage database" in capsys.readouterr().err


def test_bad_rules_and_dates(tmp_path, capsys):
    assert report_cli.main(["--rules", str(tmp_path / "missing.yaml"), "--db", str(tmp_path / "x.db")]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report_cli.main(["--since", "March 1"])
    assert report_cli.main(["--rules", str(write_rules(tmp_path)), "--since", "2026-03-05", "--until", "2026-03-01"]) == 1


def test_ccswitch_cli_report(small_db, tmp_path, capsys):
    rc = cli.main(["report", "--rules", str(write_rules(tmp_path)), "--db", str(small_db),
                   "--since", "2026-03-01", "--until", "2026-03-02"])
    assert rc == 0 and "Total" in capsys.readouterr().out


def test_rules_usage_db_is_the_default(small_db, tmp_path, capsys):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES + f"usage_db: {small_db.name}\n")
    rc = report_cli.main(["--rules", str(rules), "--since", "2026-03-01", "--until", "2026-03-02", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["database"] == str(small_db)


# --------------------------------------------------------------------------- synthetic 60 days

END = date(2026, 10, 31)
MODELS = {
    "relay-a": ("claude", "messages", ["claude-sonnet-4-5-20250929", "claude-opus-4-5", "claude-haiku-4-5"]),
    "anthropic-official": ("claude", "messages", ["claude-sonnet-4-5-20250929", "claude-opus-4-1"]),
    "openai-official": ("codex", "responses", ["gpt-5-codex", "gpt-5.1-codex-mini"]),
    "relay-b": ("chat", "chat", ["gpt-4.1", "mystery-model-x"]),
}

FIRST_BYTE_MS = {"relay-a": 2500, "anthropic-official": 1200, "openai-official": 900, "relay-b": 1800}


def make_60_day_db(path: Path, end: date = END, days: int = 60, seed: int = 7) -> Path:
    rnd = random.Random(seed)
    conn = connect(str(path))
    conn.execute("BEGIN")
    shanghai = timezone(timedelta(hours=8))
    n = 0
    for i in range(days):
        day = end - timedelta(days=days - 1 - i)
        weekend = day.weekday() >= 5
        count = rnd.randint(8, 20) if weekend else rnd.randint(40, 90)
        for _ in range(count):
            n += 1
            start = datetime(day.year, day.month, day.day, tzinfo=shanghai) + timedelta(seconds=rnd.randint(0, 86399))
            upstream = rnd.choices(list(MODELS), weights=[5 if i < 35 else 2, 2 if i < 35 else 5, 3, 1])[0]
            route, endpoint, models = MODELS[upstream]
            model = rnd.choice(models)
            if rnd.random() < 0.08 and route == "claude":
                insert_request(conn, n, ts=_iso(start), route=route, endpoint="count_tokens", upstream=upstream,
                               model=model, input_tokens=rnd.randint(1000, 50000))
                continue
            row = dict(ts=_iso(start), route=route, endpoint=endpoint, upstream=upstream, model=model.split("-2025")[0],
                       upstream_model=model, attempts=1)
            fail = rnd.random()
            if fail < 0.03:
                row.update(status=rnd.choice([500, 529, 429]), error="upstream failed", attempts=rnd.randint(1, 4))
            elif fail < 0.05:
                row.update(upstream=None, upstream_model=None, status=503, error="no upstream available", attempts=0)
            else:
                if rnd.random() < 0.1:
                    row["attempts"] = 2
                prompt = rnd.randint(5_000, 150_000)
                hit = min(0.97, max(0.0, rnd.gauss(0.55 + 0.35 * i / days, 0.15)))
                read = int(prompt * hit)
                write = int((prompt - read) * rnd.uniform(0.3, 0.9))
                row.update(input_tokens=prompt - read - write, cache_read_tokens=read, cache_creation_tokens=write,
                           cache_creation_1h_tokens=int(write * rnd.choice([0, 0, 0.5, 1])),
                           output_tokens=rnd.randint(200, 8000), reasoning_tokens=rnd.randint(0, 500))
                if rnd.random() < 0.01:
                    row.update(error="client_closed", status=200)
                # first byte after a per-upstream think time, then ~125 output tokens a second
                ttfb = int(rnd.lognormvariate(math.log(FIRST_BYTE_MS[upstream]), 0.45))
                row.update(ttfb_ms=ttfb, latency_ms=ttfb + row["output_tokens"] * 8)
            insert_request(conn, n, **row)
        for upstream in ("relay-a", "relay-b"):
            probe = datetime(day.year, day.month, day.day, 6, 0, tzinfo=shanghai)
            ok = rnd.random() > 0.15
            insert_activation(conn, _iso(probe), upstream, ok, 200 if ok else 401, None if ok else "unauthorized")
    conn.execute("COMMIT")
    conn.close()
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> dict:
    """The 60-day report, run once: {db, out, argv, text}."""
    tmp = tmp_path_factory.mktemp("big")
    db = make_60_day_db(tmp / "usage.db")
    out = tmp / "out"
    argv = ["--rules", str(write_rules(tmp)), "--db", str(db), "--since", str(END - timedelta(days=59)),
            "--until", str(END)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert report_cli.main([*argv, "--out", str(out)]) == 0
    return {"db": db, "out": out, "argv": argv, "text": buf.getvalue()}


def test_60_days_charts_are_real_pngs(big):
    import matplotlib.image as mpimg

    out = big["out"]
    for name in CHART_FILES:
        path = out / name
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) > 10_000, name
        img = mpimg.imread(path)
        assert img.shape[1] == 1100 and img.shape[0] >= 495, name          # 10 in x 110 dpi
        rgb = img[..., :3]
        assert rgb.std() > 0.05, name                                       # not a blank canvas
        colors = {tuple(p) for p in (rgb[::7, ::7] * 255).astype(int).reshape(-1, 3)}
        assert len(colors) > 20, name                                       # bars, lines, text


def test_60_days_html_and_table(big):
    text, out = big["text"], big["out"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(CHART_FILES) == 5
    for name in CHART_FILES:
        assert f'title="{name}"' in html
    assert "<table>" in html and "Activation probes" in html and "relay-a" in html and "Total" in html
    assert "mystery-model-x" in html              # unpriced model named in a note
    assert "<script" not in html
    assert "Total" in text and "By upstream:" in text and "wrote 5 chart(s)" in text


def test_60_days_json_is_consistent(big, capsys):
    db = big["db"]
    rc = report_cli.main([*big["argv"], "--json", "--by", "model"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["days"]) == 60
    assert sum(d["requests"] for d in data["days"]) == data["totals"]["requests"]
    assert sum(d["cost_usd"] for d in data["days"]) == pytest.approx(data["totals"]["cost_usd"], abs=1e-4)
    for d in data["days"]:
        assert sum(g["requests"] for g in d["groups"].values()) == d["requests"]
    conn = connect(str(db), readonly=True)
    want = conn.execute("SELECT count(*) FROM requests WHERE endpoint != 'count_tokens'").fetchone()[0]
    counted = conn.execute("SELECT count(*) FROM requests WHERE endpoint = 'count_tokens'").fetchone()[0]
    conn.close()
    assert data["totals"]["requests"] == want and data["count_tokens_requests"] == counted
    assert data["totals"]["unpriced_tokens"] > 0 and "mystery-model-x" in data["unpriced_models"]
    assert data["summary"]["upstream"]["(ccswitch)"]["errors"] == data["summary"]["upstream"]["(ccswitch)"]["requests"]
    assert {a["upstream"] for a in data["activations"]} == {"relay-a", "relay-b"}


def test_scripts_report_runs_without_install(big, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), *big["argv"], "--out", str(tmp_path / "o"),
                           "--by", "upstream"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "relay-a" in proc.stdout and (tmp_path / "o" / "report.html").exists()


def test_no_rules_timezone_uses_system_zone_with_dst(tmp_path, monkeypatch):
    import time
    path = tmp_path / "usage.db"
    conn = connect(str(path))
    # 04:30 UTC on Mar 9 2026 is 00:30 EDT (DST began Mar 8): Mar 9 in New York, whatever today's offset
    insert_request(conn, 1, ts="2026-03-09T04:30:00.000+00:00", upstream="relay-a", model="claude-haiku-4-5",
                   input_tokens=10)
    conn.close()
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        rules = parse_rules(RULES.replace("timezone: Asia/Shanghai\n", ""), env={"RELAY_A_KEY_FOR_TEST": "x"})
        conn = connect(str(path), readonly=True)
        r = build_report(conn, rules, date(2026, 3, 8), date(2026, 3, 9))
        conn.close()
        assert r.daily[date(2026, 3, 9)].requests == 1 and r.daily[date(2026, 3, 8)].requests == 0
        # named, not today's offset, which is the other one for half the year
        assert r.tz_name == "local time, America/New_York"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_model_name_of_any_length_is_cut_in_notes_and_whole_in_the_json(small_db):
    conn = connect(str(small_db))
    long = "m" * 3000
    insert_request(conn, 300, ts="2026-03-02T06:00:00.000+00:00", upstream="relay-b", route="chat",
                   endpoint="chat", model=long, input_tokens=10**15)
    conn.close()
    r = _small(small_db)
    [note] = [n for n in r.notes if n.startswith("no price for:")]
    assert "m" * 59 + "…" in note and "m" * 61 not in note and r.unpriced[long] == 10**15
    assert report.fmt_tokens(10**15) == "1000.00T" and report.fmt_tokens(1_200_000_000) == "1.20B"


def test_count_tokens_requests_outside_the_period_are_not_counted(small_db):
    conn = connect(str(small_db))
    # 18:00 on Feb 28 in Shanghai: the day before the period, which the report reads for its blocks
    insert_request(conn, 99, ts="2026-02-28T10:00:00.000+00:00", endpoint="count_tokens", upstream="relay-a",
                   model="claude-sonnet-4-5", input_tokens=5000)
    conn.close()
    assert _small(small_db).count_tokens == 2


def test_a_hand_edited_ledger_never_costs_the_report(tmp_path):
    # `25:00` crashed every view; SQLite's own `datetime()` text crashed --blocks; a negative count
    # gave a negative cost and a fraction fractional tokens
    path = tmp_path / "usage.db"
    conn = connect(str(path))
    for n, ts in enumerate(["2026-06-16T10:00:00.000+00:00", "2026-06-16 10:30:00", "2026-06-16T10:30:00.500+00:00"]):
        insert_request(conn, n, ts=ts, upstream="relay-a", model="claude-haiku-4-5", input_tokens=100)
    insert_request(conn, 5, ts="2026-06-16T25:00:00.000+00:00", upstream="relay-a", model="claude-haiku-4-5")
    insert_request(conn, 6, ts="2026-06-16T11:00:00.000+00:00", upstream="relay-a", model="claude-haiku-4-5",
                   input_tokens=-1_000_000, output_tokens=2.4, cache_read_tokens=2**60)
    conn.close()
    rules = parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"})
    conn = connect(str(path), readonly=True)
    r = build_report(conn, rules, date(2026, 6, 16), date(2026, 6, 17), blocks=True,
                     now=datetime(2026, 6, 20, tzinfo=UTC))
    conn.close()
    whole = r.whole.total
    assert whole.requests == 4 and whole.input == 300 and whole.output == 2 and whole.cache_read == 0
    assert whole.cost is not None and whole.cost > 0
    assert [b.total.requests for b in r.blocks] == [4]
    assert any("1 group(s) of requests left out: their time cannot be read (ts '2026-06-16T25:00'" in note
               for note in r.notes), r.notes


# Shanghai's June 16 is [06-15T16:00Z, 06-16T16:00Z): each hand-written time below names an instant
# whose Shanghai day differs from the day its text would give were its offset dropped
HAND_WRITTEN_TIMES = {
    "2026-06-16T23:30:00.000+09:00": date(2026, 6, 16),     # 14:30Z: 22:30 on the 16th, not 07:30 on the 17th
    "2026-06-16T11:30:00-05:00": date(2026, 6, 17),         # 16:30Z: 00:30 on the 17th
    "2026-06-16 00:30:00+09:00": date(2026, 6, 15),         # 06-15T15:30Z: 23:30 on the 15th
    "2026-06-16T15:30:00Z": date(2026, 6, 16),              # 23:30 on the 16th
    "2026-06-16T16:30:00.000+00:00": date(2026, 6, 17),     # as the proxy writes: 00:30 on the 17th
}


def test_a_hand_written_offset_is_read_as_the_instant_it_names_by_every_figure(tmp_path):
    # the totals took the text's first 16 characters as UTC: a `+09:00` row counted on one day
    # and its latency (whose parser converts the offset) on another
    path = tmp_path / "usage.db"
    conn = connect(str(path))
    for n, ts in enumerate(HAND_WRITTEN_TIMES):
        insert_request(conn, n, ts=ts, upstream="relay-a", model="claude-haiku-4-5", input_tokens=10, attempts=2)
    conn.close()
    rules = parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"})
    days = [date(2026, 6, 15), date(2026, 6, 16), date(2026, 6, 17)]
    expected = {day: sum(1 for d in HAND_WRITTEN_TIMES.values() if d == day) for day in days}
    conn = connect(str(path), readonly=True)
    r = build_report(conn, rules, days[0], days[-1], hours_day=days[1])
    one_day = [build_report(conn, rules, day, day) for day in days]
    conn.close()
    assert {day: r.daily[day].requests for day in days} == expected
    assert {day: r.latency(r.by_day[day]).requests for day in days} == expected
    assert [sum(a.attempts for a in each.attempts) for each in one_day] == [2 * expected[day] for day in days]
    # the hour of the 16th each falls in: 22:30 and 23:30 local
    assert [h.label for h in r.hours if h.total.requests] == ["22:00", "23:00"]


def test_requests_that_ended_before_an_upstream_answered_are_not_said_to_be_answered_by_ccswitch(tmp_path):
    # "(ccswitch)" is what ccswitch answered itself; a client that left, or a flow killed in
    # mitmweb, was counted there too (the live page says `client left` / `killed`)
    path = tmp_path / "usage.db"
    conn = connect(str(path))
    for n, error in enumerate(["client_closed", "killed", "killed", "no upstream could be tried"]):
        insert_request(conn, n, ts="2026-03-01T02:00:00.000+00:00", model="claude-sonnet-4-5",
                       status=503 if n == 3 else None, error=error, attempts=0)
    insert_request(conn, 9, ts="2026-03-01T02:00:00.000+00:00", upstream="relay-a", model="claude-sonnet-4-5",
                   error="client_closed", status=200)          # left after relay-a answered: relay-a's
    conn.close()
    r = _small(path)
    assert {name: t.requests for name, t in r.summary["upstream"].items()} == {
        "(client left)": 1, "(killed)": 2, "(ccswitch)": 1, "relay-a": 1}


def test_a_misspelt_tz_is_named_as_such_and_the_offset_it_gives_said(monkeypatch, caplog):
    # it said "not a named zone ('tzlocal() does not support ... Please use ... Continent/City')",
    # a literal newline in it, and "the fixed offset America until a restart"
    import time

    from ccswitch import clock
    monkeypatch.setenv("TZ", "America/Sao_Paolo")
    time.tzset()
    try:
        clock._system_zone.__wrapped__("America/Sao_Paolo")
    finally:
        monkeypatch.undo()
        time.tzset()
    [said] = [r.getMessage() for r in caplog.records if r.name == "ccswitch.clock"]
    assert "TZ=America/Sao_Paolo names no time zone this machine knows" in said
    assert "local days follow UTC+00:00, without daylight saving time" in said
    assert "\n" not in said and "restart" not in said


@pytest.mark.parametrize("tz", [None, ":Europe/Paris"])
def test_a_system_zone_tzlocal_cannot_name_is_said_so_on_one_line(monkeypatch, caplog, tz):
    # TZ unset, or a real zone written as glibc takes it (":Europe/Paris"), is no misspelling; and
    # tzlocal's own words run over lines
    import tzlocal

    from ccswitch import clock

    def unnamed():
        raise ValueError("Timezone offset does not match system offset: 0 != 3600.\nPlease, check your config files.")
    monkeypatch.setattr(tzlocal, "reload_localzone", unnamed)
    clock._system_zone.__wrapped__(tz)
    [said] = [r.getMessage() for r in caplog.records if r.name == "ccswitch.clock"]
    assert "the system time zone is not a named zone (Timezone offset does not match system offset: " \
           "0 != 3600. Please, check your config files.)" in said
    assert "\n" not in said and "names no time zone" not in said


def test_a_row_whose_time_is_no_time_s_text_is_counted_in_the_note_too(tmp_path):
    """`not-a-time` sorts outside every period's range of text: it was left out without the note."""
    path = tmp_path / "usage.db"
    conn = connect(str(path))
    insert_request(conn, 1, ts="2026-06-16T10:00:00.000+00:00", upstream="relay-a", model="claude-haiku-4-5")
    insert_request(conn, 2, ts="not-a-time", upstream="relay-a", model="claude-haiku-4-5")
    insert_request(conn, 3, ts="2026-06-16T25:00:00.000+00:00", upstream="relay-a", model="claude-haiku-4-5")
    insert_request(conn, 4, ts="2020-01-01T10:00:00.000+00:00", upstream="relay-a", model="claude-haiku-4-5")
    conn.close()
    rules = parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"})
    conn = connect(str(path), readonly=True)
    r = build_report(conn, rules, date(2026, 6, 16), date(2026, 6, 16))
    conn.close()
    assert r.whole.total.requests == 1      # another period's row is that period's, not unreadable
    (note,) = [note for note in r.notes if "their time cannot be read" in note]
    assert note.startswith("2 group(s) of requests left out") and "'2026-06-16T25:00'" in note


@pytest.mark.parametrize("ts", [
    "2030-01-01T10:",               # too short for a minute
    "2030/01-01T10:00:00",          # no dash after the year
    "2030-01/01T10:00:00",          # nor after the month
    "x030-01-01T10:00:00",          # no digit first
])
def test_each_way_a_time_can_be_no_time_s_text_is_counted_in_the_note(tmp_path, ts):
    """Each check of the shapeless-time query on its own: a row only it catches was left out without a word."""
    path = tmp_path / "usage.db"
    conn = connect(str(path))
    insert_request(conn, 1, ts="2026-06-16T10:00:00.000+00:00", upstream="relay-a", model="claude-haiku-4-5")
    insert_request(conn, 2, ts=ts, upstream="relay-a", model="claude-haiku-4-5")
    conn.close()
    rules = parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"})
    conn = connect(str(path), readonly=True)
    r = build_report(conn, rules, date(2026, 6, 16), date(2026, 6, 16))
    conn.close()
    assert r.whole.total.requests == 1
    (note,) = [note for note in r.notes if "their time cannot be read" in note]
    assert note.startswith("1 group(s) of requests left out") and repr(ts) in note


def test_a_time_written_with_a_space_is_its_own_period_s_not_another_s_unreadable(tmp_path):
    """`2026-06-20 10:00` reads fine in its own period: another period's note must not call it unreadable."""
    path = tmp_path / "usage.db"
    conn = connect(str(path))
    insert_request(conn, 1, ts="2026-06-16T10:00:00.000+00:00", upstream="relay-a", model="claude-haiku-4-5")
    insert_request(conn, 2, ts="2026-06-20 10:00:00.000+00:00", upstream="relay-a", model="claude-haiku-4-5")
    conn.close()
    rules = parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"})
    conn = connect(str(path), readonly=True)
    first, own = (build_report(conn, rules, day, day) for day in (date(2026, 6, 16), date(2026, 6, 20)))
    conn.close()
    assert not [note for note in first.notes if "cannot be read" in note] and own.whole.total.requests == 1
