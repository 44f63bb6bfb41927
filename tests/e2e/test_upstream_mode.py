"""End to end: mitmproxy's upstream mode (`--mode upstream:http://proxy`) beside ccswitch.  What
ccswitch does not route passes through that proxy as opaque TLS (only the `intercept` hosts are
decrypted, as in regular mode), what it routes goes through the rules' `upstream_proxy`, and
rules without one get a warning at the start: those requests went direct, past the proxy,
without a word."""

from __future__ import annotations

import http.server
import ssl
import threading

import httpx

from tests.e2e.test_reaching import HEADERS
from tests.support.helpers import KEY_A, localhost_tls_server_context
from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import Proxy, free_port
from tests.support.tunnel_proxies import ConnectProxy


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


def tls_site(tmp_path):
    """A site on https://localhost:PORT with its own certificate: (server, port, its certificate)."""
    context, cert = localhost_tls_server_context(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1], cert


def rules_text(upstream: MockUpstream, upstream_proxy: str | None) -> str:
    head = f"upstream_proxy: '{upstream_proxy}'\n" if upstream_proxy else ""
    return (f"{head}intercept: [api.anthropic.com]\nupstreams:\n"
            f"  - {{name: a, protocol: anthropic, base_url: '{upstream.base_url}', api_key: '{KEY_A}'}}\n"
            "routes: {claude: [a]}\n")


def test_upstream_mode_passes_other_hosts_through_its_proxy_and_routed_requests_through_the_rules_one(tmp_path):
    server, site_port, site_cert = tls_site(tmp_path)
    listen = free_port()
    try:
        with MockUpstream("A") as a, ConnectProxy() as corp:
            rules = tmp_path / "rules.yaml"
            rules.write_text(rules_text(a, f"http://127.0.0.1:{corp.port}"))
            mode = ("--mode", f"upstream:http://127.0.0.1:{corp.port}@{listen}")
            with Proxy(rules, tmp_path, extra_args=mode) as proxy:
                through = f"http://127.0.0.1:{listen}"
                # not an intercept host: the site's own certificate, through the corporate proxy
                with httpx.Client(proxy=through, verify=ssl.create_default_context(cafile=site_cert),
                                  timeout=20) as client:
                    assert client.get(f"https://localhost:{site_port}/").text == "hello"
                with httpx.Client(proxy=through, verify=ssl.create_default_context(cafile=proxy.ca_cert), timeout=20) as client:
                    routed = client.post("https://api.anthropic.com/v1/messages", headers=HEADERS, json={
                        "model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
                    # a stream goes on to ccswitch's relay on this machine: straight, not through
                    # the mode's proxy (which refused the hop, or carried the prompt in plain HTTP)
                    streamed = client.post("https://api.anthropic.com/v1/messages", headers=HEADERS, json={
                        "model": "claude-x", "max_tokens": 5, "stream": True,
                        "messages": [{"role": "user", "content": "hi"}]})
                log = proxy.log()
        assert routed.status_code == 200 and routed.headers["x-ccswitch-upstream"] == "a"
        assert streamed.status_code == 200 and "message_stop" in streamed.text, streamed.text[:500]
        assert streamed.headers["x-ccswitch-upstream"] == "a"
        assert ("localhost", site_port) in corp.targets and ("127.0.0.1", a.port) in corp.targets
        assert set(corp.targets) == {("localhost", site_port), ("127.0.0.1", a.port)}, corp.targets
        assert "carries only what ccswitch does not route" not in log
    finally:
        server.shutdown()


def test_upstream_mode_without_an_upstream_proxy_in_the_rules_is_told_at_the_start(tmp_path):
    listen = free_port()
    with MockUpstream("A") as a, ConnectProxy() as corp:
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(a, None))
        with Proxy(rules, tmp_path, extra_args=("--mode", f"upstream:http://127.0.0.1:{corp.port}@{listen}")) as proxy:
            log = proxy.log()
    assert (f"the upstream mode's proxy (http://127.0.0.1:{corp.port}) carries only what ccswitch does not "
            "route") in log
    assert f"Write `upstream_proxy: http://127.0.0.1:{corp.port}`" in log
