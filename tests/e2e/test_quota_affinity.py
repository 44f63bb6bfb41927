"""End to end: strategies, rate-limit headers, ccswitch's own 429 and session affinity through a
real mitmdump, with the official SDKs, the real Claude Code and Codex CLI as clients."""

import time

import anthropic
import openai
import pytest

from tests.e2e.test_cli_clients import CLAUDE, CODEX, client_env, run
from tests.e2e.test_failover import ledger, wait_rows
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, ok, status
from tests.support.proxy_process import Proxy

RULES = """
client_keys: ["{client}"]
failover: {{threshold: 3, cooldown: 10m, hold_back: 2s, drain_at: 0.95}}
upstreams:
  - {{name: claude-a, protocol: anthropic, base_url: '{a}', api_key: '{key_a}'}}
  - {{name: claude-b, protocol: anthropic, base_url: '{b}', api_key: '{key_b}'}}
  - {{name: codex-a, protocol: openai-responses, base_url: '{a}/v1', api_key: '{key_a}'}}
  - {{name: codex-b, protocol: openai-responses, base_url: '{b}/v1', api_key: '{key_b}'}}
  - {{name: chat-a, protocol: openai-chat, base_url: '{a}/v1', api_key: '{key_a}'}}
  - {{name: chat-b, protocol: openai-chat, base_url: '{b}/v1', api_key: '{key_b}'}}
routes:
  claude: [claude-a, claude-b]
  codex: {{upstreams: [codex-a, codex-b], sticky: 1h}}
  chat: {{upstreams: [chat-a, chat-b], strategy: quota, sticky: 1h}}
"""
CLI_MISSING = not (CLAUDE.exists() and CODEX.exists())


