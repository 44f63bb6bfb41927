"""End to end with the real clients: Claude Code (`claude -p`) and Codex CLI
(`codex exec`) through HTTPS_PROXY -> mitmdump + ccswitch -> loopback mocks."""

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from ccswitch.cli.env import write_ca_bundle
from tests.support import TESTS
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, status
from tests.support.proxy_process import Proxy

BIN = TESTS / "clients" / "node_modules" / ".bin"
CLAUDE, CODEX = BIN / "claude", BIN / "codex"

pytestmark = pytest.mark.skipif(not (CLAUDE.exists() and CODEX.exists()),
                                reason="run `npm ci --prefix tests/clients` to install the real CLIs")

RULES = """
upstreams:
  - {{name: claude-a, protocol: anthropic, base_url: '{a}', api_key: '{key_a}'}}
  - {{name: claude-b, protocol: anthropic, base_url: '{b}', api_key: '{key_b}'}}
  - {{name: codex-a, protocol: openai-responses, base_url: '{a}/v1', api_key: '{key_a}'}}
  - {{name: codex-b, protocol: openai-responses, base_url: '{b}/v1', api_key: '{key_b}'}}
routes:
  claude: [claude-a, claude-b]
  codex: [codex-a, codex-b]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp / "rules.yaml"
        rules.write_text(RULES.format(a=a.base_url, b=b.base_url, key_a=KEY_A, key_b=KEY_B))
        with Proxy(rules, tmp, extra_args=("--set", "ccswitch_offline=true")) as proxy:
            yield proxy, a, b, tmp
            assert KEY_A not in proxy.log() and KEY_B not in proxy.log() and CLIENT_KEY not in proxy.log()


@pytest.fixture(autouse=True)
def clean(world):
    world[1].clear(), world[2].clear()


def client_env(proxy: Proxy, home: Path) -> dict:
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    bundle = write_ca_bundle(proxy.confdir, home)
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TERM", "TMPDIR")}
    return {**keep, "HOME": str(home), "CODEX_HOME": str(home / ".codex"),
            "HTTPS_PROXY": proxy.proxy_url, "NO_PROXY": "localhost,127.0.0.1",
            "NODE_EXTRA_CA_CERTS": str(proxy.ca_cert), "SSL_CERT_FILE": str(bundle),
            "CODEX_CA_CERTIFICATE": str(bundle), "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}


def run(cmd: list, env: dict, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.time()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL)
    return done, start


def assert_only_upstream_key(mock: MockUpstream, key: str) -> None:
    routed = [r for r in mock.requests if r.protocol]
    assert routed, "the upstream saw no request"
    for r in routed:
        assert r.headers.get("x-api-key") == key or r.headers.get("authorization") == f"Bearer {key}"
        assert CLIENT_KEY not in json.dumps(r.headers) and CLIENT_KEY not in r.body.decode(errors="replace")


def claude(world, name: str):
    proxy, _, _, tmp = world
    env = {**client_env(proxy, tmp / name), "ANTHROPIC_API_KEY": CLIENT_KEY}
    return run([str(CLAUDE), "-p", "say hi"], env, tmp / name)


def codex(world, name: str):
    proxy, _, _, tmp = world
    env = {**client_env(proxy, tmp / name), "CODEX_API_KEY": CLIENT_KEY}
    cmd = [str(CODEX), "exec", "--skip-git-repo-check", "-c", "analytics.enabled=false", "say hi"]
    return run(cmd, env, tmp / name)


def test_claude_code_through_https_proxy(world):
    _, a, b, _ = world
    done, _ = claude(world, "claude-home")
    assert done.returncode == 0, done.stderr
    assert "Hello from mock A" in done.stdout
    assert_only_upstream_key(a, KEY_A)
    assert not any(r.protocol for r in b.requests)


def first_client_connect(log: str, day_of: float) -> float:
    """When the first client connected, from mitmproxy's log (its local time of day)."""
    m = re.search(r"^\[(\d\d:\d\d:\d\d\.\d+)\]\[[^\]]*\] client connect", log, re.M)
    assert m, f"no client connected:\n{log[-3000:]}"
    day = datetime.fromtimestamp(day_of).date()
    return datetime.combine(day, datetime.strptime(m.group(1), "%H:%M:%S.%f").time()).timestamp()


def test_codex_exec_through_https_proxy_reaches_upstream_within_3s(world):
    """Timed from Codex's first connection to the proxy: Codex's own start-up before it (seconds
    on a busy machine) is not ccswitch's; a WebSocket wait or a fallback would be."""
    proxy, a, _, _ = world
    seen = len(proxy.log())
    done, start = codex(world, "codex-home")
    assert done.returncode == 0, done.stderr
    assert "Hello from mock A" in done.stdout
    first = min(r.time for r in a.requests if r.protocol == "responses")
    log = proxy.log()[seen:]
    contact = first_client_connect(log, start)
    # what the proxy and Codex said meanwhile: a slow start shows where the time went
    assert first - contact < 3.0, (f"codex needed {first - contact:.1f}s from its first connection to reach the "
                                   f"upstream\nproxy log:\n{log[-6000:]}\ncodex stderr:\n{done.stderr[-3000:]}")
    assert_only_upstream_key(a, KEY_A)


def test_claude_code_prints_the_backups_answer_when_the_first_is_overloaded(world):
    _, a, b, _ = world
    a.default = status(529)
    try:
        done, _ = claude(world, "claude-failover")
    finally:
        a.default = type(a.default)()
    assert done.returncode == 0, done.stderr
    assert "Hello from mock B" in done.stdout
    assert_only_upstream_key(b, KEY_B)


def test_codex_prints_the_backups_answer_when_the_first_refuses(world, tmp_path):
    proxy, a, b, tmp = world
    dead = f"http://127.0.0.1:{MockUpstream.closed_port()}"
    rules = proxy.rules_path.read_text()
    proxy.rules_path.write_text(rules.replace(f"'{a.base_url}/v1'", f"'{dead}/v1'"))
    try:
        time.sleep(2.5)  # hot reload picks the edit up within a few seconds
        done, _ = codex(world, "codex-failover")
    finally:
        proxy.rules_path.write_text(rules)
        time.sleep(2.5)
    assert done.returncode == 0, done.stderr
    assert "Hello from mock B" in done.stdout
    assert_only_upstream_key(b, KEY_B)


def test_ledger_rows_after_real_cli_runs(world):
    import sqlite3
    proxy = world[0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = sqlite3.connect(proxy.usage_db).execute(
            "SELECT route, upstream, status, attempts, output_tokens FROM requests").fetchall()
        if {"claude", "codex"} <= {r[0] for r in rows}:
            break
        time.sleep(0.1)
    assert {("claude", "claude-a"), ("claude", "claude-b"), ("codex", "codex-a"), ("codex", "codex-b")} <= \
        {(r[0], r[1]) for r in rows}
    assert all(r[2] == 200 and r[4] > 0 for r in rows if r[1])
    assert any(r[3] == 2 for r in rows if r[1] == "claude-b")      # the failover run
