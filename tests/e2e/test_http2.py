"""An HTTP/2 client through HTTPS_PROXY (Codex's reqwest speaks it; mitmproxy offers it by ALPN):
whole and streamed answers, and a stream reset (the client's cancel of one request, its
connection kept) that ends the upstream request at once."""

import json
import socket
import ssl
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from tests.e2e.test_failover import ledger, wait_rows
from tests.support import REPO
from tests.support import mock_payloads as P
from tests.support.helpers import CLIENT_KEY, one_upstream_rules
from tests.support.mock_upstream import MockUpstream, hang_before_headers, ok, slow_stream
from tests.support.proxy_process import Proxy

BODY = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
KILLER = ("-s", str(REPO / "tests" / "support" / "flow_killer.py"))


class H2Client:
    """One HTTP/2 connection to api.anthropic.com through the proxy's CONNECT, TLS by its CA."""

    def __init__(self, proxy: Proxy) -> None:
        raw = socket.create_connection(("127.0.0.1", proxy.regular_port), timeout=10)
        raw.sendall(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        tls = ssl.create_default_context(cafile=str(proxy.ca_cert))
        tls.set_alpn_protocols(["h2"])
        self.sock = tls.wrap_socket(raw, server_hostname="api.anthropic.com")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self._flush()
        self.status: dict[int, int] = {}
        self.bodies: dict[int, bytes] = {}
        self.ended: set[int] = set()

    def _flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def post(self, body: dict, timeout: float = 10) -> int:
        """Sends the request whole, as its flow control lets it (a big body waits for window
        updates); its answer may come before the body has gone, and is kept for `answer`."""
        stream_id = self.conn.get_next_available_stream_id()
        data = json.dumps(body).encode()
        self.conn.send_headers(stream_id, [
            (":method", "POST"), (":scheme", "https"), (":authority", "api.anthropic.com"),
            (":path", "/v1/messages"), ("x-api-key", CLIENT_KEY), ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"), ("content-length", str(len(data)))])
        deadline = time.monotonic() + timeout
        while True:
            room = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if room:
                piece, data = data[:room], data[room:]
                self.conn.send_data(stream_id, piece, end_stream=not data)
                self._flush()
            if not data:
                return stream_id
            if self._read(stream_id) is not None or time.monotonic() > deadline:
                assert time.monotonic() <= deadline, f"{len(data)} bytes of the body never had room to go"
                return stream_id    # answered before its body went whole

    def _read(self, stream_id: int) -> tuple[int, bytes] | None:
        """One read's events: the stream's whole answer once it has ended."""
        self.sock.settimeout(0.2)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        for event in self.conn.receive_data(data):
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                self.status[stream_id] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[stream_id] = self.bodies.get(stream_id, b"") + event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended.add(stream_id)
        self._flush()
        if stream_id in self.ended:
            return self.status.get(stream_id, 0), self.bodies.get(stream_id, b"")
        return None

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    def answer(self, stream_id: int, timeout: float = 10) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stream_id in self.ended:
                return self.status.get(stream_id, 0), self.bodies.get(stream_id, b"")
            if (whole := self._read(stream_id)) is not None:
                return whole
        raise AssertionError(f"no whole answer on stream {stream_id} in {timeout} s")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def upstream_and_proxy(tmp_path):
    with MockUpstream("A") as a:
        with Proxy(one_upstream_rules(tmp_path, a.base_url, "failover: {threshold: 1}"), tmp_path) as proxy:
            yield a, proxy


def test_an_http2_client_gets_whole_and_streamed_answers_each_with_its_row(upstream_and_proxy):
    a, proxy = upstream_and_proxy
    a.script(ok("whole"), ok("streamed"))
    client = H2Client(proxy)
    try:
        status, body = client.answer(client.post(BODY))
        assert status == 200 and json.loads(body)["content"][0]["text"] == "whole"
        status, body = client.answer(client.post({**BODY, "stream": True}))
        assert status == 200 and b"event: content_block_delta" in body
        assert body.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    finally:
        client.close()
    wait_rows(proxy, 2)
    assert ledger(proxy, "SELECT stream, status, error FROM requests ORDER BY ts") == [
        (0, 200, None), (1, 200, None)]


@pytest.mark.parametrize("stream", [False, True])
def test_an_http2_stream_reset_ends_its_upstream_request_at_once_and_counts_no_failure(upstream_and_proxy, stream):
    """The reset reached no hook while a whole answer was awaited inside the request hook: the
    upstream request ran its 6 s to the end and the row said 200, as if the client had it."""
    a, proxy = upstream_and_proxy
    a.script(hang_before_headers(6))
    client = H2Client(proxy)
    try:
        stream_id = client.post({**BODY, "stream": stream})
        time.sleep(0.5)
        client.reset(stream_id)      # the client gives up on this request, its connection stays
        reset_at = time.monotonic()
        wait_rows(proxy, 1)
        took = time.monotonic() - reset_at
        [(status, error)] = ledger(proxy, "SELECT status, error FROM requests")
        assert error == "client_closed" and took < 3, (status, error, took)
        # the connection goes on, and no failure was counted (threshold 1 would have cooled `a` down)
        a.script(ok("after"))
        status, body = client.answer(client.post(BODY))
        assert status == 200 and json.loads(body)["content"][0]["text"] == "after"
    finally:
        client.close()


def test_an_http2_upload_over_the_limit_gets_its_413_not_a_stall(tmp_path):
    """Answered from its head, its body discarded as it comes (the flow control lets it go on),
    in the API's format; the connection goes on."""
    with MockUpstream("A") as a:
        rules = one_upstream_rules(tmp_path, a.base_url)
        with Proxy(rules, tmp_path, extra_args=("--set", "ccswitch_max_body=1500000")) as proxy:
            client = H2Client(proxy)
            try:
                big = {**BODY, "messages": [{"role": "user", "content": "x" * 4_000_000}]}
                status, body = client.answer(client.post(big, timeout=60))
                assert status == 413 and json.loads(body)["type"] == "error", (status, body[:300])
                a.script(ok("after"))
                assert client.answer(client.post(BODY))[0] == 200
            finally:
                client.close()
            assert a.paths() == ["/v1/messages"]


def test_an_http2_clients_concurrent_streams_all_go_upstream_at_once(upstream_and_proxy):
    # each stream of the connection takes its own hop to ccswitch's relay; mitmproxy let five such
    # connections be open at a time from one client connection, so the sixth waited for one to end
    a, proxy = upstream_and_proxy
    a.default = slow_stream(20, 0.1)      # about 2 s each
    client = H2Client(proxy)
    try:
        ids = [client.post({**BODY, "stream": True}) for _ in range(8)]
        started = time.monotonic()
        upstream_at_once = None     # upstream requests 1.2 s in, long before the first could end
        ended, bodies = set(), {i: b"" for i in ids}
        while len(ended) < len(ids) and time.monotonic() < started + 20:
            if upstream_at_once is None and time.monotonic() > started + 1.2:
                upstream_at_once = len(a.requests)
            client.sock.settimeout(0.1)
            try:
                data = client.sock.recv(65536)
            except TimeoutError:
                continue
            for event in client.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    client.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    ended.add(event.stream_id)
            client._flush()
    finally:
        client.close()
    assert upstream_at_once == 8, f"{upstream_at_once} of 8 streams reached the upstream before any ended"
    assert ended == set(ids) and all(body.endswith(b'data: {"type":"message_stop"}\n\n') for body in bodies.values())
    wait_rows(proxy, 8)
    assert ledger(proxy, "SELECT status, error FROM requests") == [(200, None)] * 8


def _fast_big_stream(deltas: int, size: int, gap: float = 0.0) -> tuple[socket.socket, list[float]]:
    """A loopback upstream that answers one streamed Anthropic request with `deltas` text deltas
    of `size` bytes, `gap` seconds apart (else as fast as its socket takes them), until its
    connection goes; notes when it has written the last."""
    server = socket.create_server(("127.0.0.1", 0))
    finished: list[float] = []
    events = P.anthropic_events(P.Reply(model="claude-x", deltas=["x" * size] * deltas, output_tokens=deltas))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            body = head.partition(b"\r\n\r\n")[2]
            while len(body) < length:
                body += conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                for event in events:
                    data = P.sse(event)
                    conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))
                    if P.is_delta(event):
                        time.sleep(gap)
                conn.sendall(b"0\r\n\r\n")
                finished.append(time.monotonic())
                conn.recv(1)      # until ccswitch lets the connection go
            except OSError:       # ccswitch ended the request (its client left, its flow was killed)
                pass
    threading.Thread(target=serve, daemon=True).start()
    return server, finished


def test_an_http2_client_reading_slowly_holds_the_upstream_back(tmp_path):
    # mitmproxy's HTTP/2 layer keeps what a client's window does not take and reads on: the proxy
    # held the rest of a long answer read slowly (the upstream done at once); now the hop waits
    deltas, size = 640, 64 * 1024        # 40 MiB, far beyond the sockets' buffers on the way
    server, finished = _fast_big_stream(deltas, size)
    with server, Proxy(one_upstream_rules(tmp_path, f"http://127.0.0.1:{server.getsockname()[1]}"), tmp_path) as proxy:
        client = H2Client(proxy)
        try:
            started = time.monotonic()
            stream_id = client.post({**BODY, "stream": True})
            got, ended = 0, False
            while not ended and time.monotonic() < started + 60:
                client.sock.settimeout(5)
                data = client.sock.recv(65536)
                assert data, "the proxy closed the connection"
                for event in client.conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                        got += len(event.data)
                        client.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                    elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                        ended = isinstance(event, h2.events.StreamEnded)
                client._flush()
                time.sleep(0.002)      # a slow reader: a few MB/s
            took = time.monotonic() - started
        finally:
            client.close()
        wait_rows(proxy, 1)
        rows = ledger(proxy, "SELECT status, error, output_tokens FROM requests")
    assert ended and got > deltas * size and rows == [(200, None, deltas)]
    upstream_done = finished[0] - started
    assert upstream_done > 0.4 * took, f"the upstream was done after {upstream_done:.1f} s of the client's {took:.1f} s"


def test_a_killed_http2_stream_ends_for_its_client_though_the_client_does_not_read_it(tmp_path):
    # a client that reads its socket but takes nothing of this stream (no window update), its
    # flow killed in mitmproxy after 1 s: the hop held back for it must still read the relay's
    # end, or mitmproxy never resets the stream
    server, _ = _fast_big_stream(3000, 64 * 1024, gap=0.01)
    rules = one_upstream_rules(tmp_path, f"http://127.0.0.1:{server.getsockname()[1]}")
    with server, Proxy(rules, tmp_path, extra_args=KILLER) as proxy:
        client = H2Client(proxy)
        try:
            data = json.dumps({**BODY, "stream": True}).encode()
            stream_id = client.conn.get_next_available_stream_id()
            client.conn.send_headers(stream_id, [
                (":method", "POST"), (":scheme", "https"), (":authority", "api.anthropic.com"),
                (":path", "/v1/messages"), ("x-api-key", CLIENT_KEY), ("anthropic-version", "2023-06-01"),
                ("content-type", "application/json"), ("content-length", str(len(data))),
                ("x-test-kill-after", "1")])
            client.conn.send_data(stream_id, data, end_stream=True)
            client._flush()
            ended, started = False, time.monotonic()
            while not ended and time.monotonic() < started + 8:
                client.sock.settimeout(0.2)
                try:
                    raw = client.sock.recv(65536)
                except TimeoutError:
                    continue
                assert raw, "the proxy closed the connection"
                ended = any(isinstance(event, (h2.events.StreamReset, h2.events.StreamEnded))
                            and event.stream_id == stream_id for event in client.conn.receive_data(raw))
                client._flush()
        finally:
            client.close()
        wait_rows(proxy, 1)
        rows = ledger(proxy, "SELECT error FROM requests")
    assert ended, "the killed stream was never ended for its client"
    assert rows == [("killed",)]
