"""Codex CLI's bridged WebSocket turns sent to a `websocket: true` upstream over its own
Responses WebSocket (real `codex exec` through HTTPS_PROXY): the upstream socket continues the
responses it issued with only the new items; a failover between a WebSocket upstream and an
HTTPS one, either way, sends the second upstream the full input and no foreign
previous_response_id (the mock answers an id its connection did not issue with an error)."""

import sqlite3

import pytest

from tests.e2e.test_cli_clients import CODEX, client_env, run
from tests.e2e.test_failover import wait_rows
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, ok, status
from tests.support.proxy_process import Proxy

pytestmark = pytest.mark.skipif(not CODEX.exists(), reason="run `npm ci --prefix tests/clients` to install the real CLIs")

RULES = f"""
failover: {{threshold: 3, hold_back: 2s}}
upstreams:
  - {{name: codex-a, protocol: openai-responses, base_url: '{{a}}/v1', api_key: '{KEY_A}', websocket: {{a_ws}}}}
  - {{name: codex-b, protocol: openai-responses, base_url: '{{b}}/v1', api_key: '{KEY_B}', websocket: {{b_ws}}}}
routes: {{codex: [codex-a, codex-b]}}
"""
TOOL = ("shell", {"command": ["echo", "hello"]})


def sent(mock):
    """Each turn's body as `mock` received it: WebSocket frames and POST bodies, in order."""
    return [r.json for r in mock.requests if r.protocol]


def codex_run(proxy, tmp_path, prompt):
    env = {**client_env(proxy, tmp_path / "home"), "CODEX_API_KEY": CLIENT_KEY}
    done, _ = run([str(CODEX), "exec", "--skip-git-repo-check", "-c", "analytics.enabled=false", prompt],
                  env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def ledger(proxy):
    return sqlite3.connect(proxy.usage_db).execute(
        "SELECT endpoint, status, upstream, attempts FROM requests ORDER BY id").fetchall()


def write_rules(tmp_path, a, b, a_ws, b_ws):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("{a}", a.base_url).replace("{b}", b.base_url)
                     .replace("{a_ws}", str(a_ws).lower()).replace("{b_ws}", str(b_ws).lower()))
    return rules


def test_a_websocket_upstream_continues_its_own_response_with_only_the_new_items(tmp_path):
    with MockUpstream("A") as a, MockUpstream("B") as b:
        a.script(ok(tool=TOOL), ok())                   # turn 1: a tool call Codex runs; turn 2: text
        with Proxy(write_rules(tmp_path, a, b, True, False), tmp_path,
                   extra_args=("--set", "ccswitch_offline=true")) as proxy:
            done = codex_run(proxy, tmp_path, "run echo hello")
            assert "Hello from mock A" in done.stdout
            wait_rows(proxy, 2)
            log = proxy.log()
        assert KEY_A not in log and KEY_B not in log and CLIENT_KEY not in log
        first, second = a.frames()
        assert first.socket == second.socket, "turn 2 did not reach the socket that answered turn 1"
        assert all(r.method in ("GET", "WS") for r in a.requests) and b.requests == []
        upgrade = next(r for r in a.requests if r.method == "GET")
        assert upgrade.headers["authorization"] == f"Bearer {KEY_A}" and CLIENT_KEY not in str(upgrade.headers)
        assert "previous_response_id" not in first.json
        # the mock accepted the id (it answers one its connection did not issue with an error)
        assert second.json["previous_response_id"].startswith("resp_")
        kinds = [item.get("type") for item in second.json["input"]]
        assert kinds == ["function_call_output"], kinds        # only the new item, not the history
        assert len(first.json["input"]) >= 1 and all(item not in second.json["input"] for item in first.json["input"])
        assert ledger(proxy) == [("websocket", 200, "codex-a", 1), ("websocket", 200, "codex-a", 1)]


@pytest.mark.parametrize("websocket_first", [True, False], ids=["websocket-to-https", "https-to-websocket"])
def test_a_failover_between_websocket_and_https_upstreams_sends_the_full_input(tmp_path, websocket_first):
    with MockUpstream("A") as a, MockUpstream("B") as b:
        a.script(ok(tool=TOOL), status(503))            # turn 2: a fails before any event
        rules = write_rules(tmp_path, a, b, websocket_first, not websocket_first)
        with Proxy(rules, tmp_path, extra_args=("--set", "ccswitch_offline=true")) as proxy:
            done = codex_run(proxy, tmp_path, "run echo hello")
            assert "Hello from mock B" in done.stdout
            wait_rows(proxy, 2)
        first, failed = sent(a)
        (second,) = sent(b)
        assert bool(a.frames()) is websocket_first and bool(b.frames()) is not websocket_first
        # b got turn 1's input, its tool call and the tool's output: everything, and no id of a's
        kinds = [item.get("type") for item in second["input"]]
        assert "function_call" in kinds and "function_call_output" in kinds
        assert second["input"][: len(first["input"])] == first["input"]
        assert "previous_response_id" not in second and "generate" not in second
        if websocket_first:       # a's socket had issued turn 1's response: turn 2 went to it incrementally
            assert failed["previous_response_id"] and [i.get("type") for i in failed["input"]] == ["function_call_output"]
        else:
            assert "previous_response_id" not in failed and second["type"] == "response.create"
        assert ledger(proxy) == [("websocket", 200, "codex-a", 1), ("websocket", 200, "codex-b", 2)]
