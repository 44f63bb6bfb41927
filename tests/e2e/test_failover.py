"""Failover through the real proxy: concurrency, saved flows, client disconnects."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from mitmproxy import io

from ccswitch.dial.dialer import Dialer
from ccswitch.dial.relay import JOB_HEADER, Relay
from ccswitch.routing.health import HealthBoard
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B, make_job, one_upstream_rules, rules_for
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import MockUpstream, slow_stream, status
from tests.support.proxy_process import Proxy

BODY = {"model": "claude-x", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("failover")
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp / "rules.yaml"
        rules.write_text(f"""
failover: {{threshold: 1000}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}'}}
  - {{name: b, protocol: anthropic, base_url: '{b.base_url}', api_key: '{KEY_B}'}}
routes: {{claude: [a, b]}}
""")
        flows = tmp / "flows.mitm"
        proxy = Proxy(rules, tmp, extra_args=("-w", str(flows)))
        with proxy:
            yield proxy, a, b, flows


def stream_text(client: httpx.Client, url: str) -> tuple[int, str, dict]:
    text = []
    with client.stream("POST", url + "/v1/messages", json=BODY, headers={"x-api-key": CLIENT_KEY}) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and '"text_delta"' in line:
                text.append(json.loads(line[5:])["delta"]["text"])
        return r.status_code, "".join(text), dict(r.headers)


def test_fifty_concurrent_failovers_lose_nothing(world):
    proxy, a, b, _ = world
    a.default = status(503)
    try:
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda _: stream_text(client, proxy.reverse_url), range(50)))
    finally:
        a.default = type(a.default)()
    assert [r[0] for r in results] == [200] * 50
    assert all(r[1] == "Hello from mock B" for r in results)
    assert all(r[2]["x-ccswitch-attempts"] == "2" and r[2]["x-ccswitch-upstream"] == "b" for r in results)
    assert len([r for r in a.requests if r.protocol]) == 50 and len([r for r in b.requests if r.protocol]) == 50


def test_upstream_connections_are_kept_alive(world):
    proxy, a, _, _ = world
    before = a.connections_accepted
    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            assert stream_text(client, proxy.reverse_url)[1] == "Hello from mock A"
            r = client.post(proxy.reverse_url + "/v1/messages", json={**BODY, "stream": False},
                            headers={"x-api-key": CLIENT_KEY})
            assert r.status_code == 200
    assert a.connections_accepted - before <= 2   # twenty requests, one kept-alive connection


def test_saved_flows_and_log_hold_no_key(world):
    proxy, a, b, flows = world
    a.script(status(529))
    with httpx.Client(timeout=30) as client:
        assert stream_text(client, proxy.reverse_url)[1] == "Hello from mock B"
    proxy.stop()  # flushes the -w file
    with open(flows, "rb") as f:
        saved = list(io.FlowReader(f).stream())
    assert saved
    dumped = json.dumps([fl.get_state() for fl in saved], default=repr)
    for secret in (KEY_A, KEY_B, CLIENT_KEY):
        assert secret not in dumped and secret not in proxy.log()
    failed_over = [fl for fl in saved if fl.marked]
    assert failed_over and "a: 529" in failed_over[-1].comment and "b: 200" in failed_over[-1].comment
    assert failed_over[-1].request.headers["x-api-key"] == "<redacted>"
    assert failed_over[-1].request.url.startswith(b.base_url)
    assert json.loads(failed_over[-1].request.content)["messages"] == BODY["messages"]   # the body is back


async def test_client_disconnect_cancels_upstream_and_counts_nothing():
    with MockUpstream("slow") as slow:
        slow.default = slow_stream(200, 0.02)
        health = HealthBoard()
        dialer = Dialer(health, allow_url=loopback_url)
        finished = asyncio.Event()
        relay = Relay(dialer.run, on_done=lambda job: finished.set())
        await relay.start()
        job = make_job(rules_for(("a", "anthropic", slow.base_url)))
        relay.register(job)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            body = json.dumps(BODY).encode()
            writer.write(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n" + f"{JOB_HEADER}: {job.token}\r\n".encode()
                         + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            seen = b""
            while b"text_delta" not in seen:
                seen += await reader.read(4096)
            writer.close()   # the client goes away mid-stream
            await asyncio.wait_for(finished.wait(), 2)
        finally:
            await relay.stop()
            await dialer.aclose()
        assert job.error == "client_closed"
        assert health.get("a").failures == 0 and len(job.attempts) == 1
        assert job.latency_ms < 2000   # 200 events x 20 ms would take 4 s: the upstream was cut at once


def ledger(proxy, sql, *args):
    import sqlite3
    conn = sqlite3.connect(proxy.usage_db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def wait_rows(proxy, expected, sql="SELECT count(*) FROM requests"):
    import sqlite3
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if proxy.usage_db.exists() and ledger(proxy, sql)[0][0] >= expected:
                return
        except sqlite3.OperationalError as exc:     # the file is there a moment before its tables
            if "no such table" not in str(exc):
                raise
        time.sleep(0.1)
    raise AssertionError(f"ledger has {ledger(proxy, sql)[0][0]} rows, expected {expected}")


def test_two_hundred_concurrent_requests_give_two_hundred_rows(tmp_path):
    with MockUpstream("A") as a:
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
""")
        with Proxy(rules, tmp_path) as proxy:
            with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=200)) as client, \
                    ThreadPoolExecutor(64) as pool:
                results = list(pool.map(lambda _: stream_text(client, proxy.reverse_url), range(200)))
            assert all(r[1] == "Hello from mock A" for r in results)
            wait_rows(proxy, 200)
            rows = ledger(proxy, "SELECT count(*), count(DISTINCT request_id), sum(input_tokens), "
                                 "sum(cache_read_tokens), min(stream), max(attempts) FROM requests")
            assert rows == [(200, 200, 200 * 25, 200 * 100, 1, 1)]


