"""A request ccswitch refuses whatever its body holds is answered from its head: a client with
no key (or a body over the limit) is not read into memory first — through the real proxy."""

import json
import socket
import sqlite3
import ssl
import time

import httpx
import pytest

from ccswitch.wire.redact import NO_CLIENT_KEY
from tests.support.helpers import CLIENT_KEY, KEY_A
from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import Proxy, free_port
from tests.support.scale_out import wait_for

RULES = """
client_keys: ['{client}']
usage_db: {db}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{a}', api_key: '{key_a}'}}
routes:
  claude: [a]
"""
MAX_BODY = 2_000_000


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("early")
    with MockUpstream("A") as a:
        rules = tmp / "rules.yaml"
        rules.write_text(RULES.format(client=CLIENT_KEY, db=tmp / "usage.db", a=a.base_url, key_a=KEY_A))
        with Proxy(rules, tmp, extra_args=("--set", f"ccswitch_max_body={MAX_BODY}")) as proxy:
            yield proxy, a, tmp / "usage.db"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def upload(port: int, size: int, *, key: str | None = None, chunked: bool = False,
           path: str = "/v1/messages") -> tuple[bytes, float]:
    """POST /v1/messages with `size` bytes of body, sent whole whatever the proxy answers; (the
    answer's first bytes, the seconds it took)."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        head = [b"POST %s HTTP/1.1" % path.encode(), b"host: 127.0.0.1", b"content-type: application/json",
                b"anthropic-version: 2023-06-01"]
        head += [b"transfer-encoding: chunked"] if chunked else [b"content-length: %d" % size]
        head += [b"x-api-key: " + key.encode()] if key else []
        s.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        piece, sent = b"{" * 65536, 0
        try:
            while sent < size:
                part = piece[:min(len(piece), size - sent)]
                s.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                sent += len(part)
            if chunked:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass          # answered and closed before the upload's end: allowed
        s.settimeout(10)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 400:
            data = s.recv(4096)
            if not data:
                break
            answer += data
    return answer, time.monotonic() - began


def test_a_large_upload_without_a_key_is_refused_from_its_head_and_never_held(world):
    proxy, a, db = world
    before = rss_kb(proxy.proc.pid)
    answer, _ = upload(proxy.reverse_port, 300_000_000)
    assert answer.startswith(b"HTTP/1.1 401")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body == {"type": "error", "error": {"type": "authentication_error",
                                               "message": NO_CLIENT_KEY}}
    assert b"x-should-retry: false" in answer.lower()
    assert rss_kb(proxy.proc.pid) - before < 60_000       # 300 MB went by, not into memory
    assert not a.requests
    answer, _ = upload(proxy.reverse_port, 5_000_000, chunked=True)       # no length declared
    assert answer.startswith(b"HTTP/1.1 401")
    # through HTTPS_PROXY, decrypted, as Claude Code sends it
    with httpx.Client(proxy=proxy.proxy_url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))) as http:
        refused = http.post("https://api.anthropic.com/v1/messages", content=(b"{" * 65536 for _ in range(1000)),
                            headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    assert rss_kb(proxy.proc.pid) - before < 60_000 and not a.requests
    assert CLIENT_KEY not in proxy.log()


def test_a_body_declared_over_the_limit_is_a_413_in_the_api_s_format_with_its_row(world):
    proxy, a, db = world
    answer, _ = upload(proxy.reverse_port, 3 * MAX_BODY, key=CLIENT_KEY)
    assert answer.startswith(b"HTTP/1.1 413")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "request_too_large" and str(MAX_BODY) in body["error"]["message"]
    assert not a.requests

    def rows():
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT status, route, upstream, client FROM requests ORDER BY ts").fetchall()
    # the 413's row names the client whose key it came with, as the router's refusals do
    wait_for(lambda: (413, "claude", None, "key-1") in rows() and (401, "claude", None, None) in rows())


def test_a_head_refused_for_its_size_is_answered_too(world):
    # the loopback server read heads up to 64 KiB: a 431's head never got its answer (a 502)
    proxy, a, _ = world
    with socket.create_connection(("127.0.0.1", proxy.reverse_port)) as s:
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                  b"x-api-key: " + CLIENT_KEY.encode() + b"\r\nx-filler: " + b"f" * 70_000 +
                  b"\r\ncontent-length: 3000000\r\n\r\n" + b"{" * 3_000_000)
        s.settimeout(10)
        assert s.recv(4096).startswith(b"HTTP/1.1 431")
    assert not a.requests


def test_a_request_with_a_key_and_a_body_under_the_limit_goes_on_as_ever(world):
    proxy, a, _ = world
    content = json.dumps({"model": "claude-x", "max_tokens": 5, "pad": "x" * 1_500_000,
                          "messages": [{"role": "user", "content": "hi"}]})
    answer = httpx.post(proxy.reverse_url + "/v1/messages", content=content, timeout=10,
                        headers={"x-api-key": CLIENT_KEY, "content-type": "application/json",
                                 "anthropic-version": "2023-06-01"})
    assert answer.status_code == 200 and answer.json()["type"] == "message"
    assert a.last().json["pad"] == "x" * 1_500_000


def test_beyond_loopback_a_large_upload_to_any_path_without_a_key_is_refused_from_its_head(tmp_path):
    # a stranger on the network: the client-key gate refused it once 1.4 GB were in memory
    with MockUpstream("A") as a:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(client=CLIENT_KEY, db=tmp_path / "usage.db", a=a.base_url, key_a=KEY_A))
        port = free_port()
        with Proxy(rules, tmp_path, extra_args=("--mode", f"reverse:{a.base_url}@0.0.0.0:{port}")) as proxy:
            before = rss_kb(proxy.proc.pid)
            answer, _ = upload(port, 200_000_000, path="/some/other/path")
            assert answer.startswith(b"HTTP/1.1 401") and b"missing or invalid ccswitch client key" in answer
            answer, _ = upload(port, 50_000_000, path="/_ccswitch/")
            assert answer.startswith(b"HTTP/1.1 401") and b"text/plain" in answer
            assert rss_kb(proxy.proc.pid) - before < 60_000 and not a.requests


def test_an_upload_that_waits_for_100_continue_gets_the_refusal_instead(world):
    # it got its `100 Continue` first, inviting the upload ccswitch then threw away
    proxy, _, _ = world
    with socket.create_connection(("127.0.0.1", proxy.reverse_port)) as s:
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                  b"x-api-key: not-a-key\r\nexpect: 100-continue\r\ncontent-length: 5000000\r\n\r\n")
        s.settimeout(10)
        assert s.recv(4096).startswith(b"HTTP/1.1 401")
