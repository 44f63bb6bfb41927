"""Streams reach their clients through ccswitch's relay over a connection made in memory: whole,
in order, with the same server hooks as before, a slow client's included."""

import json
import socket
import time

import httpx

from tests.e2e.test_failover import ledger, wait_rows
from tests.e2e.test_send_first import raw_request
from tests.support import REPO
from tests.support.helpers import CLIENT_KEY, one_upstream_rules
from tests.support.mock_upstream import MockUpstream, huge_event
from tests.support.proxy_process import Proxy

HOPS = ("-s", str(REPO / "tests" / "support" / "server_hops.py"))
BODY = {"model": "claude-x", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}


def test_streams_go_through_the_relay_in_memory_with_mitmproxys_server_hooks(tmp_path):
    hops = tmp_path / "hops.jsonl"
    with MockUpstream("A", text="hello there") as a:
        proxy = Proxy(one_upstream_rules(tmp_path, a.base_url), tmp_path, extra_args=HOPS,
                      env={"SERVER_HOPS_LOG": str(hops)})
        with proxy:
            with httpx.Client(timeout=10) as client:      # one kept-alive connection: its relay hop too
                bodies = [client.post(proxy.reverse_url + "/v1/messages", json=BODY, headers=HEADERS).text
                          for _ in range(3)]
            with httpx.Client(timeout=10) as client:      # another client connection, another hop
                bodies.append(client.post(proxy.reverse_url + "/v1/messages", json=BODY, headers=HEADERS).text)
            wait_rows(proxy, 4)
            rows = ledger(proxy, "SELECT status, error FROM requests")
        lines = [json.loads(line) for line in hops.read_text().splitlines()]
    assert rows == [(200, None)] * 4
    for body in bodies:
        text = "".join(json.loads(line[6:])["delta"].get("text", "") for line in body.splitlines()
                       if line.startswith("data: ") and '"content_block_delta"' in line)
        assert text == "hello there" and '"message_stop"' in body
    relay_hops = [hop for hop in lines if hop["address"][0] == "127.0.0.1" and hop["address"][1] != a.port]
    assert [hop["hook"] for hop in relay_hops] == ["connected", "disconnected"] * 2
    assert all(hop["sockname"] == ["127.0.0.1", 0] for hop in relay_hops), relay_hops   # no socket of its own


def test_a_client_reading_slowly_gets_a_big_stream_whole(tmp_path):
    size = 8_000_000          # beyond what loopback's socket buffers hold
    with MockUpstream("A") as a:
        a.script(huge_event(2, size))
        proxy = Proxy(one_upstream_rules(tmp_path, a.base_url), tmp_path)
        with proxy:
            with socket.create_connection(("127.0.0.1", proxy.reverse_port), timeout=10) as s:
                s.sendall(raw_request(BODY))
                time.sleep(1)            # the proxy holds what it cannot send meanwhile
                got = b""
                while not got.endswith(b"0\r\n\r\n"):
                    piece = s.recv(65536)
                    assert piece, f"closed after {len(got)} bytes"
                    got += piece
                    time.sleep(0.0005)
            wait_rows(proxy, 1)
            rows = ledger(proxy, "SELECT status, error FROM requests")
    body = _unchunked(got.partition(b"\r\n\r\n")[2])
    events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]
    assert [len(e["padding"]) for e in events if "padding" in e] == [size]
    assert events[-1]["type"] == "message_stop" and rows == [(200, None)]


def _unchunked(data: bytes) -> bytes:
    out, rest = [], data
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return b"".join(out)
        out.append(rest[:size])
        rest = rest[size + 2:]
