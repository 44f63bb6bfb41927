"""The real Claude Code with a wrong client key prints the 401 at once instead of retrying for
minutes: ccswitch's own answers carry `x-should-retry`."""

import time

import pytest

from tests.e2e.test_cli_clients import CLAUDE, client_env, run
from tests.support.helpers import CLIENT_KEY, KEY_A
from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import Proxy

pytestmark = pytest.mark.skipif(not CLAUDE.exists(), reason="run `npm ci --prefix tests/clients` to install the real CLIs")


def test_claude_code_with_a_wrong_client_key_fails_fast_with_the_message(tmp_path):
    with MockUpstream("A") as a:
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: claude-a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [claude-a]}}
""")
        with Proxy(rules, tmp_path, extra_args=("--set", "ccswitch_offline=true")) as proxy:
            env = {**client_env(proxy, tmp_path / "home"), "ANTHROPIC_API_KEY": "ccsw-WRONG-key-0000000000"}
            began = time.monotonic()
            done, _ = run([str(CLAUDE), "-p", "say hi"], env, tmp_path)
            took = time.monotonic() - began
    assert done.returncode != 0
    assert "missing or invalid ccswitch client key" in done.stdout + done.stderr
    assert took < 30, f"Claude Code took {took:.0f} s to give up"          # it used to retry for ~3 minutes
    assert not [r for r in a.requests if r.protocol]
