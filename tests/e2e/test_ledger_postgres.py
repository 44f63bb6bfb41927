"""End to end: two mitmdump instances write their usage rows into one PostgreSQL `requests` table
(the URL's password from ${VAR}, never in their logs); `ccswitch report --db` reads both
instances' requests; an instance (re)started afterwards starts its budgets from that shared
ledger, so a client that spent its budget through one instance is refused by the other."""

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import anthropic
import httpx
import psycopg
import pytest

from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import Proxy

ALICE, BOB = "ccsw-ALICE-0000000000", "ccsw-BOB-00000000000"
RULES = """
timezone: UTC
usage_db: postgresql://USER:${LEDGER_PASSWORD}@HOST/DATABASE
client_keys:
  - {name: alice, key: "ALICE", budget: {daily: 0.00005}}
  - {name: bob, key: "BOB"}
upstreams:
  - {name: a, protocol: anthropic, base_url: 'BASE_URL', api_key: 'sk-e2e-a'}
routes: {claude: [a]}
"""
MODEL = "claude-sonnet-4-5"        # priced: one mock answer costs more than alice's daily budget


def ask(proxy: Proxy, key: str) -> str:
    client = anthropic.Anthropic(api_key=key, base_url=proxy.reverse_url, max_retries=0)
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=5,
                                                   messages=[{"role": "user", "content": "hi"}])
    return raw.headers["x-ccswitch-upstream"]


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def wait_requests(url: str, expected: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if rows(url, "SELECT count(*) FROM requests")[0][0] >= expected:
                return
        except psycopg.errors.UndefinedTable:    # the first writer creates the tables
            pass
        time.sleep(0.1)
    raise AssertionError(f"fewer than {expected} rows in PostgreSQL")


def test_two_instances_share_one_postgresql_ledger_and_budgets_read_it_after_a_restart(tmp_path, postgres_url):
    parts = urlsplit(postgres_url)
    password = parts.password
    with MockUpstream("A") as a:
        rules = tmp_path / "rules.yaml"
        text = RULES
        for name, value in (("USER", parts.username), ("HOST", parts.netloc.rpartition("@")[2]),
                            ("DATABASE", parts.path.lstrip("/")), ("ALICE", ALICE), ("BOB", BOB),
                            ("BASE_URL", a.base_url)):
            text = text.replace(name, value)
        rules.write_text(text)
        env = {"LEDGER_PASSWORD": password}
        one_dir, two_dir = tmp_path / "one", tmp_path / "two"
        one_dir.mkdir()
        two_dir.mkdir()
        with Proxy(rules, one_dir, env=env) as one, Proxy(rules, two_dir, env=env) as two:
            for _ in range(5):
                assert ask(one, BOB) == "a" and ask(two, BOB) == "a"
            assert ask(one, ALICE) == "a"                   # alice's first request spends over her budget
            wait_requests(postgres_url, 11)
        for proxy in (one, two):
            log = proxy.log()
            assert "usage ledger at postgresql://" in log and password not in log
            assert not proxy.usage_db.exists()               # nothing went to the default SQLite file

        found = rows(postgres_url, "SELECT client, count(*), count(DISTINCT request_id) FROM requests "
                                   "GROUP BY client ORDER BY client")
        assert found == [("alice", 1, 1), ("bob", 10, 10)]
        report = subprocess.run([str(Path(sys.executable).with_name("ccswitch")), "report", "--rules", str(rules),
                                 "--db", postgres_url, "--days", "2", "--json"],
                                capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert report.returncode == 0, report.stderr
        assert json.loads(report.stdout)["totals"]["requests"] == 11 and password not in report.stdout

        with Proxy(rules, two_dir, env=env) as two:         # restarted: reads the month's spend from PostgreSQL
            with pytest.raises(anthropic.RateLimitError) as refused:
                ask(two, ALICE)                              # she spent it through the other instance
            assert "client key alice has spent $" in refused.value.message
            assert ask(two, BOB) == "a"
            wait_requests(postgres_url, 13)
        assert len(a.requests) == 12                         # alice's refusal reached no upstream


def instance_ledger(proxy: Proxy) -> dict:
    return httpx.get(proxy.reverse_url + "/_ccswitch/status.json").json()["instance"]["ledger"]


def one_upstream_rules(tmp_path: Path, usage_db: str, upstream: MockUpstream) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"usage_db: {usage_db}\nupstreams:\n"
                     f"  - {{name: a, protocol: anthropic, base_url: '{upstream.base_url}', api_key: 'sk-e2e-a'}}\n"
                     "routes: {claude: [a]}\n")
    return rules


def test_requests_keep_being_answered_while_postgresql_is_down_and_every_row_arrives(tmp_path, own_postgres):
    """PostgreSQL stops (as if it crashed) in the middle of a stream of requests: every request is
    answered, the instance logs the outage once, and when the server is back every row is written."""
    with MockUpstream("A") as a:
        rules = one_upstream_rules(tmp_path, own_postgres.url, a)
        with Proxy(rules, tmp_path) as proxy:
            answered = 0
            for phase in ("up", "down", "back"):
                if phase == "down":
                    own_postgres.stop(mode="immediate")
                elif phase == "back":
                    own_postgres.start()
                for _ in range(15):
                    assert ask(proxy, "sk-any") == "a"       # no request waits on or fails for the ledger
                    answered += 1
                if phase == "down":                          # the page and the metrics say so
                    deadline = time.monotonic() + 15
                    while not (ledger := instance_ledger(proxy))["trouble"]:
                        assert time.monotonic() < deadline
                        time.sleep(0.1)
                    assert ledger["waiting"] >= 15 and own_postgres.password not in json.dumps(ledger)
                    assert "\nccswitch_ledger_ok 0\n" in httpx.get(proxy.reverse_url + "/_ccswitch/metrics").text
            wait_requests(own_postgres.url, answered, timeout=30)
            log = proxy.log()
        assert rows(own_postgres.url, "SELECT count(*), count(DISTINCT request_id) FROM requests") == \
            [(answered, answered)]
        assert log.count("cannot write the usage ledger") == 1 and log.count("is writable again") == 1
        assert own_postgres.password not in log


def test_an_instance_started_while_postgresql_is_down_serves_and_catches_up(tmp_path, own_postgres):
    """It logged the unreadable spend as an error, and mitmdump exits on an error logged while it
    starts: the instance was gone.  It now serves at once, and writes its rows once PostgreSQL is up."""
    own_postgres.stop(mode="immediate")
    with MockUpstream("A") as a:
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"usage_db: {own_postgres.url}\nclient_keys: [{{name: alice, key: '{ALICE}', "
                         "budget: {daily: 100}}]\nupstreams:\n"
                         f"  - {{name: a, protocol: anthropic, base_url: '{a.base_url}', api_key: 'sk-e2e-a'}}\n"
                         "routes: {claude: [a]}\n")
        with Proxy(rules, tmp_path) as proxy:
            for _ in range(3):
                assert ask(proxy, ALICE) == "a"
            own_postgres.start()
            wait_requests(own_postgres.url, 3, timeout=30)
            log = proxy.log()
    assert "cannot read the spend so far" in log and "budgets count from 0 until it can be read" in log
    assert "Error logged during startup" not in log and own_postgres.password not in log


