"""Notifications through the real proxy: one `cooldown` per outage however many requests hit
it, `recovered` after, a hook that hangs or answers 500 costs requests nothing, and the
`ccswitch notify-test` command against loopback hooks."""

import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, ok, status
from tests.support.proxy_process import Proxy
from tests.support.webhook_receiver import WebhookReceiver

CCSWITCH = Path(sys.executable).with_name("ccswitch")
BODY = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def rules_text(a: MockUpstream, b: MockUpstream, hooks: list[str]) -> str:
    notify = "notify:\n" + "".join(f"  - {hook}\n" for hook in hooks) if hooks else ""
    return f"""
failover: {{threshold: 1, cooldown: 1s, retry_backoff: 10ms}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}'}}
  - {{name: b, protocol: anthropic, base_url: '{b.base_url}', api_key: '{KEY_B}'}}
  - {{name: off, protocol: openai-responses, base_url: '{b.base_url}/v1', api_key: '{KEY_B}', enabled: false}}
routes: {{claude: [a, b], codex: [off]}}
{notify}"""


def post(client: httpx.Client, proxy: Proxy, path: str = "/v1/messages") -> tuple[int, float, str | None]:
    began = time.perf_counter()
    r = client.post(proxy.reverse_url + path, json=BODY, headers={"x-api-key": CLIENT_KEY})
    return r.status_code, time.perf_counter() - began, r.headers.get("x-ccswitch-upstream")


@pytest.fixture
def upstreams():
    with MockUpstream("A") as a, MockUpstream("B") as b:
        yield a, b


def start_proxy(tmp_path: Path, name: str, text: str) -> Proxy:
    work = tmp_path / name
    work.mkdir()
    (work / "rules.yaml").write_text(text)
    return Proxy(work / "rules.yaml", work).start()


def test_an_outage_is_one_cooldown_and_one_recovered_notification(tmp_path, upstreams):
    a, b = upstreams
    a.default = status(503)
    with WebhookReceiver() as hook:
        # as shipped (a first recovery is told at once, whatever ccswitch_notify_settle)
        proxy = start_proxy(tmp_path, "outage", rules_text(a, b, [f"{{url: '{hook.url()}'}}"]))
        try:
            with httpx.Client(timeout=30) as client:
                began = time.time()
                answers = [post(client, proxy) for _ in range(12)]
                time.sleep(1.2)                       # past the cooldown: the next request probes a
                answers += [post(client, proxy) for _ in range(8)]   # each probe fails: the same outage
                assert {(code, who) for code, _, who in answers} == {(200, "b")}
                assert len([r for r in a.requests if r.protocol]) >= 2
                first = hook.wait_for(1)
                time.sleep(0.5)                       # nothing more is on its way
                assert len(hook.received) == 1
                a.default = ok()
                time.sleep(1.2)
                code, _, who = post(client, proxy)
                assert (code, who) == (200, "a")
                received = hook.wait_for(2, timeout=3)
        finally:
            proxy.stop()
    cooldown = first[0].json()
    assert set(cooldown) == {"event", "upstream", "route", "reason", "until", "ts", "id"}
    assert (cooldown["event"], cooldown["upstream"], cooldown["route"]) == ("cooldown", "a", None)
    assert cooldown["reason"] == "cooling down for 1s after 1 consecutive failure(s) (last: HTTP 503)"
    until, ts = datetime.fromisoformat(cooldown["until"]), datetime.fromisoformat(cooldown["ts"])
    assert 0.5 <= (until - ts).total_seconds() <= 2.0 and abs(ts.timestamp() - began) < 5
    assert first[0].headers["content-type"] == "application/json"
    recovered = received[1].json()
    assert (recovered["event"], recovered["upstream"], recovered["until"]) == ("recovered", "a", None)
    assert len(received) == 2
    body_text = b"".join(r.body for r in received).decode()
    assert KEY_A not in body_text and KEY_B not in body_text and CLIENT_KEY not in body_text


def test_a_hanging_or_failing_hook_does_not_slow_requests(tmp_path, upstreams):
    a, b = upstreams
    a.default = status(503)
    with WebhookReceiver(hang=True) as stuck, WebhookReceiver(status=500) as failing:
        quiet = start_proxy(tmp_path, "quiet", rules_text(a, b, []))
        loud = start_proxy(tmp_path, "loud", rules_text(a, b, [
            f"{{url: '{stuck.url()}', timeout: 5s}}", f"{{url: '{failing.url()}', format: slack}}"]))
        try:
            with httpx.Client(timeout=30) as client:
                timings = {}
                for name, proxy in (("quiet", quiet), ("loud", loud)):
                    post(client, proxy)               # warm up: connections, the first cooldown
                    answers = []
                    for _ in range(10):               # each: a failover (claude) and ccswitch's own 503 (codex)
                        answers.append(post(client, proxy))
                        answers.append(post(client, proxy, "/v1/responses"))
                        time.sleep(0.1)               # past a's 1s cooldown more than once
                    assert [code for code, _, _ in answers] == [200, 503] * 10
                    timings[name] = [seconds for _, seconds, _ in answers]
            stuck.wait_for(1)                         # its first POST hangs (from the warm-up on)
            failing.wait_for(2)                       # and the 500 is retried
        finally:
            quiet.stop()
            loud.stop()
    assert max(timings["loud"]) < 1.5
    assert statistics.median(timings["loud"]) < statistics.median(timings["quiet"]) + 0.3
    # the stuck hook holds its first event (the others wait in its own lane); the 500 is retried
    assert [r.json()["event"] for r in stuck.received] == ["cooldown"]
    assert all(r.json()["text"].startswith("ccswitch cooldown: a: ") for r in failing.received)


def test_the_notify_test_command_reports_each_hook(tmp_path):
    with WebhookReceiver() as good, WebhookReceiver(status=500) as bad:
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"notify:\n  - {{url: '{good.url()}', format: discord}}\n  - {{url: '{bad.url()}'}}\n")
        done = subprocess.run([str(CCSWITCH), "notify-test", "--rules", str(rules)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1
        assert done.stdout.splitlines() == [f"hook 1 (discord) 127.0.0.1:{good.port}: ok (HTTP 200)",
                                            f"hook 2 (json) 127.0.0.1:{bad.port}: failed (HTTP 500)"]
        assert good.bodies() == [{"content": "ccswitch test: a test notification: this hook receives "
                                             "ccswitch's events", "allowed_mentions": {"parse": []}}]
        assert bad.bodies()[0]["event"] == "test"
        assert "T0KEN" not in done.stdout + done.stderr
        rules.write_text(f"notify:\n  - {{url: '{good.url()}'}}\n")
        done = subprocess.run([str(CCSWITCH), "notify-test", "--rules", str(rules)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == f"hook 1 (json) 127.0.0.1:{good.port}: ok (HTTP 200)"
