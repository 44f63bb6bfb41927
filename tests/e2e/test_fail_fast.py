"""The real Claude Code with a wrong client key prints the 401 at once instead of retrying for
minutes: ccswitch's own answers carry `x-should-retry`."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from ccswitch.wire.redact import NO_CLIENT_KEY
from tests.e2e.test_cli_clients import CLAUDE, CODEX, client_env, run
from tests.support.helpers import CLIENT_KEY, KEY_A, zone_at_noon
from tests.support.mock_upstream import MockUpstream, status
from tests.support.proxy_process import Proxy

pytestmark = pytest.mark.skipif(not CLAUDE.exists(), reason="run `npm ci --prefix tests/clients` to install the real CLIs")


def claude_through(rules, tmp_path, key: str):
    """`claude -p` through ccswitch on `rules`, presenting `key`: how it ended, and how long it took."""
    with Proxy(rules, tmp_path, extra_args=("--set", "ccswitch_offline=true")) as proxy:
        env = {**client_env(proxy, tmp_path / "home"), "ANTHROPIC_API_KEY": key}
        began = time.monotonic()
        done, _ = run([str(CLAUDE), "-p", "say hi"], env, tmp_path)
        return done, time.monotonic() - began


def test_claude_code_with_a_wrong_client_key_fails_fast_with_the_message(tmp_path):
    with MockUpstream("A") as a:
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: claude-a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [claude-a]}}
""")
        done, took = claude_through(rules, tmp_path, "ccsw-WRONG-key-0000000000")
    assert done.returncode != 0
    assert NO_CLIENT_KEY in done.stdout + done.stderr     # how to mend it too, as Claude Code shows it
    assert took < 30, f"Claude Code took {took:.0f} s to give up"          # it used to retry for ~3 minutes
    assert not [r for r in a.requests if r.protocol]


def test_claude_code_says_at_once_when_every_upstream_refuses_the_rules_keys(tmp_path):
    """An upstream's 401 to the key of the rules is passed on (its status and body) with
    `x-should-retry: false`: Claude Code retried it for minutes, saying nothing."""
    refused = status(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
    with MockUpstream("A") as a, MockUpstream("B") as b:
        a.script(*[refused] * 20)
        b.script(*[refused] * 20)
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
upstreams:
  - {{name: claude-a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}'}}
  - {{name: claude-b, protocol: anthropic, base_url: '{b.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [claude-a, claude-b]}}
""")
        done, took = claude_through(rules, tmp_path, CLIENT_KEY)
    assert done.returncode != 0
    assert took < 30, f"Claude Code took {took:.0f} s to give up"
    assert len([r for r in b.requests if r.protocol]) <= 2      # not one try after another


def test_claude_code_says_at_once_when_no_upstream_serves_its_model(tmp_path):
    """ccswitch's own 503 for a route no upstream of which serves the model (nor ever will by
    itself) says so at once: it used to say `retry-after: 30`, and Claude Code waited minutes."""
    with MockUpstream("A") as a:
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
upstreams:
  - {{name: claude-a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}', only_models: [nothing-*]}}
routes: {{claude: [claude-a]}}
""")
        done, took = claude_through(rules, tmp_path, CLIENT_KEY)
    assert done.returncode != 0
    assert "claude-a is not serving model" in done.stdout + done.stderr
    assert took < 30, f"Claude Code took {took:.0f} s to give up"
    assert not [r for r in a.requests if r.protocol]


def test_claude_code_offline_with_an_empty_route_says_so_instead_of_blaming_its_model(tmp_path):
    """Offline, a request of a route that lists no upstream was answered 404, which Claude Code
    reads as a model the account lacks ("There's an issue with the selected model")."""
    with MockUpstream("A") as a:
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
upstreams:
  - {{name: codex-a, protocol: openai-responses, base_url: '{a.base_url}/v1', api_key: '{KEY_A}'}}
routes: {{claude: [], codex: [codex-a]}}
""")
        done, took = claude_through(rules, tmp_path, CLIENT_KEY)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "selected model" not in said
    assert "ccswitch is offline" in said and "the claude route lists no upstream" in said
    assert took < 30, f"Claude Code took {took:.0f} s to give up"


def codex_through(rules, tmp_path, runs: int = 1):
    """`codex exec` through ccswitch's HTTPS_PROXY on `rules` (its WebSocket bridged), `runs` times
    in a row: how the last one ended, and how long it took."""
    with Proxy(rules, tmp_path, extra_args=("--set", "ccswitch_offline=true")) as proxy:
        env = {**client_env(proxy, tmp_path / "home"), "CODEX_API_KEY": CLIENT_KEY}
        cmd = [str(CODEX), "exec", "--skip-git-repo-check", "-c", "analytics.enabled=false", "-m", "gpt-5", "say hi"]
        for _ in range(runs):
            began = time.monotonic()
            done, _ = run(cmd, env, tmp_path)
        return done, time.monotonic() - began


def test_codex_over_its_client_key_s_budget_says_so_at_once_instead_of_waiting_until_tomorrow(tmp_path):
    """Codex waits out any `retry-after` (here the hours until the budget's next day) and reads no
    `x-should-retry`: it is told the `usage_limit_reached` it stops on, with when to try again.
    The budget's day in a zone where it is noon: in its last minute the plain 429 is the answer."""
    with MockUpstream("A") as a:
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
timezone: {zone_at_noon()}
client_keys: [{{name: alice, key: "{CLIENT_KEY}", budget: {{daily: 0.00001}}}}]
upstreams:
  - {{name: codex-a, protocol: openai-responses, base_url: '{a.base_url}/v1', api_key: '{KEY_A}'}}
routes: {{codex: [codex-a]}}
""")
        done, took = codex_through(rules, tmp_path, runs=2)     # the first run spends the day's budget
    assert done.returncode != 0
    assert "usage limit" in done.stdout + done.stderr and "Try again at" in done.stdout + done.stderr
    assert took < 30, f"Codex took {took:.0f} s to give up"
    assert len([r for r in a.requests if r.protocol]) == 1


def test_codex_on_a_route_closed_for_hours_gives_up_with_the_message_instead_of_waiting(tmp_path):
    """A 503 whose `retry-after` is hours away: Codex would wait them out, so it gets none and
    gives up after its own retries, showing why."""
    with MockUpstream("A") as a:
        rules = tmp_path / "rules.yaml"
        closed = (datetime.now(UTC) + timedelta(hours=6)).strftime("%H:00")
        opens = (datetime.now(UTC) + timedelta(hours=7)).strftime("%H:00")
        rules.write_text(f"""
timezone: UTC
upstreams:
  - {{name: codex-a, protocol: openai-responses, base_url: '{a.base_url}/v1', api_key: '{KEY_A}',
      hours: ["{closed}-{opens}"]}}
routes: {{codex: [codex-a]}}
""")
        done, took = codex_through(rules, tmp_path)
    assert done.returncode != 0
    assert "codex-a is outside its hours" in done.stdout + done.stderr
    assert took < 75, f"Codex took {took:.0f} s to give up"
    assert not [r for r in a.requests if r.protocol]