def start(tmp, a, b, **kw) -> Proxy:
    rules = tmp / "rules.yaml"
    rules.write_text(RULES.format(a=a.base_url, b=b.base_url, key_a=KEY_A, key_b=KEY_B, client=CLIENT_KEY))
    return Proxy(rules, tmp, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("affinity")
    with MockUpstream("A") as a, MockUpstream("B") as b:
        with start(tmp, a, b, extra_args=("--set", "ccswitch_offline=true")) as proxy:
            yield proxy, a, b, tmp


@pytest.fixture(autouse=True)
def clean(request):
    if "world" in request.fixturenames:
        _, a, b, _ = request.getfixturevalue("world")
        a.clear(), b.clear()
        a.default = b.default = ok()


def served_by(proxy, session):
    return [row for row in ledger(proxy, "SELECT upstream, affinity FROM requests WHERE session = ? ORDER BY id", session)]


def test_anthropic_sdk_session_stays_on_its_upstream_while_the_preferred_one_is_back(world):
    proxy, a, b, _ = world
    client = anthropic.Anthropic(api_key=CLIENT_KEY, base_url=proxy.reverse_url, max_retries=0)

    def ask(session):
        raw = client.messages.with_raw_response.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-claude-code-session-id": session})
        return raw.headers["x-ccswitch-upstream"]

    a.script(status(503))                       # a fails once (threshold 3: it stays available)
    assert ask("sdk-s1") == "claude-b"          # failed over: the session is bound to b
    assert [ask("sdk-s1") for _ in range(3)] == ["claude-b"] * 3   # a is fine again, the session stays
    assert ask("sdk-s2") == "claude-a"          # another session takes the route order
    wait_rows(proxy, 5, "SELECT count(*) FROM requests WHERE session LIKE 'sdk-s%'")
    assert served_by(proxy, "sdk-s1") == [("claude-b", "new")] + [("claude-b", "kept")] * 3
    assert served_by(proxy, "sdk-s2") == [("claude-a", "new")]


def test_openai_sdk_quota_strategy_prefers_the_least_used_and_moves_a_session_off_a_full_upstream(world):
    proxy, a, b, _ = world
    client = openai.OpenAI(api_key=CLIENT_KEY, base_url=proxy.reverse_url + "/v1", max_retries=0)

    def used(fraction):
        return {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": str(round(100 * (1 - fraction))),
                "x-ratelimit-reset-requests": "30m0s"}

    a.default, b.default = ok(headers=used(0.6)), ok(headers=used(0.2))

    def ask(key=None):
        extra = {"prompt_cache_key": key} if key else {}
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-x", messages=[{"role": "user", "content": "hi"}], extra_body=extra)
        return raw.headers["x-ccswitch-upstream"]

    assert ask() == "chat-a"                    # nothing known yet: route order
    assert ask() == "chat-b"                    # a reported 0.6, b unknown (0)
    assert ask("pck-1") == "chat-b"             # b reported 0.2: least used; the session binds there
    b.default = ok(headers=used(0.97))          # b's next answer says it is full
    assert ask("pck-1") == "chat-b"             # (that answer)
    assert ask("pck-1") == "chat-a"             # full: skipped, the session moves
    wait_rows(proxy, 3, "SELECT count(*) FROM requests WHERE session = 'pck-1'")
    assert [aff for _, aff in served_by(proxy, "pck-1")] == ["new", "kept", "moved"]


def test_every_upstream_rate_limited_gets_ccswitchs_own_429_without_calling_them(tmp_path):
    now = time.time()

    def rejected(reset_in):
        return status(429, headers={"anthropic-ratelimit-unified-status": "rejected",
                                    "anthropic-ratelimit-unified-5h-status": "rejected",
                                    "anthropic-ratelimit-unified-5h-utilization": "1.0",
                                    "anthropic-ratelimit-unified-5h-reset": str(int(now + reset_in)),
                                    "anthropic-ratelimit-unified-7d-utilization": "0.5",
                                    "anthropic-ratelimit-unified-7d-reset": str(int(now + 6 * 86400)),
                                    "anthropic-ratelimit-unified-reset": str(int(now + reset_in))})

    with MockUpstream("A") as a, MockUpstream("B") as b, start(tmp_path, a, b) as proxy:
        client = anthropic.Anthropic(api_key=CLIENT_KEY, base_url=proxy.reverse_url, max_retries=0)
        a.script(rejected(300))
        b.script(rejected(90))
        with pytest.raises(anthropic.RateLimitError):      # both tried: the last one's own 429
            client.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        calls = len(a.requests) + len(b.requests)
        with pytest.raises(anthropic.RateLimitError) as err:
            client.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        headers = err.value.response.headers
        assert len(a.requests) + len(b.requests) == calls        # no upstream was called
        assert 80 <= int(headers["retry-after"]) <= 91           # b's 5h reset, not the 7-day one
        assert headers["anthropic-ratelimit-unified-status"] == "rejected"
        assert abs(int(headers["anthropic-ratelimit-unified-reset"]) - (now + 90)) <= 3
        assert "full until" in err.value.message or "cooling" in err.value.message


@pytest.mark.skipif(CLI_MISSING, reason="run `npm ci --prefix tests/clients` to install the real CLIs")
def test_claude_code_runs_share_nothing_and_a_run_stays_on_its_upstream(world):
    proxy, a, b, tmp = world
    a.script(status(503))                                  # the first run's first request fails over to b
    b.script(ok(tool=("Glob", {"pattern": "*.txt"})))      # ... whose answer makes Claude Code ask again

    def claude(home):
        env = {**client_env(proxy, tmp / home), "ANTHROPIC_API_KEY": CLIENT_KEY}
        return run([str(CLAUDE), "-p", "list the txt files"], env, tmp / home)

    first, _ = claude("cc-1")
    assert first.returncode == 0, first.stderr
    sessions_b = {r.headers.get("x-claude-code-session-id") for r in b.requests if r.protocol}
    assert len(sessions_b) == 1 and len([r for r in b.requests if r.protocol]) == 2   # both turns on b
    before = len(a.requests)                               # a's one 503, to the first run
    second, _ = claude("cc-2")
    assert second.returncode == 0, second.stderr
    sessions_a = {r.headers.get("x-claude-code-session-id") for r in a.requests[before:] if r.protocol}
    assert sessions_a and sessions_a.isdisjoint(sessions_b)     # the new run: its own session, route order
    (session,) = sessions_b
    wait_rows(proxy, 2, f"SELECT count(*) FROM requests WHERE session = '{session}'")
    assert served_by(proxy, session) == [("claude-b", "new"), ("claude-b", "kept")]


@pytest.mark.skipif(CLI_MISSING, reason="run `npm ci --prefix tests/clients` to install the real CLIs")
def test_codex_cli_session_id_binds_its_run(world):
    proxy, a, b, tmp = world
    a.script(status(503))
    env = {**client_env(proxy, tmp / "codex-1"), "CODEX_API_KEY": CLIENT_KEY}
    done, _ = run([str(CODEX), "exec", "--skip-git-repo-check", "-c", "analytics.enabled=false", "say hi"],
                  env, tmp / "codex-1")
    assert done.returncode == 0, done.stderr
    routed = [r for r in b.requests if r.protocol]
    assert routed and {r.headers.get("session-id") for r in routed} != {None}
    (session,) = {r.headers["session-id"] for r in routed}
    wait_rows(proxy, 1, f"SELECT count(*) FROM requests WHERE session = '{session}'")
    assert served_by(proxy, session)[0] == ("codex-b", "new")
