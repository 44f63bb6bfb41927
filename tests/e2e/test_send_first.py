"""A non-streamed answer reaches its client before mitmproxy's passes that follow the request
hook (as bare mitmproxy's streamed answers do), whole, with its row and saved flow as before; a
user's script that edits answers still gets to."""

import json
import socket
import time

import httpx
import pytest
from mitmproxy import io

from tests.e2e.test_failover import ledger, wait_rows
from tests.support import REPO
from tests.support.helpers import CLIENT_KEY, one_upstream_rules
from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import Proxy
from tests.support.slow_passes import WAIT

SLOW = ("-s", str(REPO / "tests" / "support" / "slow_passes.py"))
EDITOR = ("-s", str(REPO / "tests" / "support" / "answer_editor.py"))
RECORDER = ("-s", str(REPO / "tests" / "support" / "sent_on_recorder.py"))
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


def raw_request(body: dict) -> bytes:
    raw = json.dumps(body).encode()
    return (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"x-api-key: " + CLIENT_KEY.encode() + b"\r\nanthropic-version: 2023-06-01\r\n"
            b"content-length: %d\r\n\r\n" % len(raw) + raw)


def _read_answer(s: socket.socket) -> bytes:
    got = b""
    while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < _length(got):
        piece = s.recv(65536)
        assert piece, f"the connection closed after {got[:300]!r}"
        got += piece
    return got


def test_a_client_that_leaves_once_it_has_the_whole_answer_leaves_a_clean_row(tmp_path):
    request = raw_request(BODY)
    with MockUpstream("A", text="hello") as a:
        flows = tmp_path / "flows.mitm"
        proxy = Proxy(one_upstream_rules(tmp_path, a.base_url), tmp_path, extra_args=(*SLOW, "-w", str(flows)))
        with proxy:
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", proxy.reverse_port), timeout=10) as s:
                    s.sendall(request)
                    got = _read_answer(s)
                assert got.startswith(b"HTTP/1.1 200") and b"hello" in got
            wait_rows(proxy, 5)
            rows = ledger(proxy, "SELECT status, error FROM requests")
    assert rows == [(200, None)] * 5
    with open(flows, "rb") as f:
        saved = list(io.FlowReader(f).stream())
    assert [(f.response.status_code, f.error) for f in saved] == [(200, None)] * 5


@pytest.mark.parametrize("streamed", [False, True], ids=["non-streamed", "streamed"])
def test_a_next_request_its_client_gave_up_on_before_it_was_read_goes_nowhere(tmp_path, streamed):
    # the client reads its whole answer, sends its next request on the kept-alive connection at
    # once, then gives up on it (a timeout, a cancel) and closes, while mitmproxy's passes after
    # the first request hook still run: that request is never read (as in mitmproxy's own
    # order), let alone sent on unrouted with the client's key
    with MockUpstream("A", text="hello") as a:
        flows, sent_on = tmp_path / "flows.mitm", tmp_path / "sent_on.jsonl"
        proxy = Proxy(one_upstream_rules(tmp_path, a.base_url), tmp_path,
                      extra_args=(*SLOW, *RECORDER, "-w", str(flows)), env={"SENT_ON_LOG": str(sent_on)})
        with proxy:
            with socket.create_connection(("127.0.0.1", proxy.reverse_port), timeout=10) as s:
                s.sendall(raw_request(BODY))
                assert _read_answer(s).startswith(b"HTTP/1.1 200")
                s.sendall(raw_request({**BODY, "stream": streamed}))
            time.sleep(4 * WAIT)       # the passes end; whatever would follow has happened
            wait_rows(proxy, 1)
            rows = ledger(proxy, "SELECT status, error FROM requests")
            upstream_calls = len(a.requests)
    with open(flows, "rb") as f:
        saved = [(fl.response and fl.response.status_code, fl.error) for fl in io.FlowReader(f).stream()]
    passed_on = [line for line in (sent_on.read_text().splitlines() if sent_on.exists() else [])
                 if '"host": "127.0.0.1"' not in line]      # (a stream goes to ccswitch's own relay)
    assert passed_on == [] and upstream_calls == 1 and rows == [(200, None)], (passed_on, upstream_calls, rows)
    assert saved == [(200, None)]


def _length(head: bytes) -> int:
    for line in head.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no content-length in {head[:300]!r}")
