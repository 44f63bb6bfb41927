"""The live page through the real mitmdump: on a reverse listener and for the host `ccswitch`
through the regular proxy, with and without client keys; never forwarded, never recorded."""

import sqlite3
import ssl
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, status
from tests.support.proxy_process import Proxy

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}
KEY = {"x-api-key": CLIENT_KEY}


def rules_text(a: str, b: str, keys: bool = True) -> str:
    head = f'client_keys: ["{CLIENT_KEY}"]\n' if keys else ""
    return head + f"""failover: {{threshold: 1, cooldown: 300}}
upstreams:
  - {{name: relay-a, protocol: anthropic, base_url: '{a}', api_key: '{KEY_A}'}}
  - {{name: relay-b, protocol: anthropic, base_url: '{b}', api_key: '{KEY_B}'}}
routes: {{claude: [relay-a, relay-b]}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """relay-a answers 529 (and then cools down), relay-b serves; the reverse listener's own
    target is a third mock that must never see a page request."""
    tmp = tmp_path_factory.mktemp("live")
    with MockUpstream("A") as a, MockUpstream("B") as b, MockUpstream("target") as target:
        a.default = status(529)
        rules = tmp / "rules.yaml"
        rules.write_text(rules_text(a.base_url, b.base_url))
        with Proxy(rules, tmp, reverse_target=target.base_url) as proxy:
            with httpx.Client(timeout=30, trust_env=False) as client:
                for _ in range(3):
                    with client.stream("POST", proxy.reverse_url + "/v1/messages", json=BODY, headers=KEY) as r:
                        assert r.status_code == 200
                        r.read()
            yield proxy, a, b, target


def ledger_rows(proxy: Proxy) -> int:
    deadline = time.monotonic() + 10
    while True:   # the writer thread commits shortly after each request
        if proxy.usage_db.exists():
            with sqlite3.connect(proxy.usage_db) as conn:
                try:
                    n = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
                except sqlite3.OperationalError as exc:   # the file is there a moment before its tables
                    if "no such table" not in str(exc):
                        raise
                    n = 0
            if n >= 3 or time.monotonic() > deadline:
                return n
        elif time.monotonic() > deadline:
            return 0
        time.sleep(0.1)


def metric(text: str, family: str, sample: str, **labels) -> float:
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            for s in fam.samples:
                if s.name == sample and s.labels == labels:
                    return s.value
    raise AssertionError(f"{sample}{labels} not in the metrics")


def test_the_reverse_listener_serves_page_json_and_metrics_with_the_client_key(world):
    proxy, a, b, target = world
    url = proxy.reverse_url + "/_ccswitch"
    with httpx.Client(timeout=30, trust_env=False) as client:
        assert client.get(url + "/").status_code == 401
        assert client.get(url + "/status.json", headers={"x-api-key": "sk-wrong"}).status_code == 401
        page = client.get(url + f"/?key={CLIENT_KEY}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'id="initial"' in page.text
        data = client.get(url + "/status.json", headers={"authorization": f"Bearer {CLIENT_KEY}"}).json()
        metrics = client.get(url + "/metrics", headers=KEY)
        head = client.head(url + "/metrics", headers=KEY)
        assert client.get(url + "/status.json", headers=KEY).status_code == 200   # the connection stays sound
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(metrics.content))
    states = {u["name"]: u["state"] for u in data["upstreams"]}
    assert states == {"relay-a": "cooling", "relay-b": "available"}
    assert [r["upstream"] for r in data["recent"]] == ["relay-b"] * 3
    assert data["recent"][-1]["attempts"] == [{"upstream": "relay-a", "result": "529", "why": "Overloaded"},
                                              {"upstream": "relay-b", "result": "200", "why": None}]
    assert data["recent"][0]["tokens"]["input"] > 0 and data["today"]["requests"] == 3
    assert data["today"]["failovers"] == 1 and data["today"]["cost_usd"] > 0
    text = metrics.text
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert metric(text, "ccswitch_requests", "ccswitch_requests_total", route="claude", upstream="relay-b",
                  status="200") == 3
    assert metric(text, "ccswitch_failovers", "ccswitch_failovers_total") == 1
    assert metric(text, "ccswitch_attempts", "ccswitch_attempts_total", upstream="relay-a", outcome="http_529") == 1
    assert metric(text, "ccswitch_upstream_up", "ccswitch_upstream_up", upstream="relay-a") == 0
    assert metric(text, "ccswitch_request_duration_seconds", "ccswitch_request_duration_seconds_count",
                  route="claude", upstream="relay-b") == 3
    # never forwarded, never recorded, no key text anywhere
    assert target.paths() == [] and all(p == "/v1/messages" for p in a.paths() + b.paths())
    assert ledger_rows(proxy) == 3
    for body in (page.text, str(data), text):
        assert CLIENT_KEY not in body and KEY_A not in body and KEY_B not in body
    log = proxy.log()
    assert CLIENT_KEY not in log, log[max(0, log.find(CLIENT_KEY) - 500):log.find(CLIENT_KEY) + 100]
    assert "key=%3Credacted%3E" in log


def test_the_host_ccswitch_through_the_regular_proxy(world):
    proxy, _, _, target = world
    with httpx.Client(proxy=proxy.proxy_url, timeout=30, trust_env=False) as client:
        assert client.get("http://ccswitch/").status_code == 401
        page = client.get("http://ccswitch/", headers=KEY)
        assert page.status_code == 200 and 'id="upstreams"' in page.text
        assert client.get("http://ccswitch/_ccswitch/status.json", headers=KEY).json()["today"]["requests"] == 3
        assert client.get("http://ccswitch/elsewhere", headers=KEY).status_code == 404
    # https too, with the proxy's CA like any intercepted host
    trust = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with httpx.Client(proxy=proxy.proxy_url, verify=trust, timeout=30, trust_env=False) as client:
        metrics = client.get(f"https://ccswitch/_ccswitch/metrics?key={CLIENT_KEY}")
        assert metrics.status_code == 200 and "ccswitch_requests_total" in metrics.text
    assert target.paths() == []


def test_without_client_keys_loopback_needs_no_key(tmp_path):
    with MockUpstream("A") as a, MockUpstream("target") as target:
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(a.base_url, a.base_url, keys=False))
        with Proxy(rules, tmp_path, reverse_target=target.base_url) as proxy:
            with httpx.Client(timeout=30, trust_env=False) as client:
                data = client.get(proxy.reverse_url + "/_ccswitch/status.json").json()
                assert data["recent"] == [] and data["today"]["requests"] == 0
                assert client.get(proxy.reverse_url + "/_ccswitch/").status_code == 200
            with httpx.Client(proxy=proxy.proxy_url, timeout=30, trust_env=False) as client:
                assert "ccswitch_upstream_up" in client.get("http://ccswitch/_ccswitch/metrics").text
        assert target.paths() == []


def test_status_json_says_while_the_rules_files_last_edit_is_not_in_force(tmp_path):
    with MockUpstream("A") as a, MockUpstream("target") as target:
        rules = tmp_path / "rules.yaml"
        good = rules_text(a.base_url, a.base_url, keys=False)
        rules.write_text(good)
        with Proxy(rules, tmp_path, reverse_target=target.base_url) as proxy:
            url = proxy.reverse_url + "/_ccswitch/status.json"
            with httpx.Client(timeout=30, trust_env=False) as client:
                assert client.get(url).json()["rules_not_applied"] is None
                rules.write_text(good.replace("protocol: anthropic", "protocol: antropic", 1))
                deadline = time.monotonic() + 10
                while (said := client.get(url).json()["rules_not_applied"]) is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert said["why"] == "the rules file's last edit is invalid (1 problem)", said
                rules.write_text(good + "\n# mended\n")
                deadline = time.monotonic() + 10
                while client.get(url).json()["rules_not_applied"] is not None:
                    assert time.monotonic() < deadline, "the mended edit was not taken up"
                    time.sleep(0.2)


def test_a_request_under_way_shows_as_in_flight_until_it_ends(tmp_path):
    """An operator watching long streams sees them while they run, not only once they ended."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.mock_upstream import slow_stream
    with MockUpstream("A") as a, MockUpstream("B") as b:
        a.script(slow_stream(8, 0.25))
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(a.base_url, b.base_url, keys=False))
        with Proxy(rules, tmp_path) as proxy, httpx.Client(timeout=30, trust_env=False) as client:
            def ask() -> int:
                with client.stream("POST", proxy.reverse_url + "/v1/messages", json=BODY) as r:
                    r.read()
                    return r.status_code
            with ThreadPoolExecutor(1) as pool:
                done = pool.submit(ask)
                deadline = time.monotonic() + 10
                # listed from when it is planned; on its upstream once its attempt began
                while True:
                    data = client.get(proxy.reverse_url + "/_ccswitch/status.json").json()
                    if any(r["upstream"] for r in data["in_flight"]["requests"]):
                        break
                    assert time.monotonic() < deadline, "the stream never showed as in flight on its upstream"
                    time.sleep(0.05)
                text = client.get(proxy.reverse_url + "/_ccswitch/metrics").text
                assert done.result() == 200
            [running] = data["in_flight"]["requests"]
            assert running["route"] == "claude" and running["model"] == BODY["model"] and running["stream"] is True
            assert running["upstream"] == "relay-a" and running["attempt"] == 1 and running["seconds"] >= 0
            assert {u["name"]: u["in_flight"] for u in data["upstreams"]} == {"relay-a": 1, "relay-b": 0}
            assert {u["name"]: u["connections"]["open"] for u in data["upstreams"]}["relay-a"] == 1
            assert data["today"]["requests"] == 0          # not counted before it ends
            assert metric(text, "ccswitch_requests_in_flight", "ccswitch_requests_in_flight", route="claude") == 1
            assert metric(text, "ccswitch_upstream_in_flight", "ccswitch_upstream_in_flight", upstream="relay-a") == 1
            assert metric(text, "ccswitch_upstream_connections", "ccswitch_upstream_connections",
                          upstream="relay-a", state="open") == 1
            after = client.get(proxy.reverse_url + "/_ccswitch/status.json").json()
            assert after["in_flight"] == {"count": 0, "requests": []} and after["today"]["requests"] == 1
