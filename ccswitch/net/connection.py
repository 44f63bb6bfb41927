"""One upstream socket: an asyncio protocol that hands bytes to h11 only when it asks for
more (so the socket can be paused under a slow reader), and the transport errors the dialer
classifies.  The client, its pool and the response body are in net.http1."""

from __future__ import annotations

import asyncio
import ssl

import h11

from ccswitch.net.pool import PoolKey

_READ_HIGH_WATER = 256 * 1024         # buffered, unparsed bytes before the socket is paused
_MAX_HEADER_BYTES = 64 * 1024

Origin = tuple[str, str, int]         # scheme, host, port


class TransportError(Exception):
    """The upstream could not be reached, or broke the exchange."""


class ConnectError(TransportError):
    pass


class ConnectTimeout(ConnectError):
    def __init__(self, message: str, through: str | None = None) -> None:
        super().__init__(message)
        self.through = through      # the proxy it went through, as it may be shown


class ProxyFailure(ConnectError):
    """The outgoing proxy refused, failed its authentication or could not reach the upstream;
    the message names the proxy, never its credentials."""


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


class Connection(asyncio.Protocol):
    """One socket.  Bytes are handed to h11 only when it asks for more, so the socket can
    be paused while a slow consumer lags behind a fast upstream."""

    # slots: one per open upstream connection, kept alive in the pool between requests
    __slots__ = ("_buffered", "_chunks", "_drain", "_eof", "_eof_fed", "_lost", "_read_paused", "_starved",
                 "_waiter", "_write_paused", "h11", "idle_since", "in_use", "key", "origin", "received_any", "reused",
                 "tls", "transport")

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self.origin: Origin = key[2]
        self.tls: ssl.SSLContext | None = None
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEADER_BYTES)
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
        # h11 said NEED_DATA and has been given nothing since, nor moved on: no need to ask it again
        # (a streamed body's every piece would ask it twice more for nothing)
        self._starved = False
        self._waiter: asyncio.Future | None = None
        self._drain: asyncio.Future | None = None

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

    # ---------------------------------------------------------------- used by the client

    def usable(self, idle_cutoff: float) -> bool:
        return (not self._eof and self.clean() and self.idle_since >= idle_cutoff
                and self.h11.our_state is h11.IDLE and not self.transport.is_closing())

    def closed(self) -> bool:
        """The other side is gone (its end or a reset came): not worth a place in the pool."""
        return self._eof

    def clean(self) -> bool:
        """No bytes beyond the last response, neither ours nor inside h11: else the next
        request on this connection would read them as its answer."""
        return not self._chunks and not self.h11.trailing_data[0]

    def close(self, *, abort: bool = False) -> None:
        """`abort` for a connection left mid-message: no TLS goodbye to wait for."""
        self._eof = True
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    async def send(self, data: bytes) -> bool:
        """Write `data`: `sent`."""
        if self._eof:
            raise WriteError("connection closed before the request was sent")
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

    def encode(self, *events) -> bytes:
        """Our events as bytes to send (h11 moves on: whatever it holds is read afresh)."""
        self._starved = False
        return b"".join([self.h11.send(event) for event in events])

    def start_next_cycle(self) -> None:
        self._starved = False
        self.h11.start_next_cycle()

    def poll_event(self):
        """The next h11 event if it can be had without waiting, else h11.NEED_DATA."""
        while True:
            if not self._starved:
                try:
                    event = self.h11.next_event()
                except h11.RemoteProtocolError as exc:
                    raise self._broken(str(exc)) from exc
                if event is not h11.NEED_DATA:
                    return event
                self._starved = True
            if self._chunks:
                data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                if self._read_paused:
                    self._read_paused = False
                    self.transport.resume_reading()
                self.h11.receive_data(data)
                self._starved = False
            elif self._eof and not self._eof_fed:
                if isinstance(self._lost, Exception):   # a reset is not the end of a body
                    raise self._broken("connection lost")
                self._eof_fed = True
                self.h11.receive_data(b"")
                self._starved = False
            else:
                return h11.NEED_DATA

    async def next_event(self):
        while (event := self.poll_event()) is h11.NEED_DATA:
            await self.more()
        return event

    def more(self) -> asyncio.Future:
        """A future done when bytes (or the end) arrive: a body read awaits it directly, without
        a coroutine of its own per read."""
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def _broken(self, message: str) -> TransportError:
        if isinstance(self._lost, OSError):   # a reset rather than an orderly close
            error = ReadError(f"connection lost: {self._lost}")
            error.__cause__ = self._lost
            return error
        return RemoteProtocolError(message)
