"""The month's spend at start-up: read from the ledger, or, while it cannot be read (PostgreSQL
down), counted from 0 and read in the background once it can be."""

import asyncio
import logging
import threading
import time
from datetime import timedelta

import pytest

from ccswitch.clock import utc_now
from ccswitch.mitm import gateway as gateway_module
from ccswitch.report.spend import LedgerSpend
from ccswitch.routing.budget import CLIENT, UPSTREAM
from tests.support.helpers import KEY_A, eventually

RULES = f"""
timezone: UTC
usage_db: usage.db
client_keys: [{{name: alice, key: ccsw-alice-000000000, budget: {{daily: 10}}}}]
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
"""


def at_noon(gateway):
    """Today's noon, from now on the clock of the gateway's spend board: the spend is read a
    moment (up to a second) after the start, and begun at 23:59:59 it went into tomorrow, $0 so far."""
    noon = utc_now().replace(hour=12, minute=0, second=0, microsecond=0)
    gateway.spend.clock = lambda: noon
    return noon


async def test_an_unreadable_ledger_is_read_once_it_can_be(gateway, monkeypatch, caplog):
    started = at_noon(gateway)
    # a row of today's, a few minutes before the start (but not before midnight: then yesterday's)
    midnight = started.astimezone(gateway.rules.tz).replace(hour=0, minute=0, second=0, microsecond=0)
    earlier = max(started - timedelta(minutes=5), midnight)
    answers = [LedgerSpend(error="cannot connect to 127.0.0.1:5432"),
               LedgerSpend(error="cannot connect to 127.0.0.1:5432"),
               LedgerSpend(rows=[(earlier, "a", "alice", 2.5)])]
    asked = []

    def ledger_spend(target, rules, since, until, per_day=None):
        asked.append(until)
        return answers.pop(0)
    monkeypatch.setattr(gateway_module, "ledger_spend", ledger_spend)
    monkeypatch.setattr(gateway_module, "SPEND_RETRY", 0.01)
    gateway.open_ledger(True)
    counted_on = []
    load = gateway.spend.load
    monkeypatch.setattr(gateway.spend, "load", lambda *a: (counted_on.append(threading.get_ident()), load(*a)))
    try:
        with caplog.at_level(logging.INFO, logger="ccswitch"):
            await gateway.load_spend(started)
            assert gateway.spend.spent(CLIENT, "alice", "daily") == 0      # counted from 0 meanwhile
            await eventually(lambda: gateway.spend.spent(CLIENT, "alice", "daily") == 2.5)
    finally:
        gateway.stop_reading_spend()
        gateway.close()
    assert asked == [started] * 3     # only what came before this start: its own rows are counted live
    # on the loop's thread, as requests count theirs: the boards are not shared between threads
    assert counted_on and set(counted_on) == {threading.get_ident()}
    warned = [r for r in caplog.records if "cannot read the spend so far" in r.getMessage()]
    assert [r.levelno for r in warned] == [logging.WARNING]             # once, and not an error
    assert "read the spend so far: budgets count it now" in caplog.text


@pytest.mark.parametrize("budgets", [True, False], ids=["budgets", "no-budget"])
async def test_a_model_without_a_price_is_told_at_start_only_where_a_budget_counts_it(tmp_path, monkeypatch, caplog,
                                                                                         budgets):
    from tests.mitm.conftest import open_gateway
    gateway = open_gateway(tmp_path, RULES if budgets else RULES.replace(", budget: {daily: 10}", ""))
    monkeypatch.setattr(gateway_module, "ledger_spend",
                        lambda *a, **k: LedgerSpend(unpriced={"gpt-6.1-sol", "odd-\u202eevil"}))
    gateway.open_ledger(True)
    try:
        with caplog.at_level(logging.INFO, logger="ccswitch"):
            await gateway.load_spend(utc_now())
    finally:
        gateway.close()
    assert ("no price is known for gpt-6.1-sol" in caplog.text) is budgets
    # a client's model name: its controls as escapes, not obeyed by the terminal
    assert ("odd-\\u202eevil" in caplog.text) is budgets and "\u202e" not in caplog.text


@pytest.mark.parametrize("ledger, budgets", [(False, True), (True, True), (False, False)])
async def test_budgets_with_the_ledger_off_are_said_to_last_only_this_run(tmp_path, caplog, ledger, budgets):
    # every restart set them to $0 again, without a word
    from tests.mitm.conftest import open_gateway
    gateway = open_gateway(tmp_path, RULES if budgets else RULES.replace(", budget: {daily: 10}", ""))
    gateway.open_ledger(ledger)
    try:
        with caplog.at_level(logging.INFO, logger="ccswitch"):
            await gateway.start_spend(utc_now())
            gateway.stop_reading_spend()
    finally:
        gateway.close()
    warned = [r for r in caplog.records if "budgets count only what this run spends" in r.getMessage()]
    assert [r.levelno for r in warned] == ([logging.WARNING] if budgets and not ledger else [])


