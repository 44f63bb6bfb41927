"""The upstream HTTP/1.1 client: pooling, framing, decoding, flow control and the
errors the dialer classifies, against raw loopback servers that misbehave on cue."""

from __future__ import annotations

import asyncio
import gzip
import re
import signal
import zlib
from contextlib import asynccontextmanager, contextmanager

import brotli
import pytest

from ccswitch.dial.outcome import network_failure
from ccswitch.net import http1, inflate
from ccswitch.net.inflate import zstd


class RawServer:
    """Answers each request on a connection with the next scripted reply: a callable
    `(writer, request_head, body) -> awaitable` that writes whatever bytes it likes."""

    def __init__(self, *replies) -> None:
        self.replies = list(replies)
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None
        self.url = ""
        self._handlers: dict[asyncio.Task, asyncio.StreamWriter] = {}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._handlers[asyncio.current_task()] = writer
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                reply = self.replies.pop(0) if self.replies else ok(b"default")
                if await reply(writer, head, body) == "close":
                    return
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for writer in self._handlers.values():
            writer.transport.abort()                 # handlers see the close and return
        await asyncio.wait_for(asyncio.gather(*self._handlers, return_exceptions=True), 5)


def ok(body: bytes, *headers: str):
    async def reply(writer, head, request_body):
        extra = "".join(f"{h}\r\n" for h in headers)
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body)
        await writer.drain()
    return reply


def sends(data: bytes, *, hold: float = 0.0, close: bool = False):
    """A reply of these bytes exactly; `hold`: then keep the connection open that long, closing it after."""
    async def reply(writer, head, body):
        writer.write(data)
        await writer.drain()
        if hold:
            await asyncio.sleep(hold)
        return "close" if close or hold else None
    return reply


def then_close(reply):
    async def wrapped(writer, head, body):
        await reply(writer, head, body)
        return "close"
    return wrapped


async def hang_up(writer, head, body):
    return "close"


async def reset(writer, head, body):
    writer.transport.abort()
    return "close"


@asynccontextmanager
async def client(**kw):
    c = http1.UpstreamClient(**kw)
    try:
        yield c
    finally:
        await c.aclose()


async def get_body(c: http1.UpstreamClient, url: str, body: bytes = b"{}", **kw) -> tuple[int, bytes]:
    response = await c.send("POST", url + "/v1/x?beta=true", [("content-type", "application/json")], body, **kw)
    return response.status_code, await response.aread()


# ---------------------------------------------------------------------- framing and pooling

@pytest.mark.parametrize("size", [100, http1.APART_FROM])
async def test_a_small_request_goes_in_one_write_and_a_large_body_after_its_head_uncopied(size, monkeypatch):
    from ccswitch.net.connection import Connection
    written, real_send = [], Connection.send

    async def send(self, *parts):
        written.append(parts)
        return await real_send(self, *parts)
    monkeypatch.setattr(Connection, "send", send)
    body = b"{" + b" " * (size - 2) + b"}"
    async with RawServer(ok(b"ok")) as server, client() as c:
        assert await get_body(c, server.url, body) == (200, b"ok")
        assert server.requests[0][1] == body                   # whole at the upstream either way
    (parts,) = written
    if size == 100:                                            # a typical request: one write
        assert len(parts) == 1 and parts[0].endswith(b"\r\n\r\n" + body)
    else:                                                      # not copied into one piece with its head
        assert len(parts) == 2 and parts[0].endswith(b"\r\n\r\n") and parts[1] is body


