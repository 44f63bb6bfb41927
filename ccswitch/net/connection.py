"""One upstream socket: an asyncio protocol whose bytes are parsed (llhttp, through httptools)
only when the client asks for more, so the socket can be paused under a slow reader; the
events it reads; and the transport errors the dialer classifies.  The client, its pool and the
response body are in net.http1."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

import httptools

from ccswitch.net.pool import PoolKey

_READ_HIGH_WATER = 256 * 1024         # buffered, unparsed bytes before the socket is paused
_MAX_HEADER_BYTES = 64 * 1024

Origin = tuple[str, str, int]         # scheme, host, port


class TransportError(Exception):
    """The upstream could not be reached, or broke the exchange."""


class ConnectError(TransportError):
    pass


class Unsendable(TransportError):
    """The request cannot go on the wire as it is (its head holds what HTTP cannot carry):
    nothing was sent, so no upstream failed."""


class ConnectTimeout(ConnectError):
    def __init__(self, message: str, through: str | None = None, *, in_tunnel: bool = False) -> None:
        super().__init__(message)
        self.through = through      # the proxy it went through, as it may be shown
        self.in_tunnel = in_tunnel  # the proxy had opened its tunnel: the TLS handshake inside it timed out


class ProxyFailure(ConnectError):
    """The outgoing proxy refused, failed its authentication or could not reach the upstream;
    the message names the proxy, never its credentials.  `credentials`: it refused the rules'."""

    def __init__(self, message: str, *, credentials: bool = False) -> None:
        super().__init__(message)
        self.credentials = credentials


class NoFreeConnection(ConnectError):
    """Every connection the upstream may hold (its max_connections) stayed busy."""


class ReadError(TransportError):
    pass


class WriteError(TransportError):
    pass


class UndecodableBody(ReadError):
    """The body's content-encoding is one we cannot decode, or the encoded body is broken."""


class RemoteProtocolError(TransportError):
    """The upstream closed early or spoke something other than HTTP/1.1."""


class MalformedAnswer(RemoteProtocolError):
    """What the upstream sent is not an HTTP/1.1 answer (its status line, a header, the framing)."""


class Head:
    """A response's status and headers (names lower-cased, values as sent)."""

    __slots__ = ("headers", "status_code")

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code, self.headers = status_code, headers


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: what `poll_event` returns besides a Head and a body's bytes
NEED_DATA = _Marker("NEED_DATA")    # nothing more without waiting for the socket
END = _Marker("END")                # the body's end: the answer is whole
CLOSED = _Marker("CLOSED")          # the upstream closed before a byte of an answer

# where a connection is in its exchange
_IDLE, _HEAD, _BODY, _DONE = range(4)


