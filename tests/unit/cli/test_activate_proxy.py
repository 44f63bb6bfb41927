"""`ccswitch activate` reaches the upstream through its proxy, and names the proxy without its
credentials."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.mock_upstream import MockUpstream
from tests.support.tunnel_proxies import ConnectProxy

PASSWORD = "cli-proxy-secret"


def test_activate_goes_through_the_upstream_proxy(tmp_path):
    with MockUpstream("relay") as mock, ConnectProxy(auth=("me", PASSWORD)) as proxy:
        path = tmp_path / "rules.yaml"
        path.write_text(f"""
usage_db: usage.db
upstream_proxy: '{proxy.url("me", "${PROXY_PASS}")}'
upstreams:
  - {{name: relay, protocol: anthropic, base_url: '{mock.base_url}', api_key: 'sk-relay-000000000'}}
""")
        cli = Path(sys.executable).with_name("ccswitch")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROXY_PASS": PASSWORD}
        done = subprocess.run([str(cli), "activate", "relay", "--rules", str(path)], capture_output=True, text=True,
                              env=env)
        wrong = subprocess.run([str(cli), "activate", "relay", "--rules", str(path)], capture_output=True, text=True,
                               env={**env, "PROXY_PASS": "not-it"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("relay: activation ok (status 200") and \
        f"through http://127.0.0.1:{proxy.port})" in done.stdout
    assert proxy.tunnels == 1 and proxy.targets == [("127.0.0.1", mock.port)] and len(mock.requests) == 1
    assert wrong.returncode == 1 and f"proxy http://127.0.0.1:{proxy.port}: authentication failed" in wrong.stdout
    assert "status None" not in wrong.stdout                                       # no answer came: no status
    assert wrong.stdout.count(f"127.0.0.1:{proxy.port}") == 1                       # its error named the proxy
    for output in (done.stdout, done.stderr, wrong.stdout, wrong.stderr):
        assert PASSWORD not in output and "not-it" not in output
