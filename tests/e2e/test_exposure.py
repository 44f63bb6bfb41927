"""Listening beyond loopback through the real proxy: nothing passes without authentication;
and no start leaves ccswitch out, which would pass requests on unrouted.

The proxy listens on 0.0.0.0 here, but the tests only ever connect through 127.0.0.1 (a
listener others could reach is what makes the checks apply; peers from elsewhere are
simulated in test_safety.py)."""

import base64
import contextlib
import re
import time

import httpx
import pytest
from mitmproxy import io

from ccswitch.wire.redact import NO_CLIENT_KEY
from tests.support.helpers import CLIENT_KEY, KEY_A
from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import Proxy, free_port

GOOD = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def rules_text(base_url: str, keys: bool = True) -> str:
    head = f'client_keys: ["{CLIENT_KEY}"]\n' if keys else ""
    return head + f"""upstreams:
  - {{name: a, protocol: anthropic, base_url: '{base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
"""


def refusal(tmp_path, rules: str, *mode_args: str) -> str:
    """The log of a proxy that must refuse to start."""
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    proxy = Proxy(path, tmp_path, extra_args=mode_args)
    try:
        with pytest.raises(RuntimeError, match="mitmdump exited"):
            proxy.start()
    finally:
        proxy.stop()
    return proxy.log()


def test_a_regular_listener_beyond_loopback_without_proxyauth_refuses_to_start_saying_how(tmp_path):
    log = refusal(tmp_path, rules_text("http://127.0.0.1:9"), "--mode", f"regular@0.0.0.0:{free_port()}")
    assert log.count("ccswitch refuses to listen beyond loopback") == 1
    assert "--proxyauth USER:PASS" in log and "HTTPS_PROXY=http://USER:PASS@" in log


def test_a_reverse_listener_beyond_loopback_without_client_keys_refuses_once(tmp_path):
    port = free_port()
    log = refusal(tmp_path, rules_text("http://127.0.0.1:9", keys=False),
                  "--mode", f"reverse:http://127.0.0.1:9@0.0.0.0:{port}")
    assert log.count("ccswitch refuses to listen beyond loopback") == 1, log[-2000:]
    assert "needs client_keys" in log and "recursion" not in log
    assert len(log.splitlines()) < 40


def wait_for(proxy: Proxy, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in proxy.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{proxy.log()[-3000:]}"
        time.sleep(0.05)


def test_a_reverse_listener_beyond_loopback_asks_every_request_for_a_client_key(tmp_path):
    port = free_port()
    with MockUpstream("target") as target:
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(target.base_url))
        with Proxy(rules, tmp_path, extra_args=("--mode", f"reverse:{target.base_url}@0.0.0.0:{port}")) as proxy:
            assert re.search(rf"listening at \*:{port}\b|listening at 0\.0\.0\.0:{port}\b", proxy.log())
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(timeout=30, trust_env=False) as client:
                keyless = client.get(url + "/admin/secret")
                assert keyless.status_code == 401
                assert keyless.json()["error"]["message"] == NO_CLIENT_KEY
                wrong = client.get(url + "/admin/secret", headers={"authorization": "Bearer sk-guess"})
                assert wrong.status_code == 401 and target.paths() == []   # nothing reached the target
                routed = client.post(url + "/v1/messages", json=GOOD)
                assert routed.status_code == 401 and routed.json()["type"] == "error"

                keyed = client.get(url + "/admin/secret", headers={"x-api-key": CLIENT_KEY, "x-trace": "t1"})
                assert keyed.status_code == 404 and target.paths() == ["/admin/secret"]  # the target's answer
                seen = target.last().headers
                assert seen["x-trace"] == "t1" and "x-api-key" not in seen and CLIENT_KEY not in str(seen)
                target.clear()
                routed = client.post(url + "/v1/messages", json=GOOD, headers={"x-api-key": CLIENT_KEY})
                assert routed.status_code == 200 and target.last().headers["x-api-key"] == KEY_A

                # a reload that drops client_keys would open the listener: refused, keys still asked for
                rules.write_text(rules_text(target.base_url, keys=False))
                wait_for(proxy, "rules edit refused")
                assert client.get(url + "/admin/secret").status_code == 401
            assert "needs client_keys" in proxy.log() and CLIENT_KEY not in proxy.log()


