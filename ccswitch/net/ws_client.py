"""A client WebSocket to an upstream reached over its own Responses WebSocket (`websocket: true`):
wsproto over an asyncio stream, verified TLS as for the HTTP client, permessage-deflate offered.

A reader task answers the upstream's pings and queues its text messages, so a socket idle
between turns (Codex running a tool) stays alive; `receive` hands out the next message and,
once the socket closed, a TransportError the dialer classifies like any other network failure.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ccswitch.net import http1
from ccswitch.wire.headers import from_wire, to_wire

_READ = 64 * 1024
_CLOSED = object()      # queued once the socket is gone: wakes whoever waits in `receive`
#: the largest message taken from an upstream (characters, once inflated: a `response.completed`
#: holds a whole answer), and the most its unread messages may hold: a relay that sends on and
#: on while nobody reads, or a small deflated frame that inflates a thousandfold, is cut off
MAX_MESSAGE = 64 * 1024 * 1024
MAX_UNREAD = 2 * MAX_MESSAGE


class _TooMuch(Exception):
    """The upstream sent more than a WebSocket client here holds."""

#: (protocol_factory, host, port, tls context or None) -> (transport, protocol), as http1.open_tcp
OpenTransport = Callable[..., Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]]


class HandshakeRefused(http1.ConnectError):
    """The upstream answered the upgrade with an HTTP status instead of 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"WebSocket handshake refused with HTTP {status}")
        self.status = status