def test_failovers_leave_attempt_rows(world):
    proxy, a, b, _ = world
    # the module's proxy was stopped by the saved-flows test: its ledger is complete on disk
    rows = ledger(proxy, "SELECT attempts, upstream, status, error FROM requests WHERE attempts > 1")
    assert len(rows) >= 51 and all(r[:3] == (2, "b", 200) for r in rows)
    attempts = ledger(proxy, "SELECT n, upstream, status FROM attempts WHERE request_id IN "
                             "(SELECT request_id FROM requests WHERE attempts > 1) ORDER BY request_id, n")
    assert len(attempts) == 2 * len(rows)
    assert {(n, u) for n, u, _ in attempts} == {(1, "a"), (2, "b")}
    assert {s for n, u, s in attempts if n == 1} <= {503, 529}


def test_non_streamed_client_that_leaves_cancels_the_upstream_and_counts_nothing(tmp_path):
    from tests.support.mock_upstream import hang_before_headers
    with MockUpstream("A") as a:
        a.default = hang_before_headers(5)
        with Proxy(one_upstream_rules(tmp_path, a.base_url, "failover: {threshold: 1}"), tmp_path) as proxy:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(proxy.reverse_url + "/v1/messages", json={**BODY, "stream": False},
                           headers={"x-api-key": CLIENT_KEY}, timeout=0.5)
            wait_rows(proxy, 1)
            ((status, error, latency),) = ledger(proxy, "SELECT status, error, latency_ms FROM requests")
            assert error == "client_closed" and latency < 1500
            a.default = type(a.default)()
            # no failure was counted: with threshold 1 a counted failure would have cooled `a` down
            r = httpx.post(proxy.reverse_url + "/v1/messages", json={**BODY, "stream": False},
                           headers={"x-api-key": CLIENT_KEY}, timeout=5)
            assert r.status_code == 200 and r.headers["x-ccswitch-attempts"] == "1"