def behind_proxyauth(tmp_path, site: MockUpstream, port: int) -> Proxy:
    """A regular listener beyond loopback asking for `user:secret-pass`, its flows saved (-w)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text(site.base_url))
    args = ("--mode", f"regular@0.0.0.0:{port}", "--proxyauth", "user:secret-pass",
            "-w", str(tmp_path / "flows.mitm"))
    return Proxy(rules, tmp_path, extra_args=args)


def assert_login_hidden(saved) -> None:
    """The login mitmproxy keeps on each flow is there, its password hidden."""
    with saved.open("rb") as f:
        logins = [tuple(flow.metadata.get("proxyauth") or ()) for flow in io.FlowReader(f).stream()]
    saved_bytes = saved.read_bytes()
    assert ("user", "<redacted>") in logins and b"secret-pass" not in saved_bytes
    assert b"wrong-pass" not in saved_bytes and base64.b64encode(b"user:wrong-pass") not in saved_bytes


def test_a_regular_listener_beyond_loopback_with_proxyauth_asks_for_it(tmp_path):
    port = free_port()
    with MockUpstream("site") as site:
        with behind_proxyauth(tmp_path, site, port):
            anonymous = f"http://127.0.0.1:{port}"
            with httpx.Client(proxy=anonymous, timeout=30, trust_env=False) as client:
                assert client.get(site.base_url + "/internal/admin").status_code == 407
                assert client.post(site.base_url + "/v1/messages", json=GOOD,
                                   headers={"x-api-key": CLIENT_KEY}).status_code == 407
            with httpx.Client(proxy=f"http://user:wrong-pass@127.0.0.1:{port}", timeout=30,
                              trust_env=False) as client:     # a mistyped login is not kept on its 407 flow
                assert client.get(site.base_url + "/internal/admin").status_code == 407
            assert site.paths() == []
            with httpx.Client(proxy=f"http://user:secret-pass@127.0.0.1:{port}", timeout=30,
                              trust_env=False) as client:
                assert client.get(site.base_url + "/internal/admin").status_code == 404   # the site's own
            assert site.paths() == ["/internal/admin"]
    assert_login_hidden(tmp_path / "flows.mitm")


def test_a_proxy_login_is_hidden_on_a_flow_whose_client_left_mid_body(tmp_path):
    import base64
    import socket
    port = free_port()
    with MockUpstream("site") as site:
        with behind_proxyauth(tmp_path, site, port):
            login = base64.b64encode(b"user:secret-pass").decode()
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(f"POST {site.base_url}/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            f"Proxy-Authorization: Basic {login}\r\nContent-Length: 1000\r\n\r\nonly a part"
                            .encode())
                time.sleep(0.5)   # the part in: mitmproxy waits for the rest
            time.sleep(0.5)   # the client gone: the flow ends in mitmproxy's error hook, which saves it
    assert_login_hidden(tmp_path / "flows.mitm")


@pytest.mark.parametrize("given", ["ccswitch_max_body=abc", "ccswitch_offline=yes", "ccswitch_keep_stream=1k",
                                   "ccswitch_gc_tuning=banana"])
def test_an_option_value_mitmproxy_cannot_parse_stops_the_start_instead_of_leaving_ccswitch_out(tmp_path, given):
    # mitmproxy parses such a value only after the script has loaded, and dropped the whole
    # script when it failed: the proxy ran on, passing requests unrouted with the client's key
    log = refusal(tmp_path, rules_text("http://127.0.0.1:9"), "--set", given)
    name = given.partition("=")[0]
    assert f"ccswitch cannot start: Failed to parse option {name}" in log, log[-2000:]


def _peak_rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize(("opening", "filler"), [
    (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a"),                       # a head: 431
    (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", b"0"),                                   # a chunk-size line
])
def test_a_line_that_never_ends_is_not_held_in_memory(tmp_path, opening, filler):
    # mitmproxy buffers a head, or a keyless chunked body's size line (refused from its head, its
    # body let through to nowhere), without limit: a stranger with no key grew the proxy by a
    # gigabyte, and a head's log line quoted every byte
    import socket
    with MockUpstream("target") as target:
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(target.base_url))
        with Proxy(rules, tmp_path) as proxy:
            before = _peak_rss_kb(proxy.proc.pid)
            with socket.create_connection(("127.0.0.1", proxy.reverse_port), timeout=10) as s:
                s.sendall(opening)
                answer = b""
                try:
                    for _ in range(64):                        # 64 MiB offered, the line never ended
                        s.sendall(filler * (1 << 20))
                except OSError:                                # closed on us: refused
                    pass
                s.settimeout(10)
                with contextlib.suppress(OSError):
                    while chunk := s.recv(65536):
                        answer += chunk
            assert _peak_rss_kb(proxy.proc.pid) - before < 32 * 1024        # far under the 64 MiB offered
            assert target.paths() == [] and len(proxy.log()) < 100_000
            assert filler != b"a" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]    # a head's answer


def test_a_head_cut_short_is_logged_without_its_bytes(tmp_path):
    # a client closing mid-head had every byte logged: its key, a proxy login, all of it
    import socket
    with MockUpstream("target") as target:
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(target.base_url))
        with Proxy(rules, tmp_path) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.reverse_port), timeout=10) as s:
                s.sendall(f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: {CLIENT_KEY}\r\n".encode())
                time.sleep(0.3)
            wait_for(proxy, "Client closed connection before completing request headers")
            assert CLIENT_KEY not in proxy.log()
            assert "characters of bytes, not shown: a head holds credentials)" in proxy.log()
