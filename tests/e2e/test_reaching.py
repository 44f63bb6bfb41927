"""End to end through a real mitmdump: upstreams reached through loopback HTTP CONNECT and
SOCKS5 proxies (a wrong password fails over, and no proxy password reaches the log or the
ledger), the connection cap under 50 concurrent requests, and cache breakpoints trimmed for
the upstream that asks for it."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.test_failover import ledger, wait_rows
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, hang_before_headers, status
from tests.support.proxy_process import Proxy
from tests.support.tunnel_proxies import ConnectProxy, Socks5Proxy
from tests.unit.wire.test_cache_breakpoints import body_with_six

PROXY_PASS, WRONG_PASS = "e2e-proxy-pass-0123", "e2e-wrong-pass-4567"
HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}


def post(client: httpx.Client, proxy: Proxy, body: dict) -> httpx.Response:
    return client.post(proxy.reverse_url + "/v1/messages", json=body, headers=HEADERS)


def everything_in(db) -> str:
    """Every value of every table of the ledger, as text."""
    conn = sqlite3.connect(db)
    try:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(row) for table in tables for row in conn.execute(f"SELECT * FROM {table}"))
    finally:
        conn.close()


def test_upstreams_through_proxies_fail_over_on_a_wrong_password_and_keep_it_secret(tmp_path):
    with MockUpstream("A") as a, MockUpstream("B") as b, MockUpstream("C") as c, \
            ConnectProxy(auth=("me", PROXY_PASS)) as connect, Socks5Proxy(auth=("me", PROXY_PASS)) as socks:
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
upstream_proxy: 'http://me:${{PROXY_PASS}}@127.0.0.1:{connect.port}'
upstreams:
  - {{name: wrong, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}',
     proxy: 'socks5://me:${{WRONG_PASS}}@127.0.0.1:{socks.port}'}}
  - {{name: tunnelled, protocol: anthropic, base_url: '{b.base_url}', api_key: '{KEY_B}', cache_breakpoints: 2}}
  - {{name: socks, protocol: anthropic, base_url: 'http://localhost:{c.port}', api_key: '{KEY_B}',
     proxy: 'socks5h://me:${{PROXY_PASS}}@127.0.0.1:{socks.port}'}}
routes: {{claude: [wrong, tunnelled, socks]}}
""")
        with Proxy(rules, tmp_path, env={"PROXY_PASS": PROXY_PASS, "WRONG_PASS": WRONG_PASS}) as proxy, \
                httpx.Client(timeout=30) as client:
            sent = body_with_six()
            first = post(client, proxy, sent)
            b.script(status(503))
            second = post(client, proxy, {**sent, "stream": True})
            wait_rows(proxy, 2)
            log = proxy.log()
        db = everything_in(proxy.usage_db)
    assert (first.status_code, first.headers["x-ccswitch-upstream"]) == (200, "tunnelled")
    assert (second.status_code, second.headers["x-ccswitch-upstream"]) == (200, "socks")
    assert "message_stop" in second.text and len(c.requests) == 1
    # the relay that asks for two markers got two; the client sent six, the next upstream all six
    assert b.requests[0].json["system"][1]["cache_control"] and b.requests[0].json["messages"][0]["content"][0]["cache_control"]
    assert str(b.requests[0].json).count("cache_control") == 2
    assert str(c.last().json).count("cache_control") == 6
    assert a.requests == []
    # one CONNECT tunnel to B, kept alive over both requests; socks5h sent the name `localhost`
    assert connect.tunnels == 1 and connect.targets == [("127.0.0.1", b.port)]
    assert set(connect.credentials) == {("me", PROXY_PASS)}
    assert ("me", WRONG_PASS) in socks.credentials and ("localhost", c.port) in socks.targets
    reason = f"proxy socks5://127.0.0.1:{socks.port}: authentication failed"
    assert reason in log and reason in db
    for text in (log, db):
        assert PROXY_PASS not in text and WRONG_PASS not in text and "me:" not in text


def test_the_connection_cap_holds_under_50_concurrent_requests(tmp_path):
    with MockUpstream("A") as a, MockUpstream("B") as b:
        a.default = hang_before_headers(0.05)
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
timeouts: {{connect: 20s}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}', max_connections: 4}}
  - {{name: b, protocol: anthropic, base_url: '{b.base_url}', api_key: '{KEY_B}'}}
routes: {{claude: [a, b]}}
""")
        with Proxy(rules, tmp_path) as proxy, httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64)) as client, \
                ThreadPoolExecutor(50) as pool:
            bodies = [{"model": "claude-x", "max_tokens": 5, "stream": i % 2 == 0,
                       "messages": [{"role": "user", "content": f"request {i}"}]} for i in range(50)]
            answers = list(pool.map(lambda body: post(client, proxy, body), bodies))
            wait_rows(proxy, 50)
            rows = ledger(proxy, "SELECT count(*), min(upstream), max(upstream), max(attempts) FROM requests")
    assert [(r.status_code, r.headers["x-ccswitch-upstream"]) for r in answers] == [(200, "a")] * 50
    assert all(r.json()["content"][0]["text"] == "Hello from mock A" for r in answers[1::2])   # the non-streamed
    assert all("message_stop" in r.text for r in answers[::2])
    assert sorted(r.json["messages"][0]["content"] for r in a.requests) == sorted(f"request {i}" for i in range(50))
    assert a.peak_connections == 4 and a.connections_accepted == 4 and b.requests == []
    assert rows == [(50, "a", "a", 1)]