def moved_ledger(tmp_path, caplog, *places: str):
    """A gateway whose ledger could not write 3 rows (a file where its directory should be: a full
    disk, a lost mount; the rules' check refuses one there at the start), then moved by a reload
    to each of `places` in turn (default: `fixed`)."""
    from tests.mitm.conftest import open_gateway
    from tests.unit.ledger.test_ledger import row, wait_for
    gateway = open_gateway(tmp_path, RULES.replace("usage_db: usage.db", "usage_db: afile/usage.db"))
    (tmp_path / "afile").write_text("a file where the ledger's directory should be")
    gateway.open_ledger(True)
    for i in range(3):
        gateway.ledger.add("requests", row(i))
    assert wait_for(lambda: "cannot write the usage ledger" in caplog.text)
    for where in places or ("fixed",):
        (tmp_path / "rules.yaml").write_text(RULES.replace("usage_db: usage.db", f"usage_db: {where}/usage.db"))
        gateway.rules_file.open(str(tmp_path / "rules.yaml"))
        gateway.open_ledger(True)
    return gateway


async def test_a_reload_moving_the_ledger_takes_the_rows_the_old_one_could_not_write(tmp_path, caplog):
    from tests.unit.ledger.test_ledger import wait_for
    gateway = moved_ledger(tmp_path, caplog)
    try:
        assert wait_for(lambda: (tmp_path / "fixed" / "usage.db").exists() and gateway.ledger.written == 3,
                        timeout=15)
    finally:
        gateway.close()


async def test_a_stop_right_after_a_reload_moved_the_ledger_loses_none_of_the_old_one_s_rows(tmp_path, caplog):
    # the old ledger closed in a thread of its own: a stop closed the new one first (or ended the
    # process under that thread), and the rows it could not write were neither moved nor kept
    import sqlite3
    moved_ledger(tmp_path, caplog).close()                  # at once
    db = sqlite3.connect(tmp_path / "fixed" / "usage.db")
    assert db.execute("SELECT count(*) FROM requests").fetchone() == (3,)


def test_what_the_gateway_records_holds_no_key_a_client_sent_as_its_model(gateway):
    from ccswitch.dial.job import Attempt
    from ccswitch.ledger.rows import own_answer_row
    from tests.support.live_rows import finished

    class Rows:
        def __init__(self):
            self.added = []

        def add(self, table, row):
            self.added.append(row)
    gateway.ledger = Rows()
    gateway.record_job(finished(gateway.rules, Attempt(upstream="a", status=200), model=KEY_A))
    gateway.record_own_answer(own_answer_row(request_id="r", started_at=utc_now(), route="claude",
                                             endpoint="messages", model=KEY_A, stream=False, status=400,
                                             error="bad", latency_ms=1))
    requests = [row for row in gateway.ledger.added if "model" in row]
    assert len(requests) == 2 and all(row["model"] == "[redacted]" for row in requests)


async def test_the_ledger_s_requests_are_counted_as_one_sum_per_local_day(gateway, monkeypatch):
    # a month of a busy ledger was one addition per request on the proxy's loop
    from ccswitch.ledger.writer import Ledger
    from tests.unit.ledger.test_ledger import row
    now = at_noon(gateway)
    today = max(now - timedelta(minutes=5), now.replace(hour=0, minute=0, second=0, microsecond=0))
    written = Ledger(gateway.rules.usage_db).start()
    for i in range(5):
        written.add("requests", {**row(i), "ts": today.isoformat(timespec="milliseconds"), "client": "alice",
                                 "model": "claude-sonnet-4-5", "input_tokens": 100_000})
    written.close()
    gateway.open_ledger(True)
    counted = []
    load = gateway.spend.load

    def counting(amounts):
        counted.extend(amounts)
        load(counted)
    monkeypatch.setattr(gateway.spend, "load", counting)
    try:
        await gateway.load_spend(now)
    finally:
        gateway.close()
    # the day's sum of five requests, for its upstream and its client
    assert [(who, name) for who, name, _, _ in counted] == [(UPSTREAM, "a"), (CLIENT, "alice")]
    assert gateway.spend.spent(CLIENT, "alice", "daily") == counted[1][2] > 0


@pytest.mark.parametrize("model", ["CAST(X'67707480ff' AS TEXT)", "X'636c617564652d736f6e6e65742d342d35'"],
                         ids=["no-utf8", "blob"])
