"""A non-streamed answer reaches its client before mitmproxy's passes that follow the request
hook (as bare mitmproxy's streamed answers do), whole, with its row and saved flow as before; a
user's script that edits answers still gets to."""

import json
import socket
import time

import httpx
from mitmproxy import io

from tests.e2e.test_failover import ledger, wait_rows
from tests.support import REPO
from tests.support.helpers import CLIENT_KEY, one_upstream_rules
from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import Proxy
from tests.support.slow_passes import WAIT

SLOW = ("-s", str(REPO / "tests" / "support" / "slow_passes.py"))
EDITOR = ("-s", str(REPO / "tests" / "support" / "answer_editor.py"))
BODY = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}


def _timed_answer(proxy) -> tuple[float, httpx.Response]:
    with httpx.Client(timeout=10) as client:
        started = time.monotonic()
        answer = client.post(proxy.reverse_url + "/v1/messages", json=BODY, headers=HEADERS)
        return time.monotonic() - started, answer


def test_the_answer_does_not_wait_for_the_passes_after_the_request_hook(tmp_path):
    with MockUpstream("A", text="hello") as a:
        flows = tmp_path / "flows.mitm"
        proxy = Proxy(one_upstream_rules(tmp_path, a.base_url), tmp_path, extra_args=(*SLOW, "-w", str(flows)))
        with proxy:
            _timed_answer(proxy)      # connections warm
            took, answer = _timed_answer(proxy)
            wait_rows(proxy, 2)
            rows = ledger(proxy, "SELECT status, error, output_tokens FROM requests")
    assert answer.status_code == 200 and answer.json()["content"][0]["text"] == "hello"
    assert took < WAIT, f"{took:.2f} s: the answer waited for the passes after the request hook"
    assert rows == [(200, None, rows[0][2])] * 2 and rows[0][2]
    with open(flows, "rb") as f:
        saved = list(io.FlowReader(f).stream())
    assert len(saved) == 2 and all(f.error is None and f.response.status_code == 200 for f in saved)
    assert all("hello" in f.response.get_text() and "ccswitch:" in f.comment for f in saved)


def test_a_users_script_that_edits_answers_gets_to_before_they_go(tmp_path):
    with MockUpstream("A", text="hello") as a:
        proxy = Proxy(one_upstream_rules(tmp_path, a.base_url), tmp_path, extra_args=(*SLOW, *EDITOR))
        with proxy:
            took, answer = _timed_answer(proxy)
    assert answer.status_code == 200 and answer.headers["x-edited-by-script"] == "yes"
    assert took >= WAIT     # it waited for that script's pass


def test_a_client_that_leaves_once_it_has_the_whole_answer_leaves_a_clean_row(tmp_path):
    body = json.dumps(BODY).encode()
    request = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
               b"x-api-key: " + CLIENT_KEY.encode() + b"\r\nanthropic-version: 2023-06-01\r\n"
               b"content-length: %d\r\n\r\n" % len(body) + body)
    with MockUpstream("A", text="hello") as a:
        flows = tmp_path / "flows.mitm"
        proxy = Proxy(one_upstream_rules(tmp_path, a.base_url), tmp_path, extra_args=(*SLOW, "-w", str(flows)))
        with proxy:
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", proxy.reverse_port), timeout=10) as s:
                    s.sendall(request)
                    got = b""
                    while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < _length(got):
                        got += s.recv(65536)
                assert got.startswith(b"HTTP/1.1 200") and b"hello" in got
            wait_rows(proxy, 5)
            rows = ledger(proxy, "SELECT status, error FROM requests")
    assert rows == [(200, None)] * 5
    with open(flows, "rb") as f:
        saved = list(io.FlowReader(f).stream())
    assert [(f.response.status_code, f.error) for f in saved] == [(200, None)] * 5


def _length(head: bytes) -> int:
    for line in head.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no content-length in {head[:300]!r}")