async def test_request_framing_host_length_encoding_and_the_clients_headers():
    async with RawServer() as server, client() as c:
        assert await get_body(c, server.url, b'{"a": 1}') == (200, b"default")
        response = await c.send("GET", server.url + "/models", [("x-api-key", "k")])
        await response.aread()
    head, body = server.requests[0]
    port = server.url.rsplit(":", 1)[1]
    assert head.startswith(b"POST /v1/x?beta=true HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{port}".encode() in head and b"content-length: 8" in head
    assert b"accept-encoding: gzip, deflate" in head and b"content-type: application/json" in head
    assert body == b'{"a": 1}'
    assert b"content-length" not in server.requests[1][0] and b"x-api-key: k" in server.requests[1][0]


@pytest.mark.parametrize("tls", [None, "verified"], ids=["no-tls-context", "with-a-tls-context"])
async def test_keep_alive_reuses_one_connection(tls):
    """(A client given TLS settings, as the proxy's is, keeps plain-HTTP connections alive too.)"""
    context = http1.ssl_context_for() if tls else None
    async with RawServer() as server, client(ssl_context=context) as c:
        for _ in range(5):
            assert await get_body(c, server.url) == (200, b"default")
    assert server.connections == 1 and len(server.requests) == 5


def gated_stream(gate: asyncio.Event):
    """A chunked event stream whose end (the last chunk) waits for `gate`."""
    async def reply(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n12\r\ndata: last event\n\n\r\n")
        await writer.drain()
        await gate.wait()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    return reply


async def read_first_piece(c: http1.UpstreamClient, url: str) -> http1.Response:
    response = await c.send("POST", url, [], b"{}", via=http1.Via(upstream="u"))
    assert await response.aiter_bytes().__anext__() == b"data: last event\n\n"
    return response


async def test_connection_close_and_unfinished_bodies_are_not_reused():
    gate = asyncio.Event()
    async with RawServer(ok(b"a", "connection: close"), gated_stream(gate)) as server, client() as c:
        await get_body(c, server.url)
        response = await read_first_piece(c, server.url)
        await response.aclose()                      # its end is not in: the connection cannot be reused
        gate.set()
        await get_body(c, server.url)
    assert server.connections == 3


async def test_an_unread_body_already_in_does_not_cost_its_connection():
    async with RawServer(ok(b"x" * 5000)) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        await asyncio.sleep(0.05)                    # all of it arrives; nobody reads it
        await response.aclose()
        assert await get_body(c, server.url) == (200, b"default")   # not mistaken for this answer
    assert server.connections == 1


@pytest.mark.parametrize("end_comes, connections", [(True, 1), (False, 2)], ids=["in-time", "too-late"])
async def test_finish_waits_for_the_bodys_end_and_gives_the_connection_back(end_comes, connections):
    gate = asyncio.Event()
    async with RawServer(gated_stream(gate)) as server, client() as c:
        response = await read_first_piece(c, server.url)
        if end_comes:
            asyncio.get_running_loop().call_later(0.05, gate.set)
        await response.finish(0.3)
        assert c.connection_counts() == {"u": (1, 0)}            # kept idle, or still open to be closed
        await response.aclose()
        assert c.connection_counts() == {"u": (1 if end_comes else 0, 0)}
        gate.set()
        assert await get_body(c, server.url, via=http1.Via(upstream="u")) == (200, b"default")
    assert server.connections == connections


async def test_idle_connections_expire():
    async with RawServer() as server, client(keepalive_expiry=0.0) as c:
        await get_body(c, server.url)
        await asyncio.sleep(0.01)
        await get_body(c, server.url)
    assert server.connections == 2


async def test_a_kept_alive_connection_the_upstream_closed_is_replaced_transparently():
    async with RawServer(then_close(ok(b"first")), ok(b"second")) as server, client() as c:
        assert await get_body(c, server.url) == (200, b"first")
        await asyncio.sleep(0.05)                    # the close has reached us: skipped at checkout
        assert await get_body(c, server.url) == (200, b"second")
    assert server.connections == 2


async def test_a_reused_connection_dropped_before_any_answer_is_retried_once_on_a_fresh_one():
    """The race a pool cannot see: the upstream closes a kept-alive connection as our request
    goes out.  Nothing was answered, so the request is sent again on a new connection."""
    async with RawServer(ok(b"first"), hang_up, ok(b"again")) as server, client() as c:
        await get_body(c, server.url)
        assert await get_body(c, server.url) == (200, b"again")
    assert server.connections == 2 and len(server.requests) == 3


async def test_a_fresh_connection_dropped_before_the_answer_is_an_error_not_a_retry():
    async with RawServer(hang_up, ok(b"never")) as server, client() as c:
        with pytest.raises(http1.RemoteProtocolError) as caught:
            await get_body(c, server.url)
    assert len(server.requests) == 1
    assert network_failure("u", caught.value, "switch", "first_byte").reason == "connection closed"


async def test_bytes_beyond_a_response_make_its_connection_unusable():
    """A reply longer than its Content-Length (or a stray second reply) must never be read as
    the next request's answer."""
    async def with_stray(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"
                     b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nSTALE")
        await writer.drain()

    async with RawServer(with_stray, ok(b"second")) as server, client() as c:
        assert await get_body(c, server.url) == (200, b"first")
        assert await get_body(c, server.url) == (200, b"second")
    assert server.connections == 2


async def test_the_retry_after_a_dropped_kept_alive_connection_uses_a_new_one():
    """Several pooled connections may all be dead; the one retry must not take another of them."""
    served_before = set()

    async def once_per_connection(writer, head, body):     # a connection's second request is dropped
        if writer in served_before:
            return "close"
        served_before.add(writer)
        await ok(b"fresh")(writer, head, body)

    async with RawServer(*[once_per_connection] * 5) as server, client() as c:
        first = await c.send("POST", server.url, [], b"{}")
        second = await c.send("POST", server.url, [], b"{}")    # two connections, both pooled
        assert (await first.aread(), await second.aread()) == (b"fresh", b"fresh")
        assert await get_body(c, server.url) == (200, b"fresh")
    assert server.connections == 3


async def test_informational_responses_are_skipped():
    async def continue_then_ok(writer, head, body):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await ok(b"real")(writer, head, body)
    async with RawServer(continue_then_ok) as server, client() as c:
        assert await get_body(c, server.url) == (200, b"real")


# ---------------------------------------------------------------------- bodies

async def test_a_chunked_body_is_yielded_as_it_arrives():
    gate = asyncio.Event()

    async def chunked(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n"
                     b"5\r\nfirst\r\n")
        await writer.drain()
        await gate.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    async with RawServer(chunked) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        assert response.header("Content-Type") == "text/event-stream"
        chunks = response.aiter_bytes()
        assert await asyncio.wait_for(chunks.__anext__(), 2) == b"first"   # before the rest exists
        gate.set()
        assert [chunk async for chunk in chunks] == [b"second"]
        await get_body(c, server.url)                # read to its end: the connection went back
    assert server.connections == 1


async def test_each_streamed_piece_is_parsed_once_as_it_comes():
    """Each piece of a stream is one wake-up and one pass of the parser over its bytes, and no
    more (a cost on every event of every stream)."""
    gates = [asyncio.Event() for _ in range(20)]

    async def paced(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i, gate in enumerate(gates):
            await gate.wait()
            writer.write(b"%x\r\n%s\r\n" % (len(b"piece%02d" % i), b"piece%02d" % i))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    class Counting:
        def __init__(self, parser):
            self.parser, self.fed = parser, []

        def feed_data(self, data):
            self.fed.append(data)
            self.parser.feed_data(data)

        def __getattr__(self, name):
            return getattr(self.parser, name)

    async with RawServer(paced) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        connection = response._connection
        connection._parser = counting = Counting(connection._parser)
        chunks = response.aiter_bytes()
        pieces = []
        for gate in gates:
            gate.set()
            pieces.append(await asyncio.wait_for(chunks.__anext__(), 2))
        assert pieces == [b"piece%02d" % i for i in range(20)]
        assert [chunk async for chunk in chunks] == []
        assert len(counting.fed) <= len(gates) + 1     # each piece once; the last chunk
        assert b"".join(counting.fed).count(b"piece") == len(gates)
        assert await get_body(c, server.url) == (200, b"default")   # and the connection goes on
    assert server.connections == 1


async def test_a_burst_of_small_chunks_is_read_in_one_piece():
    """One SSE event per chunk is how upstreams write; what is already here goes on as one write."""
    events = [b"data: %d\n\n" % i for i in range(50)]

    async def burst(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n")
        await writer.drain()

    async with RawServer(burst) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        await asyncio.sleep(0.1)
        assert [chunk async for chunk in response.aiter_bytes()] == [b"".join(events)]


async def test_what_arrived_before_a_broken_chunk_is_handed_over_before_the_error():
    async def broken(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\nzz\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)

    async with RawServer(broken) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        await asyncio.sleep(0.1)
        chunks = response.aiter_bytes()
        assert await chunks.__anext__() == b"first"
        with pytest.raises(http1.RemoteProtocolError):
            await chunks.__anext__()


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def two_zstd_frames(data: bytes) -> bytes:
    half = len(data) // 2
    return zstd.compress(data[:half]) + zstd.compress(data[half:])


PACKERS = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress, "zstd": zstd.compress}


@pytest.mark.parametrize("encoding,pack", [("gzip", gzip.compress), ("deflate", zlib.compress),
                                           ("deflate", raw_deflate), ("br", brotli.compress),
                                           ("zstd", zstd.compress), ("zstd", two_zstd_frames)],
                         ids=["gzip", "zlib-deflate", "raw-deflate", "br", "zstd", "zstd-two-frames"])
async def test_compressed_bodies_arrive_decoded(encoding, pack):
    plain = b"data: " + b"x" * 5000 + b"\n\n"
    async with RawServer(ok(pack(plain), f"content-encoding: {encoding}")) as server, client() as c:
        assert await get_body(c, server.url) == (200, plain)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
async def test_corrupt_encodings_are_named_transport_errors(encoding):
    async with RawServer(ok(b"not compressed at all", f"content-encoding: {encoding}")) as server, \
            client() as c:
        with pytest.raises(http1.UndecodableBody, match=f"corrupt {encoding} body") as caught:
            await get_body(c, server.url)
    assert network_failure("u", caught.value, "switch", "total").reason.startswith(f"corrupt {encoding} body")


async def test_an_unsupported_encoding_is_named_not_called_a_closed_connection():
    async with RawServer(ok(b"??", "content-encoding: compress")) as server, client() as c:
        with pytest.raises(http1.UndecodableBody, match="unsupported content-encoding 'compress'") as caught:
            await get_body(c, server.url)
    reason = network_failure("u", caught.value, "switch", "first_byte").reason
    assert reason.startswith("unsupported content-encoding 'compress'")


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
async def test_truncated_and_oversized_compressed_bodies_are_errors_and_empty_ones_are_not(encoding, monkeypatch):
    packed = PACKERS[encoding](b"z" * 100_000)
    header = f"content-encoding: {encoding}"
    async with RawServer(ok(packed[:-3], header), ok(packed, header), ok(b"", header)) as server, client() as c:
        with pytest.raises(http1.ReadError, match=f"truncated {encoding}"):
            await get_body(c, server.url)
        monkeypatch.setattr(inflate, "_MAX_DECODED", 50_000)
        with pytest.raises(http1.ReadError, match="inflates past 50000"):
            await get_body(c, server.url)
        assert await get_body(c, server.url) == (200, b"")


async def test_what_came_whole_before_a_missing_compressed_end_is_handed_over_before_the_error():
    """A relay compressing each event with a sync flush that never ends its gzip stream: whether
    the last events come in one read with the body's end or a read before it, the reader gets
    them, and the missing end only after (a stream over at its last event never asks for it)."""
    packer = zlib.compressobj(wbits=31)                       # gzip, flushed, never finished
    events = b"event: message_stop\ndata: {}\n\n"
    packed = packer.compress(events) + packer.flush(zlib.Z_SYNC_FLUSH)
    async with RawServer(ok(packed, "content-encoding: gzip"), ok(packed, "content-encoding: gzip")) as server, \
            client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        await asyncio.sleep(0.1)                               # the whole body in, end and all: one read
        chunks = response.aiter_bytes()
        assert await chunks.__anext__() == events
        with pytest.raises(http1.UndecodableBody, match="truncated gzip body"):
            await chunks.__anext__()
        with pytest.raises(http1.UndecodableBody, match="truncated gzip body"):   # read whole, it is an error
            await get_body(c, server.url)


async def test_a_fast_upstream_is_paused_for_a_slow_reader_and_nothing_is_lost():
    big = bytes(range(256)) * 16 * 1024                  # 4 MiB
    async with RawServer(ok(big)) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        connection = response._connection
        await asyncio.sleep(0.2)                     # let the upstream fill our buffer
        assert connection._read_paused and connection._buffered < 2 * 1024 * 1024
        assert await response.aread() == big


async def test_a_body_over_the_limit_is_refused():
    async with RawServer(ok(b"y" * 1000)) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        with pytest.raises(http1.ReadError, match="over 100 bytes"):
            await response.aread(limit=100)
        await response.aclose()


# ---------------------------------------------------------------------- failures the dialer classifies

@pytest.mark.parametrize("head,rst,reason", [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", True, "connection reset"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", False, "connection closed"),
    # no framing: the body ends when the connection does, so only a reset tells a cut from the end
    (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n", True, "connection reset"),
], ids=["length-reset", "length-closed", "until-close-reset"])
async def test_a_body_cut_short_is_an_error_classified_by_how(head, rst, reason):
    import socket
    import struct

    async def part_then_cut(writer, _head, _body):
        writer.write(head + b"data: partial\n\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        if rst:
            sock = writer.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return "close"

    async with RawServer(part_then_cut) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        with pytest.raises(http1.TransportError) as caught:
            await response.aread()
    assert network_failure("u", caught.value, "switch", "idle").reason == reason


async def test_refused_and_unresolvable_hosts_are_connect_errors():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                    # bound, never listening: refused
        async with client() as c:
            with pytest.raises(http1.ConnectError) as refused:
                await get_body(c, f"http://127.0.0.1:{port}")
            with pytest.raises(http1.ConnectError) as unknown:
                await get_body(c, "http://no-such-host.invalid")
    assert network_failure("u", refused.value, "switch", "first_byte").reason == "connection refused"
    assert network_failure("u", unknown.value, "switch", "first_byte").reason == "DNS error"


async def test_a_slow_connect_is_a_connect_timeout(monkeypatch):
    loop = asyncio.get_running_loop()

    async def slow(*args, **kw):
        await asyncio.sleep(5)
    monkeypatch.setattr(loop, "create_connection", slow)
    async with client() as c:
        with pytest.raises(http1.ConnectTimeout) as caught:
            await get_body(c, "http://127.0.0.1:9", connect_timeout=0.05)
    assert network_failure("u", caught.value, "switch", "first_byte").reason == "connect timeout"


async def test_a_cancelled_request_closes_its_connection():
    async def slow(writer, head, body):
        await asyncio.sleep(1)
        await ok(b"late")(writer, head, body)

    async with RawServer(slow) as server, client() as c:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(get_body(c, server.url), 0.05)
        assert not c._pool._open and not any(c._pool._idle.values())
        assert await get_body(c, server.url) == (200, b"default")
    assert server.connections == 2


async def test_an_idle_connection_that_talks_is_not_trusted_again():
    async def ok_then_babble(writer, head, body):
        await ok(b"one")(writer, head, body)
        await asyncio.sleep(0.02)
        writer.write(b"HTTP/1.1 200 OK\r\n")          # unsolicited bytes on an idle connection
        await writer.drain()

    async with RawServer(ok_then_babble) as server, client() as c:
        await get_body(c, server.url)
        await asyncio.sleep(0.1)
        assert await get_body(c, server.url) == (200, b"default")
    assert server.connections == 2


async def test_invalid_header_values_are_refused_before_anything_is_sent():
    async with RawServer() as server, client() as c:
        with pytest.raises(http1.TransportError, match="cannot send"):
            await c.send("POST", server.url, [("x-bad", "a\r\nb")], b"{}")
    assert server.requests == []


@pytest.mark.parametrize("headers", [
    [("x bad", "v")], [("x-bad\r\nx-injected", "v")], [("x-a\ntransfer-encoding", "chunked")],
    [("x-bad", "a\nb")], [("x-bad", "a\x00b")],
    [("x-bad", "\u0100")], [("content-length", "3")], [("transfer-encoding", "chunked")],
], ids=["space-in-name", "crlf-in-name", "lf-in-name", "lf-in-value", "nul-in-value", "beyond-latin-1",
        "own-content-length", "own-transfer-encoding"])
async def test_what_http_cannot_carry_or_would_frame_twice_is_refused_unsent(headers):
    async with RawServer() as server, client() as c:
        with pytest.raises(http1.TransportError, match="cannot send") as caught:
            await c.send("POST", server.url, headers, b"{}")
    assert server.requests == []
    assert "\n" not in str(caught.value) and "\x00" not in str(caught.value)   # names the kind, never the value


async def test_header_values_go_out_without_surrounding_blanks_and_tabs_inside_stay():
    async with RawServer() as server, client() as c:
        response = await c.send("POST", server.url, [("x-one", "  padded\t"), ("x-two", "a\tb")], b"{}")
        await response.aread()
    head = server.requests[0][0]
    assert b"\r\nx-one: padded\r\n" in head and b"\r\nx-two: a\tb\r\n" in head
    assert head.startswith(b"POST / HTTP/1.1\r\nhost: 127.0.0.1:")


async def test_a_response_head_over_64_kb_is_a_protocol_error():
    async def huge(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(100):
            writer.write(b"x-filler-%d: %s\r\n" % (i, b"f" * 1000))
            await writer.drain()
        await asyncio.sleep(0.3)
        return "close"

    async with RawServer(huge) as server, client() as c:
        with pytest.raises(http1.RemoteProtocolError, match="over 64 KB"):
            await c.send("POST", server.url, [], b"{}")


def fed_in_one_read(data: bytes):
    """A connection awaiting an answer, given `data` whole in one read, as a fast upstream's is."""
    from ccswitch.net.connection import Connection

    class Transport:
        def pause_reading(self) -> None: ...
        def resume_reading(self) -> None: ...

    connection = Connection((None, None, ("http", "relay.invalid", 80)))
    connection.transport, connection.in_use = Transport(), True
    connection.expect_answer()
    connection.data_received(data)
    return connection


@pytest.mark.parametrize(("fields", "refused"), [(16, True), (7, False)])
def test_a_response_head_over_64_kb_in_one_read_is_refused_too_and_one_under_it_is_not(fields, refused):
    # measured only between reads, a head that came whole in one read was never measured
    from ccswitch.net.connection import Head

    connection = fed_in_one_read(b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-filler-%d: %s\r\n" % (i, b"f" * 8000)
                                                             for i in range(fields))
                                 + b"content-length: 2\r\n\r\nok")
    if refused:
        with pytest.raises(http1.MalformedAnswer, match="the response head is over 64 KB"):
            connection.poll_event()
    else:
        assert isinstance(connection.poll_event(), Head) and connection.poll_event() == b"ok"


async def test_a_chunked_body_s_trailers_over_64_kb_are_a_protocol_error_and_small_ones_pass():
    # llhttp gathers a trailer field's value (ccswitch drops it) with no cap: 48 MB of one cost
    # 100 MB and stalled the loop, bounded only by the total timeout
    async def endless_trailer(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: ")
        for _ in range(200):
            writer.write(b"a" * 1000)
            await writer.drain()
        await asyncio.sleep(0.3)
        return "close"
    small = sends(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                  b"x-t: " + b"b" * 2000 + b"\r\n\r\n")
    long_body = sends(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                      + b"".join(b"1\r\n%d\r\n" % (i % 10) for i in range(30000)) + b"0\r\n\r\n")
    async with RawServer(endless_trailer) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        with pytest.raises(http1.RemoteProtocolError, match="trailers are over 64 KB"):
            await response.aread()
    async with RawServer(small, long_body) as server, client() as c:
        assert await get_body(c, server.url) == (200, b"hello")
        assert await get_body(c, server.url) == (200, b"".join(b"%d" % (i % 10) for i in range(30000)))


async def test_a_big_head_does_not_count_against_the_chunk_framing_after_it():
    # each is held to 64 KB on its own: a 40 KB head and 30 KB of trailers are an answer like any
    async def big_head_then_trailers(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-big: " + b"h" * 40_000 + b"\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"0\r\nx-t: " + b"t" * 30_000)          # read before the answer's end
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"\r\n\r\n")
        await writer.drain()
    async with RawServer(big_head_then_trailers) as server, client() as c:
        assert await get_body(c, server.url) == (200, b"")


@pytest.mark.parametrize("pieces, whole", [
    ([b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"], b"ok"),
    ([b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"], b"ok"),
    ([b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst ", b"and last"], b"first and last"),
], ids=["http-1.0", "connection-close", "no-length-runs-to-the-close"])
async def test_an_answer_that_closes_after_itself_is_read_whole_and_its_connection_not_reused(pieces, whole):
    async def answer(writer, head, body):
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        return "close"

    async with RawServer(answer, ok(b"second")) as server, client() as c:
        assert await get_body(c, server.url) == (200, whole)
        assert await get_body(c, server.url) == (200, b"second")
    assert server.connections == 2


@pytest.mark.parametrize("keep_alive", ["", "connection: keep-alive\r\n"], ids=["plain", "keep-alive"])
async def test_an_http_1_0_answer_is_not_reused_even_when_its_upstream_keeps_the_connection_open(keep_alive):
    """HTTP/1.0 keep-alive is not taken up: only an HTTP/1.1 answer's connection goes back to the pool."""
    old = sends(f"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n{keep_alive}\r\nok".encode())   # and stays open
    async with RawServer(old, ok(b"second")) as server, client() as c:
        assert await get_body(c, server.url) == (200, b"ok")
        assert await get_body(c, server.url) == (200, b"second")
    assert server.connections == 2


@pytest.mark.parametrize("coding", ["Chunked", "CHUNKED", " chunked ", ", chunked"])   # a list's empty items count for nothing
async def test_a_chunked_body_named_in_any_letter_case_is_read_as_chunked(coding):
    chunked = sends(f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\n\r\n"
                    "5\r\nhello\r\n6\r\n there\r\n0\r\n\r\n".encode())
    async with RawServer(chunked, ok(b"next")) as server, client() as c:
        assert await get_body(c, server.url) == (200, b"hello there")
        assert await get_body(c, server.url) == (200, b"next")       # its end was read: kept alive
    assert server.connections == 1


async def test_a_connection_cut_in_the_middle_of_the_head_is_a_protocol_error_not_a_retry():
    async with RawServer(sends(b"HTTP/1.1 200 OK\r\ncontent-le", close=True)) as server, client() as c:
        with pytest.raises(http1.RemoteProtocolError, match="middle of the response head"):
            await c.send("POST", server.url, [], b"{}")


@pytest.mark.parametrize("reply, problem", [
    (b"HTTP/1.1 099 Odd\r\ncontent-length: 2\r\n\r\nok", "status 99"),     # llhttp takes any three digits
    (b"HTTP/1.1 000 Odd\r\ncontent-length: 2\r\n\r\nok", "status 0"),
    (b"HTTP/1.1 999 Odd\r\ncontent-length: 2\r\n\r\nok", "status 999"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nxx", "other than chunked"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n", "other than chunked"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n",
     "other than chunked"),                                                      # one list over two lines
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "other than chunked"),                      # llhttp reads it to the close: it waited for the total timeout
    (b"HTTTP/1.1 200 OK\r\n\r\n", "not an HTTP/1.1 answer"),
], ids=["status-99", "status-0", "status-999", "gzip-alone", "gzip-then-chunked", "gzip-line-chunked-line",
        "chunked-then-empty", "not-http"])
async def test_an_answer_that_is_not_http_fails_at_once_named_for_what_it_is(reply, problem):
    """Not after the dialer's deadline, and not as a closed connection: the next upstream is tried."""
    # the connection kept open: no close tells the client
    async with RawServer(sends(reply, hold=1.5)) as server, client() as c:
        with pytest.raises(http1.MalformedAnswer, match=problem) as caught:
            await asyncio.wait_for(c.send("POST", server.url, [], b"{}"), 1)
    reason = network_failure("u", caught.value, "switch", "first_byte").reason     # which of them, for the ledger
    assert reason == str(caught.value) and problem in reason


async def test_lines_ended_by_lf_alone_and_blanks_around_values_are_read_as_h11_read_them():
    loose = sends(b"HTTP/1.1 200 OK\ncontent-length: 2\nx-padded:   v1  \t\n\nok")
    async with RawServer(loose, ok(b"next")) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        assert (response.header("x-padded"), await response.aread()) == ("v1", b"ok")
        assert await get_body(c, server.url) == (200, b"next")
    assert server.connections == 1


async def test_ours_saying_close_and_a_bodyless_answer_are_each_kept_or_not_as_they_should():
    no_content = sends(b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n")
    async with RawServer(no_content, ok(b"a"), ok(b"b")) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        assert (response.status_code, await response.aread()) == (204, b"")
        response = await c.send("POST", server.url, [("connection", "keep-alive, Close")], b"{}")
        assert await response.aread() == b"a"           # the same connection, then closed after it
        assert await get_body(c, server.url) == (200, b"b")
    assert server.connections == 2


@asynccontextmanager
async def tls_server(directory, body: bytes, subject: str = "localhost"):
    """A keep-alive HTTPS server for `localhost` with a self-signed certificate (its issuer named
    `subject`): (URL, certificate path, the connections it served)."""
    from tests.support.helpers import localhost_tls_server_context
    context, cert = localhost_tls_server_context(directory, subject)
    served = []

    async def serve(reader, writer):
        served.append(writer)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield f"https://localhost:{server.sockets[0].getsockname()[1]}", cert, served
    finally:
        for writer in served:
            writer.transport.abort()
        server.close()


async def test_tls_upstreams_are_verified_and_kept_alive(tmp_path):
    import ssl
    async with tls_server(tmp_path, b"secret") as (url, cert, served):
        async with client() as c:                    # the default trust store: a self-signed cert fails
            with pytest.raises(http1.ConnectError) as caught:
                await c.send("GET", url, [])
        reason = network_failure("u", caught.value, "switch", "first_byte").reason
        assert re.fullmatch(r"TLS error: certificate verify failed: self[- ]signed certificate", reason)
        async with client(ssl_context=ssl.create_default_context(cafile=str(cert))) as c:
            for _ in range(3):
                response = await c.send("GET", url + "/x", [])
                assert await response.aread() == b"secret"
        assert len(served) == 1                      # three requests, one kept-alive connection


async def test_a_tls_failure_says_why_a_certificate_issued_for_another_name_included(tmp_path):
    """Trust the relay's CA or mend its base_url: the reason says which."""
    import ssl
    async with tls_server(tmp_path, b"ok") as (url, cert, _):
        elsewhere = url.replace("localhost", "127.0.0.1")     # the certificate names localhost only
        async with client(ssl_context=ssl.create_default_context(cafile=str(cert))) as c:
            with pytest.raises(http1.ConnectError) as caught:
                await c.send("GET", elsewhere, [])
    reason = network_failure("u", caught.value, "switch", "first_byte").reason
    assert reason.startswith("TLS error: certificate verify failed: ") and "mismatch" in reason, reason


async def test_mitmproxys_upstream_tls_options_have_their_meaning(tmp_path):
    """`ssl_insecure` and `ssl_verify_upstream_trusted_ca` as mitmproxy applies them to its own
    upstreams: a self-signed relay is reachable with either, and with neither it is refused."""
    import ssl
    async with tls_server(tmp_path, b"ok") as (url, cert, _):
        for context in (http1.ssl_context_for(insecure=True), http1.ssl_context_for(ca_file=str(cert))):
            async with client(ssl_context=context) as c:
                assert await (await c.send("GET", url, [])).aread() == b"ok"
        async with client(ssl_context=http1.ssl_context_for()) as c:
            with pytest.raises(http1.ConnectError):
                await c.send("GET", url, [])
    with pytest.raises((OSError, ssl.SSLError)):
        http1.ssl_context_for(ca_file=str(tmp_path / "missing.pem"))


async def test_a_relay_s_private_ca_is_trusted_beside_the_usual_roots_not_instead_of_them(tmp_path, monkeypatch):
    # `ssl_verify_upstream_trusted_ca=relay-ca.pem` for a private relay beside the official API:
    # with the CA file alone, the official API's public certificate failed to verify
    (tmp_path / "relay").mkdir()
    (tmp_path / "public").mkdir()
    async with tls_server(tmp_path / "relay", b"relay", "relay CA") as (relay, relay_ca, _), \
            tls_server(tmp_path / "public", b"public", "public root") as (public, public_root, _):
        monkeypatch.setattr(http1.certifi, "where", lambda: str(public_root))     # the usual roots, here
        async with client(ssl_context=http1.ssl_context_for(ca_file=str(relay_ca))) as c:
            assert await (await c.send("GET", relay, [])).aread() == b"relay"
            assert await (await c.send("GET", public, [])).aread() == b"public"


async def test_new_tls_settings_are_not_served_by_connections_made_under_the_old_ones(tmp_path):
    async with tls_server(tmp_path, b"ok") as (url, _, _):
        async with client(ssl_context=http1.ssl_context_for(insecure=True)) as c:
            assert await (await c.send("GET", url, [])).aread() == b"ok"
            in_flight = await c.send("GET", url, [])          # made under the old settings too
            c.ssl_context = http1.ssl_context_for()           # verify again: self-signed is refused
            assert await in_flight.aread() == b"ok"           # finishes, but is not pooled
            with pytest.raises(http1.ConnectError):
                await c.send("GET", url, [])
            assert not any(c._pool._idle.values())


def test_urls_split_into_origin_target_and_host():
    assert http1.split_url("https://api.example.com/v1/messages?beta=true") == (
        ("https", "api.example.com", 443), "/v1/messages?beta=true", "api.example.com")
    assert http1.split_url("http://[::1]:8080") == (("http", "::1", 8080), "/", "[::1]:8080")
    with pytest.raises(ValueError):
        http1.split_url("ftp://example.com/")


@pytest.mark.parametrize("rst,says_close", [(False, True), (True, True), (False, False)],
                         ids=["closed", "reset", "closed-unannounced"])
async def test_an_answer_sent_before_the_body_was_all_written_is_that_answer_not_a_write_error(rst, says_close):
    # e.g. a relay's 413 for a body over its limit: it answers on the head, then hangs up
    import socket
    import struct

    refusal = b'{"error":{"message":"request too large"}}'

    async def refuse_on_the_head(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\n" + (b"connection: close\r\n" if says_close else b"")
                     + b"content-length: %d\r\n\r\n%s" % (len(refusal), refusal))
        await writer.drain()
        await asyncio.sleep(0.1)
        if rst:
            sock = writer.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()      # the unread body in its buffer makes the close a reset anyway

    server = await asyncio.start_server(refuse_on_the_head, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with client() as c:
            status, body = await get_body(c, url, b"x" * (32 * 1024 * 1024), via=http1.Via(None, "up"))
            assert c.connection_counts() == {"up": (0, 0)}      # the closed connection is not kept
    finally:
        server.close()
    assert (status, body) == (413, refusal)


async def test_an_answer_on_the_head_from_an_upstream_that_neither_reads_on_nor_hangs_up_is_that_answer():
    # the request's body waits on the upstream reading it, which it never will: its answer is
    # there already, and the connection, with request bytes still queued, is not kept
    refusal = b'{"error":{"message":"request too large"}}'
    stop = asyncio.Event()

    async def refuse_and_stay(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: %d\r\n\r\n%s" % (len(refusal), refusal))
        await writer.drain()
        await stop.wait()
        writer.transport.abort()

    server = await asyncio.start_server(refuse_and_stay, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with client() as c:
            discarded = []
            discard = c._pool.discard
            c._pool.discard = lambda connection, abort: discarded.append(abort) or discard(connection, abort=abort)
            async with asyncio.timeout(10):
                status, body = await get_body(c, url, b"x" * (64 * 1024 * 1024), via=http1.Via(None, "up"))
            assert c.connection_counts() == {"up": (0, 0)}
            assert discarded == [True]   # closed at once: a plain close waits for the queued bytes to go
    finally:
        stop.set()
        server.close()
    assert (status, body) == (413, refusal)


async def test_a_connection_answered_before_the_request_went_out_whole_is_not_used_again():
    """An upstream that answers on the head and reads on may take the rest of the body for a
    request of its own, and its answer to that would be read as the next request's."""
    refusal = b'{"error":{"message":"request too large"}}'

    async def answers_first_then_reads_on(reader, writer):
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: %d\r\n\r\n" % len(refusal))
            await writer.drain()
            await reader.readexactly(length)       # all of it, then the answer's body
            writer.write(refusal)
            await writer.drain()

    server = await asyncio.start_server(answers_first_then_reads_on, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with client() as c:
            async with asyncio.timeout(10):
                assert await get_body(c, url, b"x" * (8 * 1024 * 1024), via=http1.Via(None, "up")) == (413, refusal)
            assert c.connection_counts() == {"up": (0, 0)}
    finally:
        server.close()


@contextmanager
def loop_must_turn(within: float):
    """A busy loop that never awaits would hang the test (and every wait_for in it) for good:
    an alarm breaks into it instead."""
    def stuck(signum, frame):
        raise AssertionError(f"the event loop did not turn for {within} s")
    previous = signal.signal(signal.SIGALRM, stuck)
    signal.setitimer(signal.ITIMER_REAL, within)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("pieces", [
    # both framings at once: refused by the parser, then more of the body comes
    (b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 20\r\ntransfer-encoding: chunked\r\n\r\n",
     b"14\r\nrequest too large!!!\r\n0\r\n\r\n"),
    (b"HTTTP/1.1 413 Too Large\r\n\r\n",),           # no HTTP at all, once
], ids=["two-framings-then-more", "not-http-once"])
async def test_a_malformed_answer_while_the_body_still_goes_out_fails_at_once_without_stalling_the_loop(pieces):
    """An upstream (or a WAF before it) answering a large body on its head alone with something
    that is no HTTP answer: the upstream stopped reading, so the request cannot finish going out,
    and that answer is the failure to name, at once, not after the deadline (nor, with more
    bytes after it, in a loop that never awaits and stops the whole proxy)."""
    async def answer_on_the_head(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.2)
        await asyncio.sleep(5)
        writer.transport.abort()

    server = await asyncio.start_server(answer_on_the_head, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with client() as c:
            with loop_must_turn(4), pytest.raises(http1.MalformedAnswer):
                await asyncio.wait_for(c.send("POST", url, [], b"x" * (32 * 1024 * 1024),
                                              via=http1.Via(None, "up")), 2)
            assert c.connection_counts() == {"up": (0, 0)}
    finally:
        server.close()


async def test_a_408_crossing_a_request_on_a_kept_alive_connection_sends_it_again_on_a_new_one():
    """The upstream times out its idle connection as our next request goes out on it: its 408
    answers no request of ours, which goes again (once) on a fresh connection."""
    async def goodbye(writer, head, body):
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        return "close"

    async def timed_out(writer, head, body):      # a 408 that keeps its connection: an answer
        writer.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    async with RawServer(ok(b"first"), goodbye, ok(b"again"), goodbye, goodbye, ok(b"third"), timed_out) as server, \
            client() as c:
        assert await get_body(c, server.url) == (200, b"first")
        assert await get_body(c, server.url) == (200, b"again")          # the 408, then a new connection
        assert await get_body(c, server.url) == (408, b"")               # a fresh connection's 408 is its answer
        assert await get_body(c, server.url) == (200, b"third")
        assert await get_body(c, server.url) == (408, b"")               # kept alive, not a goodbye: sent once
    assert server.connections == 4 and len(server.requests) == 7


@pytest.mark.parametrize("goodbye, linger", [
    (b"content-length: 0\r\n\r\n", False),
    (b"content-length: 0\r\n\r\n", True),          # the goodbye said, the socket not yet closed
    (b"transfer-encoding: chunked\r\n\r\nzz\r\n", False),   # what follows a goodbye's head, broken or not
], ids=["closed", "closing", "broken-body"])
async def test_a_408_on_a_kept_alive_connection_as_a_large_request_goes_out_sends_it_again_on_a_new_one(goodbye,
                                                                                                         linger):
    """A server closing an idle connection may say 408 first: no answer to this request, which it
    did not read, so it goes again on a fresh connection as a small one does (not a network
    failure held against the upstream)."""
    served = []

    async def keep_alive_then_goodbye(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        served.append(1)
        await reader.readuntil(b"\r\n\r\n")        # the next request's head only
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n" + goodbye)
        await writer.drain()
        await asyncio.sleep(30 if linger else 0.2)
        writer.transport.abort()

    server = await asyncio.start_server(keep_alive_then_goodbye, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with client() as c:
            assert await get_body(c, url) == (200, b"ok")
            async with asyncio.timeout(10):
                assert await get_body(c, url, b"x" * (32 * 1024 * 1024)) == (200, b"ok")
    finally:
        server.close()
    assert served == [1, 1]


async def test_a_body_still_buffered_when_ccswitch_closes_the_connection_is_cut_by_ccswitch_not_malformed():
    async def slow_body(writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"rest!")
        await writer.drain()
        await asyncio.sleep(0.5)
        return "close"

    async with RawServer(slow_body) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        await asyncio.sleep(0.3)                      # "rest!" waits unparsed
        response._connection.close(abort=True)        # a shutdown closes every connection
        with pytest.raises(http1.RemoteProtocolError, match="closed by ccswitch") as caught:
            await response.aread()
        assert not isinstance(caught.value, http1.MalformedAnswer)


@pytest.mark.parametrize("target", ["/a b", "/a\r\nX-Injected: 1", "/a\x00"])
def test_a_target_that_would_split_the_request_line_is_never_written(target):
    from ccswitch.net.request_head import request_head
    with pytest.raises(ValueError):
        request_head("GET", target, [("host", "x")])


class _AnswersThenCloses(asyncio.Transport):
    """A TLS connection as asyncio hands it over: the upstream's early answer and its close come
    in one read, while the request body is still going out."""

    def __init__(self, protocol, answer: bytes) -> None:
        super().__init__()
        self.protocol, self.answer, self.written, self.closing = protocol, answer, 0, False

    def write(self, data):
        self.written += len(data)
        if self.written > 65536:
            self.protocol.pause_writing()

            def answer():
                self.protocol.data_received(self.answer)
                self.protocol.eof_received()
            asyncio.get_running_loop().call_soon(answer)

    def get_write_buffer_size(self):
        return self.written

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True

    abort = close

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


async def test_an_early_answer_that_cannot_be_decoded_gives_its_connection_back():
    # its UndecodableBody left the connection counted as in use: at max_connections, every
    # later request to the upstream waited for a free one and failed
    answer = (b"HTTP/1.1 413 Payload Too Large\r\ncontent-encoding: compress\r\n"
              b"content-length: 0\r\nconnection: close\r\n\r\n")

    async def open_fake(factory, host, port, context):
        protocol = factory()
        transport = _AnswersThenCloses(protocol, answer)
        protocol.connection_made(transport)
        return transport, protocol
    c = http1.UpstreamClient(connect=open_fake)
    via = http1.Via(upstream="up", max_connections=1)
    try:
        for _ in range(3):
            with pytest.raises(http1.UndecodableBody):
                await c.send("POST", "http://up.example/v1/messages", [], b"x" * 1_000_000, via=via,
                             connect_timeout=0.5)
            assert c.connection_counts().get("up", (0, 0)) == (0, 0)
    finally:
        await c.aclose()


async def test_a_compressed_body_coming_in_several_reads_is_decoded_whole_without_error():
    """Only the body's end finishes the decoder: a piece before it is no truncated stream."""
    packer = zlib.compressobj(wbits=31)
    first, second = b"event: a\ndata: {}\n\n", b"event: message_stop\ndata: {}\n\n"
    head_part = packer.compress(first) + packer.flush(zlib.Z_SYNC_FLUSH)
    rest = packer.compress(second) + packer.flush()

    async def reply(writer, head, body):
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {len(head_part) + len(rest)}\r\n"
                     "content-encoding: gzip\r\n\r\n".encode() + head_part)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(rest)
        await writer.drain()
    async with RawServer(reply) as server, client() as c:
        response = await c.send("POST", server.url, [], b"{}")
        assert [chunk async for chunk in response.aiter_bytes()] == [first, second]


def test_a_head_of_many_short_fields_is_measured_as_its_bytes_on_the_wire():
    # 6000 fields of 10 characters are 60,000 without their ": " and line ends, 84,000 with them
    connection = fed_in_one_read(b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-f-%05d: v\r\n" % i for i in range(6000))
                                 + b"content-length: 2\r\n\r\nok")
    with pytest.raises(http1.MalformedAnswer, match="the response head is over 64 KB"):
        connection.poll_event()


def test_each_head_is_measured_alone_an_early_hints_head_before_the_answer_s_not_added_to_it():
    from ccswitch.net.connection import Head

    fields = b"".join(b"x-filler-%d: %s\r\n" % (i, b"f" * 8000) for i in range(5))     # 40 KB: under 64 KB
    connection = fed_in_one_read(b"HTTP/1.1 103 Early Hints\r\n" + fields + b"\r\n"
                                 + b"HTTP/1.1 200 OK\r\n" + fields + b"content-length: 2\r\n\r\nok")
    head = connection.poll_event()
    assert isinstance(head, Head) and head.status_code == 200 and connection.poll_event() == b"ok"
