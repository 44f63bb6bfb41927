"""A restart picks up each probe time where the ledger left it: the rows name the time they were for."""

from datetime import UTC, datetime

from ccswitch.ledger.reading import open_reader
from ccswitch.mitm.activator import Activator, seed_from_ledger
from ccswitch.net.http1 import UpstreamClient
from tests.mitm.conftest import open_gateway
from tests.support.helpers import KEY_A
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import ok, status

RULES = f"""
timezone: UTC
usage_db: usage.db
activation: {{retries: 20, retry_interval: 70s, grace: 15m}}
upstreams:
  - {{name: relay, protocol: anthropic, base_url: 'BASE', api_key: '{KEY_A}', activate_at: ["06:00", "06:01"]}}
routes: {{claude: [relay]}}
"""


def at(hh, mm, ss=0):
    return datetime(2026, 11, 25, hh, mm, ss, tzinfo=UTC)


class Run:
    """One ccswitch process: a gateway with its ledger, an activator on a clock we move."""

    def __init__(self, tmp_path, mock, rules=RULES):
        self.gateway = open_gateway(tmp_path, rules.replace("BASE", mock.base_url))
        self.gateway.allow_url = loopback_url
        self.gateway.open_ledger(True)
        self.now = at(5, 59)
        self.activator = Activator(self.gateway, clock=lambda: self.now)
        self.activator.client = UpstreamClient()

    async def tick_at(self, moment):
        self.now = moment
        return [(await task) for task in self.activator.tick()]

    async def stop(self):
        await self.activator.client.aclose()
        self.gateway.close()

    def restart_due(self, moment):
        """What a new process started at `moment` fires then."""
        rules = self.gateway.rules
        schedule = Activator(self.gateway).schedule
        seed_from_ledger(schedule, rules, moment)
        return [slot.at for _, slot in schedule.due(rules, moment)], schedule


async def test_a_retry_that_succeeds_after_the_next_time_marks_its_own_time_done(tmp_path, mock_a):
    run = Run(tmp_path, mock_a)
    mock_a.script(status(500), status(500), ok())
    try:
        assert [r.ok for r in await run.tick_at(at(6, 0))] == [False]         # 06:00 fails
        assert [r.ok for r in await run.tick_at(at(6, 1))] == [False]         # 06:01 fails
        assert [r.ok for r in await run.tick_at(at(6, 1, 10))] == [True]      # 06:00's retry succeeds
    finally:
        await run.stop()
    due, schedule = run.restart_due(at(6, 2, 30))
    assert due == ["06:01"]          # 06:00 is not sent again; 06:01 keeps its retries
    assert [s.at for s, state in schedule.slots.items() if state.done] == ["06:00"]
    with open_reader(run.gateway.rules.usage_db) as reader:
        assert list(reader.execute("SELECT slot, ok FROM activations ORDER BY id")) == [
            ("2026-11-25 06:00", 0), ("2026-11-25 06:01", 0), ("2026-11-25 06:00", 1)]


async def test_a_probe_sent_on_demand_marks_no_time_done(tmp_path, mock_a):
    run = Run(tmp_path, mock_a)
    try:
        run.now = at(6, 0, 30)
        await run.activator._probe(run.gateway.rules.upstream("relay"), None)
    finally:
        await run.stop()
    with open_reader(run.gateway.rules.usage_db) as reader:
        assert list(reader.execute("SELECT slot, ok FROM activations")) == [(None, 1)]
    due, schedule = run.restart_due(at(6, 1))
    # 06:00 missed within grace, 06:01 on time: one probe opens the window, for the later
    assert due == ["06:01"] and [s.at for s, state in schedule.slots.items() if state.done] == ["06:00"]


async def test_a_probe_the_shutdown_cut_leaves_its_row_and_is_not_sent_again(tmp_path, mock_a, caplog):
    from ccswitch.mitm.router import Router
    from tests.support.mock_upstream import hang_before_headers
    run = Run(tmp_path, mock_a)
    mock_a.script(hang_before_headers(5))
    router = Router(run.gateway)
    try:
        run.now = at(6, 0)
        (probe,) = run.activator.tick()
        await router.shutdown.drain(router._in_flight, 0.2, router._cut)     # past the grace: cut
        assert probe.cancelled()
    finally:
        await run.stop()
    assert "activation probe for relay (06:00, try 1) failed: shutdown: not finished within the grace period" \
        in caplog.text
    due, _ = run.restart_due(at(6, 0, 30))
    assert due == []              # it reached the upstream: most likely the window opened
    with open_reader(run.gateway.rules.usage_db) as reader:
        assert list(reader.execute("SELECT slot, ok, error FROM activations")) == [
            ("2026-11-25 06:00", 0, "shutdown: not finished within the grace period")]


async def test_a_restart_within_grace_after_a_series_failed_runs_and_announces_nothing_again(tmp_path, mock_a):
    rules = RULES.replace("retries: 20, retry_interval: 70s", "retries: 2, retry_interval: 60s")
    run = Run(tmp_path, mock_a, rules.replace('["06:00", "06:01"]', '["06:00"]'))
    mock_a.default = status(500)
    heard = []
    run.gateway.events.subscribe(heard.append)
    try:
        for minute in range(4):                  # 06:00 and its 2 retries fail
            await run.tick_at(at(6, minute))
    finally:
        await run.stop()
    assert len(mock_a.requests) == 3 and [e.kind for e in heard] == ["activation_failed"]
    restarted = Run(tmp_path, mock_a, rules.replace('["06:00", "06:01"]', '["06:00"]'))
    restarted.gateway.events.subscribe(heard.append)
    try:
        seed_from_ledger(restarted.activator.schedule, restarted.gateway.rules, at(6, 5))
        for minute in range(5, 10):              # within grace of 06:00
            assert await restarted.tick_at(at(6, minute)) == []
    finally:
        await restarted.stop()
    assert len(mock_a.requests) == 3 and [e.kind for e in heard] == ["activation_failed"]


async def test_a_restart_past_grace_that_ends_a_series_with_tries_left_says_so(tmp_path, mock_a, caplog):
    # its tries left were dropped without a word: no log line, no activation_failed, and the
    # window the user counts on never opened
    rules = RULES.replace("retries: 20, retry_interval: 70s", "retries: 5, retry_interval: 60s")
    rules = rules.replace('["06:00", "06:01"]', '["06:00"]')
    run = Run(tmp_path, mock_a, rules)
    mock_a.default = status(500)
    try:
        for minute in range(2):                  # 06:00 and one retry fail; four tries are left
            await run.tick_at(at(6, minute))
    finally:
        await run.stop()
    restarted = Run(tmp_path, mock_a, rules)
    heard = []
    restarted.gateway.events.subscribe(heard.append)
    restarted.now = at(6, 30)                    # past the 15 minutes' grace of the next retry
    try:
        await restarted.activator.seed()
        assert await restarted.tick_at(at(6, 30)) == []
    finally:
        await restarted.stop()
    [told] = heard
    assert told.kind == "activation_failed" and told.upstream == "relay"
    assert "failed 2 time(s); its tries left were past the grace period" in told.reason
    assert "its tries left were past the grace period" in caplog.text and len(mock_a.requests) == 2