async def test_a_model_that_is_no_text_costs_no_budget_the_month_s_spend(gateway, caplog, model):
    # one such row failed the whole read: every budget counted from $0 (retried every 30 s, failing
    # the same way); a BLOB raised a TypeError that ended the read's task with an error
    import sqlite3

    from ccswitch.ledger.writer import Ledger
    from tests.unit.ledger.test_ledger import row
    now = at_noon(gateway)
    today = max(now - timedelta(minutes=5), now.replace(hour=0, minute=0, second=0, microsecond=0))
    written = Ledger(gateway.rules.usage_db).start()
    for i, output_tokens in enumerate((1_000_000, 10)):      # $15 at claude-sonnet-4-5's price, and more
        written.add("requests", {**row(i), "ts": today.isoformat(timespec="milliseconds"), "client": "alice",
                                 "model": "claude-sonnet-4-5", "output_tokens": output_tokens})
    written.close()
    conn = sqlite3.connect(gateway.rules.usage_db)
    conn.execute(f"UPDATE requests SET model = {model} WHERE output_tokens = 10")
    conn.commit()
    conn.close()
    gateway.open_ledger(True)
    try:
        with caplog.at_level(logging.INFO, logger="ccswitch"):
            await gateway.start_spend(now)      # alice's budget waits for the read
    finally:
        gateway.stop_reading_spend()
        gateway.close()
    assert gateway.spend.spent(CLIENT, "alice", "daily") >= 15
    assert "cannot read the spend so far" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def ledger_answering(gateway, monkeypatch, started, wait) -> None:
    """The ledger's spend read answers, after `wait()`, $2.50 that alice spent today a few minutes
    before `started` (but not before midnight: then yesterday's)."""
    midnight = started.astimezone(gateway.rules.tz).replace(hour=0, minute=0, second=0, microsecond=0)
    earlier = max(started - timedelta(minutes=5), midnight)

    def ledger_spend(target, rules, since, until, per_day=None):
        wait()
        return LedgerSpend(rows=[(earlier, "a", "alice", 2.5)])
    monkeypatch.setattr(gateway_module, "ledger_spend", ledger_spend)


@pytest.mark.parametrize("budget_from", ["the start", "a reload"])
async def test_a_spend_read_that_does_not_answer_holds_requests_only_so_long(tmp_path, monkeypatch, caplog,
                                                                             budget_from):
    # a lock on the table, a pooler queueing the query: with a budget set (at the start, or by a
    # reload while the start's read went on in the background), routed requests waited for good
    from tests.mitm.conftest import open_gateway
    gateway = open_gateway(tmp_path, RULES if budget_from == "the start"
                           else RULES.replace(", budget: {daily: 10}", ""))
    started, answer = at_noon(gateway), threading.Event()
    ledger_answering(gateway, monkeypatch, started, lambda: answer.wait(10))
    monkeypatch.setattr(gateway_module, "SPEND_WAIT", 0.2)
    gateway.open_ledger(True)
    try:
        with caplog.at_level(logging.INFO, logger="ccswitch"):
            await gateway.start_spend(started)                   # returns: the first requests go on
            if budget_from == "a reload":
                (tmp_path / "rules.yaml").write_text(RULES)
                gateway.rules_file.open(str(tmp_path / "rules.yaml"))
            first = asyncio.ensure_future(gateway.spend_read_for(gateway.rules))   # what a routed request awaits
            await asyncio.sleep(0.15)
            began = time.monotonic()
            await asyncio.wait_for(gateway.spend_read_for(gateway.rules), 2)    # one more, a moment later:
            waited = time.monotonic() - began
            # released with the first: the same wake-up, though the first's task may take its
            # last step a loop turn after this one's
            await asyncio.wait([first], timeout=0.05)
            assert waited < 0.15 and first.done()
            assert gateway.first_spend_read is None              # the next ones do not wait at all
            assert "has not answered the spend read within 0.2 s" in caplog.text
            assert gateway.spend.spent(CLIENT, "alice", "daily") == 0
            answer.set()
            await eventually(lambda: gateway.spend.spent(CLIENT, "alice", "daily") == 2.5)
    finally:
        answer.set()
        gateway.stop_reading_spend()
        gateway.close()


async def test_a_ledger_that_answers_within_the_wait_is_counted_before_the_first_request(gateway, monkeypatch, caplog):
    # a budget needs the spend so far: a read that takes a moment (a second here) is waited for,
    # and nothing is said of a wait given up
    started = at_noon(gateway)
    ledger_answering(gateway, monkeypatch, started, lambda: threading.Event().wait(1))
    gateway.open_ledger(True)
    try:
        with caplog.at_level(logging.INFO, logger="ccswitch"):
            await gateway.start_spend(started)
        assert gateway.spend.spent(CLIENT, "alice", "daily") == 2.5
        assert "has not answered the spend read" not in caplog.text
    finally:
        gateway.stop_reading_spend()
        gateway.close()