class Connection(asyncio.Protocol):
    """One socket.  Bytes are parsed only when the client asks for more, so the socket can
    be paused while a slow consumer lags behind a fast upstream.  The parser is llhttp (C):
    a streamed piece costs it about a microsecond, where h11 took seven."""

    # slots: one per open upstream connection, kept alive in the pool between requests
    __slots__ = ("_buffered", "_chunks", "_dirty", "_drain", "_eof", "_eof_fed", "_events", "_failure",
                 "_head_bytes", "_head_started", "_headers", "_keep_alive", "_lost", "_parser", "_phase",
                 "_read_paused", "_unparsed", "_until_close", "_waiter", "_write_paused", "idle_since", "in_use", "key", "origin",
                 "received_any", "reused", "tls", "transport")

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self.origin: Origin = key[2]
        self.tls: ssl.SSLContext | None = None
        self.transport: asyncio.Transport | None = None
        self.in_use = False
        self.reused = False
        self.received_any = False
        self.idle_since = 0.0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._eof_fed = False
        self._lost: BaseException | None = None
        self._read_paused = False
        self._write_paused = False
        self._waiter: asyncio.Future | None = None
        self._drain: asyncio.Future | None = None
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        # as h11 read answers: lines ended by LF alone, blanks after a chunk's size
        self._parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True, lenient_spaces_after_chunk_size=True)
        self._events: deque = deque()
        self._phase = _IDLE
        self._keep_alive = True
        self._head_started = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0               # of the head's fields: one that came in one read is measured too
        # bytes fed since the parser last gave a head or a piece of body: a head, or a chunked
        # body's framing and trailers (which llhttp gathers for fields ccswitch drops), kept small
        self._unparsed = 0
        self._failure: RemoteProtocolError | None = None   # raised once the events before it are read
        self._dirty = False                # bytes came after the answer: the next request would read them
        self._until_close = False          # the answer's body has neither a length nor chunks

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.in_use:   # an idle connection talking: it cannot be trusted with a request
            self._eof = True
            self.transport.close()
            return
        self.received_any = True
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _READ_HIGH_WATER and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()
        if self._drain is not None and not self._drain.done():   # the sender looks whether it is an answer
            self._drain.set_result(None)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ---------------------------------------------------------------- the parser's callbacks

    def on_message_begin(self) -> None:
        if self._phase is _DONE:      # a second answer to one request
            self._dirty = True
        else:
            self._head_started = True
            self._headers = []
            self._head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase is _HEAD:      # not a chunked body's trailers
            self._headers.append((name.lower(), value.rstrip(b" \t")))   # a value ends at its last visible byte
            self._head_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        if self._phase is not _HEAD:
            return
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:  # llhttp takes any three digits
            self._fail(f"not an HTTP/1.1 answer: status {status}")
            return
        if self._head_bytes > _MAX_HEADER_BYTES:
            self._fail(f"the response head is over {_MAX_HEADER_BYTES // 1024} KB")
            return
        if status < 200:              # 100 Continue, 103 Early Hints: the answer follows
            return
        framed, codings = False, []
        for name, value in self._headers:
            if name == b"content-length":
                framed = True
            elif name == b"transfer-encoding":      # its lines are one list (`gzip` + `chunked`)
                framed = True
                codings.append(value)
        if codings and not _only_chunked(b",".join(codings)):
            # llhttp would read `gzip` alone to the close and then call it cut short, and pass on
            # `gzip, chunked` still compressed: h11 took chunked alone, and so does ccswitch
            self._fail("not an HTTP/1.1 answer: a transfer-encoding other than chunked")
            return
        self._phase = _BODY
        self._unparsed = 0
        self._until_close = status not in (204, 304) and not framed
        self._events.append(Head(status, self._headers))
        self._headers = []

    def on_body(self, body: bytes) -> None:
        if self._phase is _BODY:
            self._unparsed = 0
            self._events.append(body)

    def on_message_complete(self) -> None:
        if self._phase is not _BODY:  # an informational answer's end, or a second answer's
            return
        # HTTP/1.0, or `connection: close` on either side: the upstream closes after this answer
        self._keep_alive = (self._keep_alive and self._parser.should_keep_alive()
                            and self._parser.get_http_version() == "1.1")
        self._phase = _DONE
        self._events.append(END)

    # ---------------------------------------------------------------- used by the client

    def usable(self, idle_cutoff: float) -> bool:
        return (not self._eof and self.clean() and self.idle_since >= idle_cutoff
                and self._phase is _IDLE and not self.transport.is_closing())

    def closed(self) -> bool:
        """The other side is gone (its end or a reset came): not worth a place in the pool."""
        return self._eof

    def clean(self) -> bool:
        """No bytes beyond the last response, neither ours nor in the parser: else the next
        request on this connection would read them as its answer."""
        return not self._chunks and not self._dirty

    def reusable(self) -> bool:
        """The answer is whole and both sides keep the connection open."""
        return self._phase is _DONE and self._keep_alive and self.clean()

    def close(self, *, abort: bool = False) -> None:
        """`abort` for a connection left mid-message: no TLS goodbye to wait for.  Nothing is read
        from it after this."""
        self._eof = True
        self._parser = None    # it holds this connection's callbacks: no cycle outlives the socket
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    async def send(self, *parts: bytes) -> bool:
        """Write the `parts`, in turn: `sent`."""
        if self._eof:
            raise WriteError("connection closed before the request was sent")
        for data in parts:
            self.transport.write(data)
        return not self._write_paused or await self.sent()

    async def sent(self) -> bool:
        """True once what was written is on its way; False as soon as bytes come back while
        some still wait for the upstream to read them: an upstream may answer on the head
        alone (a 413 for a body over its limit) and never read the rest."""
        while self._write_paused:
            if self._eof:
                raise WriteError("connection closed while sending the request")
            if self._chunks:
                return False
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain
        return True

    def unsent(self) -> bool:
        """Request bytes still wait to go out: the connection cannot take another request."""
        return self.transport.get_write_buffer_size() > 0

    def expect_answer(self, keep_alive: bool = True) -> None:
        """A request is about to go out: read its answer (`keep_alive` False: ours said close)."""
        self._phase = _HEAD
        self._keep_alive = keep_alive

    def answered_early(self) -> None:
        """The answer's head came before all of the request went out: an upstream that reads on
        after it may take the rest of our body for a request of its own, so none goes after."""
        self._keep_alive = False

    def start_next_cycle(self) -> None:
        self._phase = _IDLE
        self._head_started = False
        self._unparsed = 0

    def poll_event(self):
        """The next event if it can be had without waiting, else NEED_DATA: a Head, a piece of
        the body (bytes), END, or CLOSED."""
        events = self._events
        while not events:
            if self._failure is not None:
                raise self._broken(self._failure)
            if self._chunks and self._phase is not _DONE:   # after the answer they stay, unclean
                data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                if self._read_paused:
                    self._read_paused = False
                    self.transport.resume_reading()
                self._feed(data)
            elif self._eof and not self._eof_fed:
                if isinstance(self._lost, Exception):   # a reset is not the end of a body
                    raise self._broken("connection lost")
                self._eof_fed = True
                self._at_eof()
            elif self._eof_fed and self._phase is _HEAD:
                return CLOSED
            else:
                return NEED_DATA
        return events.popleft()

    async def next_event(self):
        while (event := self.poll_event()) is NEED_DATA:
            await self.more()
        return event

    def more(self) -> asyncio.Future:
        """A future done when bytes (or the end) arrive: a body read awaits it directly, without
        a coroutine of its own per read."""
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def _feed(self, data: bytes) -> None:
        if self._parser is None:      # ccswitch closed it (a shutdown): not the upstream's doing
            self._failure = RemoteProtocolError("the connection was closed by ccswitch")
            return
        self._unparsed += len(data)      # judged below only in a head or a body (a new cycle starts it at 0)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("the upstream switched protocols")
        except httptools.HttpParserError as exc:   # llhttp's reasons are its own fixed words
            self._fail(f"not an HTTP/1.1 answer: {exc}")
        if self._unparsed > _MAX_HEADER_BYTES and (self._phase is _HEAD or self._phase is _BODY):
            self._fail(f"the response head is over {_MAX_HEADER_BYTES // 1024} KB" if self._phase is _HEAD
                       else f"the response's chunk framing or trailers are over {_MAX_HEADER_BYTES // 1024} KB")

    def _fail(self, message: str) -> None:
        if self._phase is _DONE:      # garbage after a whole answer: only the connection is spoilt
            self._dirty = True
        elif self._failure is None:
            self._failure = MalformedAnswer(message)

    def _at_eof(self) -> None:
        """The upstream closed its side: the end of a body that runs to the close, else a break
        (CLOSED, when not a byte of a head came)."""
        if self._phase is _HEAD and self._head_started:
            self._failure = RemoteProtocolError("the upstream closed the connection in the middle of the response head")
        elif self._phase is _BODY:
            if self._until_close:   # the parser takes a body without a length or chunks as running to the close
                self._keep_alive = False
                self._phase = _DONE
                self._events.append(END)
            else:
                self._failure = RemoteProtocolError("the upstream closed the connection before the body's end")

    def _broken(self, failure: str | RemoteProtocolError) -> TransportError:
        """The error to raise: a reset rather than an orderly close says so, whatever else broke."""
        if isinstance(self._lost, OSError):
            error = ReadError(f"connection lost: {self._lost}")
            error.__cause__ = self._lost
            return error
        # a new one each time: raised again, the same object would grow its traceback and take
        # on another context, which the dialer reads when it names the failure
        return RemoteProtocolError(failure) if isinstance(failure, str) else type(failure)(*failure.args)


def _only_chunked(codings: bytes) -> bool:
    """`chunked` alone, as llhttp reads it: an empty item before it is nothing (`, chunked`), one
    after it (`chunked,`) makes llhttp read the body to the close."""
    items = [item.strip().lower() for item in codings.split(b",")]
    return items[-1] == b"chunked" and not any(items[:-1])