def test_an_instance_restarted_while_postgresql_is_still_down_starts_and_writes_every_row_later(
        tmp_path, own_postgres):
    """A stop during the outage keeps its rows in a file; the next start takes them at once and
    cannot write them yet. That failure was logged as an error while mitmdump started, and it
    exited: a restart or a redeploy during an outage left no instance serving."""
    own_postgres.stop(mode="immediate")
    with MockUpstream("A") as a:
        rules = one_upstream_rules(tmp_path, own_postgres.url, a)
        with Proxy(rules, tmp_path) as proxy:
            for _ in range(2):
                assert ask(proxy, "sk-any") == "a"
        unwritten = tmp_path / ".ccswitch" / "unwritten"
        assert len(list(unwritten.iterdir())) == 1
        with Proxy(rules, tmp_path) as proxy:
            assert ask(proxy, "sk-any") == "a"
            own_postgres.start()
            wait_requests(own_postgres.url, 3, timeout=30)
            log = proxy.log()
    assert "writing 4 usage row(s) an earlier stop could not write" in log      # 2 requests, 2 attempts
    assert "Error logged during startup" not in log and own_postgres.password not in log
    assert list(unwritten.iterdir()) == []


def _server_processes(cluster) -> list[int]:
    """The postmaster and its children (backends, writers)."""
    main = int((cluster.data / "postmaster.pid").read_text().split()[0])
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == main]
    return [main, *children]


def _signal_each(pids: list[int], signum: int) -> None:
    """A child that ended meanwhile is gone once the postmaster, continued first, has reaped it."""
    import os
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_a_stop_while_postgresql_hangs_keeps_the_rows_before_a_supervisor_s_kill(tmp_path, own_postgres):
    """A frozen server (it takes the connection and never answers) held a stop's ledger flush for
    its whole 10 s, with no request in flight: `docker stop` kills at 10 s, and the rows were lost.
    The stop now keeps them in a file within seconds; the next start writes them, once each."""
    import signal
    with MockUpstream("A") as a:
        rules = one_upstream_rules(tmp_path, own_postgres.url, a)
        proxy = Proxy(rules, tmp_path).start()
        try:
            assert ask(proxy, "sk-any") == "a"
            wait_requests(own_postgres.url, 1)
            frozen = _server_processes(own_postgres)
            _signal_each(frozen, signal.SIGSTOP)
            try:
                for _ in range(2):
                    assert ask(proxy, "sk-any") == "a"          # answered while the ledger hangs
                time.sleep(0.5)                                 # their rows in the writer's hand
                started = time.monotonic()
                proxy.stop()
                took = time.monotonic() - started
            finally:
                _signal_each(frozen, signal.SIGCONT)
            log = proxy.log()
        finally:
            proxy.stop()
        assert took < 6, took                                   # about 2 s; 12 s before
        assert "has not answered a write for" in log and own_postgres.password not in log
        unwritten = tmp_path / ".ccswitch" / "unwritten"
        assert len(list(unwritten.iterdir())) == 1
        with Proxy(rules, tmp_path):
            deadline = time.monotonic() + 30
            while list(unwritten.iterdir()):
                assert time.monotonic() < deadline
                time.sleep(0.1)
    assert rows(own_postgres.url, "SELECT count(*), count(DISTINCT request_id) FROM requests") == [(3, 3)]