async def test_a_spend_read_given_up_on_at_the_start_is_stopped_at_shutdown(gateway, monkeypatch):
    # no request waits for it any more, but the stop does: one that answers after the stop began
    # counts nothing into boards being shut down
    started, answer = utc_now(), threading.Event()
    ledger_answering(gateway, monkeypatch, started, lambda: answer.wait(10))
    monkeypatch.setattr(gateway_module, "SPEND_WAIT", 0.2)
    gateway.open_ledger(True)
    try:
        await gateway.start_spend(started)
        gateway.stop_reading_spend()
        answer.set()
        await asyncio.sleep(0.3)
        assert gateway.spend.spent(CLIENT, "alice", "daily") == 0
    finally:
        answer.set()
        gateway.stop_reading_spend()
        gateway.close()


async def test_a_stop_after_two_quick_reloads_moving_the_ledger_waits_for_both_old_ones(tmp_path, caplog):
    # each reload closes the ledger it moved away from in a thread of its own: the stop waits for
    # every one of them still closing, not only the last reload's
    moved_ledger(tmp_path, caplog, "b", "c").close()
    assert not [t for t in threading.enumerate() if t.name == "ccswitch-ledger-close" and t.is_alive()]


@pytest.mark.parametrize("ledger", ["refuses", "reads"])
async def test_a_start_counts_the_spend_the_shared_state_holds_before_a_request(
        tmp_path, monkeypatch, redis_server, ledger):
    # PostgreSQL down, Redis up: an instance starting beside others let requests through over
    # their budgets until its shared state had loaded (11 of 12 in a tester's run); with its own
    # ledger read (SQLite: this instance's spend alone), the first in its first 0.3 s
    from tests.mitm.conftest import open_gateway
    shared = f"state: {redis_server.url(3 if ledger == 'refuses' else 5)}\n" + RULES    # a database each
    (tmp_path / "other").mkdir()
    (tmp_path / "new").mkdir()
    other, new = open_gateway(tmp_path / "other", shared), open_gateway(tmp_path / "new", shared)
    noon = at_noon(other)
    at_noon(new)
    await other.open_state()
    try:
        await eventually(lambda: other.state.up)
        other.spend.add(CLIENT, "alice", 20.0, noon)            # over her daily $10, told to Redis
        await eventually(lambda: not other.state._unsent)
        if ledger == "refuses":
            monkeypatch.setattr(gateway_module, "ledger_spend",
                                lambda *args, **kw: LedgerSpend(error="connection refused"))
        new.open_ledger(True)
        opening = asyncio.ensure_future(new.open_state())       # as the shared-state addon's start
        await new.start_spend(utc_now())                        # what the first routed request awaits
        assert new.spend.spent(CLIENT, "alice", "daily") == 20.0
        await opening
    finally:
        new.stop_reading_spend()
        await new.close_state()
        await other.close_state()
        new.close()


async def test_a_start_with_both_the_ledger_and_the_shared_state_out_of_reach_says_budgets_count_from_0(
        tmp_path, monkeypatch, caplog):
    from tests.mitm.conftest import open_gateway
    from tests.support.redis_server import free_port
    gateway = open_gateway(tmp_path, f"state: redis://127.0.0.1:{free_port()}/0\n" + RULES)
    monkeypatch.setattr(gateway_module, "ledger_spend", lambda *args, **kw: LedgerSpend(error="connection refused"))
    gateway.open_ledger(True)
    try:
        with caplog.at_level(logging.WARNING, logger="ccswitch"):
            opening = asyncio.ensure_future(gateway.open_state())
            await asyncio.wait_for(gateway.start_spend(utc_now()), 10)
            await opening
        assert "cannot be read either: budgets count from 0 until one of them can" in caplog.text
    finally:
        gateway.stop_reading_spend()
        await gateway.close_state()
        gateway.close()


async def test_a_stop_in_the_first_seconds_ends_a_spend_read_waiting_on_the_shared_state(tmp_path, monkeypatch):
    from tests.mitm.conftest import open_gateway
    gateway = open_gateway(tmp_path, "state: redis://127.0.0.1:9/0\n" + RULES)   # never opened here
    monkeypatch.setattr(gateway_module, "ledger_spend", lambda *args, **kw: LedgerSpend(error="connection refused"))
    gateway.open_ledger(True)
    try:
        starting = asyncio.ensure_future(gateway.start_spend(utc_now()))
        await eventually(lambda: gateway._spend_reader is not gateway.first_spend_read)   # read, failed, waiting
        reading = gateway.first_spend_read
        gateway.stop_reading_spend()
        await asyncio.wait_for(starting, 1)
        assert reading.cancelled()
    finally:
        gateway.close()