class WsClient:
    """One open client WebSocket; made by `WsClient.open`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: WSConnection,
                 headers: list[tuple[str, str]]) -> None:
        self._reader, self._writer, self._ws = reader, writer, ws
        self.headers = headers                   # the 101 answer's own headers
        self.closed = False
        self._messages: asyncio.Queue = asyncio.Queue()
        self._parts: list[str] = []
        self._partial = 0                        # characters of the message being gathered
        self._unread = 0                         # characters queued and not yet received
        self._why = "the upstream closed the connection"
        self._lost: BaseException | None = None
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url: str, headers: list[tuple[str, str]], *, tls: ssl.SSLContext | None,
                   timeout: float, open_transport: OpenTransport = http1.open_tcp,
                   through: str | None = None) -> WsClient:
        """Connect to an http(s) `url` (spoken as ws(s)) and complete the handshake within `timeout`.
        `tls` is the context for https (None: certifi's roots, as the HTTP client's default);
        `through`: the proxy `open_transport` tunnels through, as it may be shown (a timeout names it).
        Raises http1.ConnectError (HandshakeRefused, ConnectTimeout) or another TransportError."""
        (scheme, host, port), target, shown = http1.split_url(url)
        context = (tls or _default_tls()) if scheme == "https" else None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_READ, loop=loop)
        writer: asyncio.StreamWriter | None = None
        ws = WSConnection(ConnectionType.CLIENT)
        opened = False           # past the proxy: a timeout from here on is the upstream's silence
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await open_transport(
                    lambda: asyncio.StreamReaderProtocol(reader, loop=loop), host, port, context)
                opened = True
                writer = asyncio.StreamWriter(transport, protocol, reader, loop)
                writer.write(ws.send(Request(host=shown, target=target, extensions=[PerMessageDeflate()],
                                             extra_headers=to_wire(headers))))
                await writer.drain()
                accepted = await _handshake(reader, ws)
        except BaseException as exc:
            if writer is not None:
                writer.close()
            error, cause = _connect_error(exc, host, port, None if opened else through,
                                          in_tunnel=getattr(open_transport, "tunnel_open", False))
            if error is exc:
                raise
            raise error from cause
        return cls(reader, writer, ws, from_wire(accepted.extra_headers))

    # ---------------------------------------------------------------- messages

    async def send(self, text: str) -> None:
        if self.closed:
            raise http1.WriteError("the upstream's WebSocket is closed")
        try:
            self._writer.write(self._ws.send(TextMessage(data=text)))
            await self._writer.drain()
        except (OSError, LocalProtocolError) as exc:
            raise http1.WriteError(f"sending on the upstream's WebSocket: {exc}") from exc

    async def receive(self) -> str:
        """The next text message; a TransportError once the socket is closed and drained."""
        item = await self._messages.get()
        if item is _CLOSED:
            self._messages.put_nowait(_CLOSED)
            raise self._error()
        self._unread -= len(item)
        return item

    def poll(self) -> str | None:
        """The next text message if one is here already, else None (never waits)."""
        try:
            item = self._messages.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if item is _CLOSED:
            self._messages.put_nowait(_CLOSED)
            return None
        self._unread -= len(item)
        return item

    def idle(self) -> bool:
        """Open, with nothing unread: fit for a new turn."""
        return not self.closed and self._messages.empty()

    def close(self) -> None:
        """Say goodbye (a close frame, flushed as the transport closes) and stop reading."""
        if not self.closed and self._ws.state is ConnectionState.OPEN:
            self._writer.write(self._ws.send(CloseConnection(code=1000)))
        self.closed = True
        self._task.cancel()
        self._writer.close()

    # ---------------------------------------------------------------- the reader

    async def _read(self) -> None:
        try:
            while True:
                for event in self._ws.events():
                    if isinstance(event, TextMessage):
                        self._take(event)
                    elif isinstance(event, Ping):
                        self._writer.write(self._ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self._why = f"the upstream closed its WebSocket ({event.code}" + \
                                    (f": {event.reason})" if event.reason else ")")
                        if self._ws.state is ConnectionState.REMOTE_CLOSING:
                            self._writer.write(self._ws.send(event.response()))
                        return
                data = await self._reader.read(_READ)
                if not data:
                    return
                self._ws.receive_data(data)
        except _TooMuch as exc:
            self._lost = exc
            if self._ws.state is ConnectionState.OPEN:
                self._writer.write(self._ws.send(CloseConnection(code=1009, reason="message too big")))
        except (OSError, RemoteProtocolError, LocalProtocolError) as exc:
            self._lost = exc        # kept for `receive`, which reports it as the turn's failure
        finally:
            self.closed = True
            self._messages.put_nowait(_CLOSED)
            self._writer.close()

    def _take(self, event: TextMessage) -> None:
        self._parts.append(event.data)
        self._partial += len(event.data)
        if self._partial > MAX_MESSAGE:
            raise _TooMuch(f"the upstream sent a WebSocket message over {MAX_MESSAGE // 2 ** 20} MiB")
        if event.message_finished:
            message = "".join(self._parts)
            self._parts, self._partial = [], 0
            self._unread += len(message)
            if self._unread > MAX_UNREAD:
                raise _TooMuch(f"the upstream sent over {MAX_UNREAD // 2 ** 20} MiB of WebSocket messages "
                               "nobody asked for")
            self._messages.put_nowait(message)

    def _error(self) -> http1.TransportError:
        if isinstance(self._lost, OSError):     # a reset rather than an orderly close
            error: http1.TransportError = http1.ReadError(f"connection lost: {self._lost}")
            error.__cause__ = self._lost
            return error
        if isinstance(self._lost, _TooMuch):
            return http1.RemoteProtocolError(str(self._lost))
        if self._lost is not None:
            return http1.RemoteProtocolError(f"the upstream broke the WebSocket protocol: {self._lost}")
        return http1.RemoteProtocolError(self._why)


async def _handshake(reader: asyncio.StreamReader, ws: WSConnection) -> AcceptConnection:
    while True:
        data = await reader.read(_READ)
        ws.receive_data(data or None)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return event           # anything after it stays in `ws` for the reader task
            if isinstance(event, RejectConnection):
                raise HandshakeRefused(event.status_code)
        if not data:
            raise http1.RemoteProtocolError("the upstream closed the connection during the WebSocket handshake")


def _connect_error(exc: BaseException, host: str, port: int, through: str | None, *,
                   in_tunnel: bool = False) -> tuple[BaseException, BaseException]:
    """(what a failed open is in the terms the dialer classifies, its cause); anything else,
    cancellation included, is passed through as it is.  `in_tunnel`: the proxy had opened its
    tunnel (a timeout before the socket was open was the TLS handshake inside it)."""
    if isinstance(exc, TimeoutError):
        return http1.ConnectTimeout(f"opening a WebSocket to {host}:{port} timed out", through,
                                    in_tunnel=in_tunnel and through is not None), exc
    cause = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc   # every address failed: the first
    if isinstance(cause, LocalProtocolError | UnicodeEncodeError):   # its text quotes what it refused: a key
        return http1.ConnectError(f"cannot open the WebSocket: {type(cause).__name__} on a header it sends"), cause
    if isinstance(cause, RemoteProtocolError):   # wsproto's: the answer to the upgrade is no handshake
        return http1.ConnectError(f"the upstream's WebSocket handshake is broken ({cause})"), cause
    if isinstance(cause, OSError):
        return http1.ConnectError(f"{type(cause).__name__}: {cause}"), cause
    return exc, exc


_tls: list[ssl.SSLContext] = []


def _default_tls() -> ssl.SSLContext:
    if not _tls:
        _tls.append(http1.ssl_context_for())
    return _tls[0]
