"""A lean, pooled HTTP/1.1 client for upstream calls (an asyncio protocol over llhttp).

Why not httpx: on the proxy's hot path httpx + httpcore cost about 3.5 ms of CPU per
small request under concurrency (every checkout polls each idle pooled socket through
anyio), which held ccswitch to under half of bare mitmdump's throughput.  This client
does only what the dialer needs: keep-alive pooling per origin (and per upstream and proxy,
with a cap on each upstream's connections: net.pool), tunnels through outgoing proxies
(net.proxy), verified TLS, Content-Length request bodies, gzip/deflate/br/zstd response
decoding, read flow control (each socket: net.connection), and errors the dialer can
classify.  Read deadlines belong to the dialer (first_byte, total, idle), so nothing here
times out a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import certifi

from ccswitch.net.connection import (
    CLOSED,
    END,
    NEED_DATA,
    ConnectError,
    Connection,
    ConnectTimeout,
    Head,
    MalformedAnswer,
    NoFreeConnection,
    Origin,
    ProxyFailure,
    ReadError,
    RemoteProtocolError,
    TransportError,
    UndecodableBody,
    Unsendable,
    WriteError,
)
from ccswitch.net.inflate import ACCEPT_ENCODING, DecodeError, Inflater
from ccswitch.net.pool import NoRoom, Pool, PoolKey
from ccswitch.net.proxy import Proxy, ProxyError, open_through
from ccswitch.net.request_head import request_head
from ccswitch.wire.headers import from_wire, named_by_connection

# the errors are the client's as much as the socket's: callers name them http1.ReadError etc.
__all__ = ["DIRECT", "ConnectError", "ConnectTimeout", "MalformedAnswer", "NoFreeConnection", "ProxyFailure", "ReadError",
           "RemoteProtocolError", "Response", "TransportError", "UndecodableBody", "Unsendable", "UpstreamClient", "Via",
           "WriteError", "open_tcp", "opener", "split_url", "ssl_context_for"]

_BODYLESS_METHODS = frozenset({"GET", "DELETE", "OPTIONS"})
#: a body at least this long is written after its head rather than copied into one piece with it
APART_FROM = 256 * 1024


def ssl_context_for(*, insecure: bool = False, ca_file: str | None = None,
                    ca_dir: str | None = None) -> ssl.SSLContext:
    """certifi's roots, and a CA file or directory given (mitmproxy's `ssl_verify_upstream_trusted_ca`
    / `_confdir`) besides them: a relay's private CA must not make the official API's public
    certificate fail (mitmproxy's own upstreams trust the given CA alone); `insecure` verifies nothing."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file or ca_dir:
        context.load_verify_locations(cafile=ca_file or None, capath=ca_dir or None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


@lru_cache(maxsize=512)
def split_url(url: str) -> tuple[Origin, str, str]:
    """(origin, request target, Host header) of an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, host, port), target, shown if port == default else f"{shown}:{port}"


@dataclass(frozen=True)
class Via:
    """How an upstream is reached: through `proxy` (None: directly), its connections counted
    under `upstream` (None: uncounted) and capped at `max_connections` (None: no cap)."""
    proxy: Proxy | None = None
    upstream: str | None = None
    max_connections: int | None = None


DIRECT = Via()


async def open_tcp(protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int,
                   context: ssl.SSLContext | None) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
    """A real socket (TLS when `context` is given); the default of `UpstreamClient(connect=)`."""
    loop = asyncio.get_running_loop()
    # no happy_eyeballs_delay: its staggered race trips an assertion under mitmproxy's eager
    # task factory on Python 3.12 (CPython gh-124309); addresses are tried in turn instead
    try:
        return await loop.create_connection(protocol_factory, host, port, ssl=context,
                                            server_hostname=host if context else None, all_errors=True)
    except UnicodeError:   # the name cannot even be looked up (an empty or over-long label)
        raise ConnectError(f"{host!r} is not a valid host name") from None


def opener(proxy: Proxy | None, timeout: float) -> Callable[..., Awaitable[tuple]]:
    """`open_tcp`, or a function like it that tunnels through `proxy` (its failures raised as
    ProxyFailure): for sockets opened outside the pool too, such as an upstream's WebSocket."""
    return open_tcp if proxy is None else _ThroughProxy(proxy, timeout)


class _ThroughProxy:
    """Opens one connection through a proxy; `tunnel_open` says, should it time out, whether the
    proxy had opened the tunnel by then (what timed out was the TLS handshake inside it)."""

    def __init__(self, proxy: Proxy, timeout: float) -> None:
        self.proxy, self.timeout, self.tunnel_open = proxy, timeout, False

    async def __call__(self, protocol_factory, host: str, port: int, context: ssl.SSLContext | None) -> tuple:
        try:
            return await open_through(self.proxy, protocol_factory, host, port, context, self.timeout,
                                      tunnel_open=self._opened)
        except ProxyError as exc:
            raise ProxyFailure(str(exc), credentials=exc.credentials) from None

    def _opened(self) -> None:
        self.tunnel_open = True


class UpstreamClient:
    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, max_idle_per_origin: int = 100,
                 keepalive_expiry: float = 60.0, connect: Callable[..., Awaitable[tuple]] = open_tcp) -> None:
        self._ssl_context = ssl_context     # None: ssl_context_for() on the first https upstream
        self._open_transport = connect      # a seam for direct connections: tests may hand over an in-memory transport
        self._pool = Pool(max_idle_per_origin, keepalive_expiry)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl_context

    @ssl_context.setter
    def ssl_context(self, context: ssl.SSLContext | None) -> None:
        """New TLS settings apply at once: connections made under the old ones are not reused."""
        self._ssl_context = context
        self._pool.discard_idle(lambda connection: connection.tls is not None)

    def connection_counts(self) -> dict[str, tuple[int, int]]:
        """Per upstream named in a `Via`: (connections open, requests waiting for one)."""
        return self._pool.counts()

    async def send(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes = b"", *,
                   connect_timeout: float = 10.0, via: Via = DIRECT,
                   on_slot: Callable[[], object] | None = None) -> Response:
        """Send a request and return once the response headers are in; the body is read
        from the response.  When a kept-alive connection drops before any answer (the upstream
        closed it as the request went out), the request is sent once more on a new connection,
        as browsers and urllib3 do.  An upstream that took the request and then dropped the
        connection without a byte may see it twice; the dialer's own retries are bounded apart.
        Header values are text of one character per byte (`ccswitch.headers`).  At its cap of
        connections, the request waits up to `connect_timeout` for one (NoFreeConnection);
        `on_slot` is called once it has one, or room to open one (a caller's own deadline that
        passes before then was spent in ccswitch's queue, not on the upstream)."""
        if method.upper() == "HEAD":   # the parser would wait for a body an answer to HEAD has not
            raise Unsendable("cannot send this request: HEAD is not supported")
        origin, target, host = split_url(url)
        names = {name.lower() for name, _ in headers}
        extra = [("host", host)]
        if "accept-encoding" not in names:
            extra.append(("accept-encoding", ACCEPT_ENCODING))
        if body or method.upper() not in _BODYLESS_METHODS:
            extra.append(("content-length", str(len(body))))
        if "content-length" in names or "transfer-encoding" in names:
            raise Unsendable("cannot send this request: its body's framing is the client's to set")
        try:
            request, keep_alive = request_head(method, target, extra + list(headers))
        except ValueError as exc:
            raise Unsendable(f"cannot send this request: {exc}") from None
        # one write, one system call; a large body goes after its head instead of into a copy with it
        wire = (request + body,) if len(body) < APART_FROM else (request, body)
        for fresh_retry in (False, True):
            connection = await self._checkout((via.upstream, via.proxy, origin), via.max_connections,
                                              connect_timeout, fresh=fresh_retry, on_slot=on_slot)
            try:
                connection.expect_answer(keep_alive)
                if not await connection.send(*wire) and (head := await _early_answer(connection)) is not None:
                    return Response(self, connection, head)
                head = await _response_head(connection)
                if head.status_code == 408 and connection.reused and not fresh_retry \
                        and "close" in named_by_connection(from_wire(head.headers)):
                    # the upstream's goodbye to a kept-alive connection, crossing our request on the
                    # way: it timed the connection out and closes it, so our request went unread and
                    # goes again on a new connection, as browsers do.  A 408 that keeps the
                    # connection open is an answer (the dialer's on_status decides)
                    self._discard(connection)
                    continue
                return Response(self, connection, head)
            except TransportError as exc:
                try:
                    # (a goodbye's head was read already: what follows it is no answer to look for)
                    head = _answer_already_in(connection) if type(exc) is WriteError else None
                except TransportError:      # what came back before the write failed is no answer: it says more
                    self._discard(connection)
                    raise
                goodbye = isinstance(exc, _Goodbye) or (head is not None and connection.reused and head.status_code == 408)
                if head is not None and not goodbye:
                    try:
                        return Response(self, connection, head)
                    except BaseException:     # its body cannot be read (UndecodableBody): the slot goes back
                        self._discard(connection)
                        raise
                self._discard(connection)
                # an idle connection's goodbye read nothing of ours, however large: it goes again, as above
                if connection.reused and (goodbye or not connection.received_any) and not fresh_retry:
                    continue
                raise
            except BaseException:
                self._discard(connection)
                raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self._pool.close_all()

    # ---------------------------------------------------------------- the pool

    async def _checkout(self, key: PoolKey, limit: int | None, timeout: float, *,
                        fresh: bool = False, on_slot: Callable[[], object] | None = None) -> Connection:
        try:
            connection = await self._pool.acquire(key, limit, timeout, fresh=fresh)
        except NoRoom:
            raise NoFreeConnection(no_free_connection(timeout, limit)) from None
        if on_slot is not None:
            on_slot()
        if connection is not None:
            connection.reused, connection.received_any, connection.in_use = True, False, True
            return connection
        try:
            connection = await self._connect(key, timeout)
        except BaseException:
            self._pool.abandon(key)
            raise
        self._pool.opened(connection)
        connection.in_use = True
        return connection

    async def _connect(self, key: PoolKey, timeout: float) -> Connection:
        _, proxy, (scheme, host, port) = key
        context = None
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl_context_for()
            context = self._ssl_context
        try:
            async with asyncio.timeout(timeout):
                open_transport = self._open_transport if proxy is None else opener(proxy, timeout)
                _, connection = await open_transport(lambda: Connection(key), host, port, context)
        except TimeoutError as exc:
            if getattr(open_transport, "tunnel_open", False):      # the proxy said yes; nothing came through
                raise ConnectTimeout(f"the TLS handshake with {host}:{port} through proxy {proxy.shown} timed out "
                                     "(the proxy had opened the tunnel)", proxy.shown, in_tunnel=True) from exc
            through = f" through proxy {proxy.shown}" if proxy else ""
            raise ConnectTimeout(f"connecting to {host}:{port}{through} timed out", proxy and proxy.shown) from exc
        except ExceptionGroup as group:   # every address failed: report the first
            first = group.exceptions[0]
            raise ConnectError(f"{type(first).__name__}: {first}") from first
        except OSError as exc:            # DNS, TLS, or the one address refused
            raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        connection.tls = context
        return connection

    def _release(self, connection: Connection) -> None:
        """A response read to its end: keep the connection if both sides allow it."""
        connection.in_use = False
        reusable = (connection.reusable() and connection.tls in (None, self._ssl_context)
                    and not connection.closed() and not connection.unsent())
        if reusable:
            connection.start_next_cycle()
            self._pool.release(connection)
        else:   # request bytes still queued: a plain close would wait for them to go, maybe for good
            self._pool.discard(connection, abort=connection.unsent())

    def _discard(self, connection: Connection, *, abort: bool = True) -> None:
        connection.in_use = False
        self._pool.discard(connection, abort=abort)


def no_free_connection(waited: float, limit: int | None) -> str:
    return f"no free connection within {waited:g} s (all {limit} of max_connections busy)"


def _skip_to_end(connection: Connection) -> bool:
    """Pass over what has arrived of a body nobody reads: True once its end is in."""
    while (event := connection.poll_event()) is not NEED_DATA:
        if event is END:
            return True
    return False


async def _response_head(connection: Connection) -> Head:
    event = await connection.next_event()
    if event is CLOSED:
        raise connection._broken("the upstream closed the connection without a response")
    return event


async def _early_answer(connection: Connection) -> Head | None:
    """The answer that came back while the request still waited to go out, once its head is
    all in; None if the request went out first (its answer is still to be read)."""
    while (head := _answer_already_in(connection)) is None:
        if await connection.sent():
            return None
    if connection.reused and head.status_code == 408:
        raise _Goodbye("the upstream closed its idle connection (408) as the request went out")
    return head


class _Goodbye(WriteError):
    """A kept-alive connection's 408 as a request went out on it: the request went unread."""


def _answer_already_in(connection: Connection) -> Head | None:
    """The head of an answer that came while the request was still going out: an upstream may
    refuse on the head alone (a 413 for a body over its limit) and hang up without reading the
    rest.  Its answer is what it meant, not the failed write.  What came that is no HTTP answer
    (a malformed head) raises at once: it is the upstream's answer too, and waiting for the write
    to go on would wait on an upstream that has stopped reading."""
    if not connection.received_any:
        return None
    event = connection.poll_event()
    if not isinstance(event, Head):
        return None
    connection.answered_early()
    return event


class Response:
    """Status and headers; the body is read once, decoded, by `aiter_bytes` or `aread`."""

    __slots__ = ("_client", "_connection", "_decoder", "_deferred", "_done", "headers", "status_code")

    def __init__(self, client: UpstreamClient, connection: Connection, head: Head) -> None:
        self._client, self._connection = client, connection
        self.status_code: int = head.status_code
        self.headers: list[tuple[str, str]] = from_wire(head.headers)
        self._done = False
        self._deferred: TransportError | None = None
        encoding = (self.header("content-encoding") or "identity").strip().lower()
        try:
            self._decoder = None if encoding == "identity" else Inflater(encoding)
        except DecodeError as exc:
            raise UndecodableBody(str(exc)) from exc

    def header(self, name: str) -> str | None:
        """The first value of a header (names compared case-insensitively)."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        """Everything received so far, in one piece: a burst of small chunks (one per SSE
        event, typically) costs the pump and the client one write, not one each."""
        while not self._done or self._deferred is not None:
            if self._deferred is not None:
                error, self._deferred = self._deferred, None
                raise error
            parts = []
            connection = self._connection
            while (event := connection.poll_event()) is NEED_DATA:
                await connection.more()
            while event is not NEED_DATA:
                if event is END:
                    self._done = True
                    self._client._release(self._connection)
                    break
                parts.append(event)
                try:
                    event = self._connection.poll_event()
                except TransportError as exc:   # hand over what arrived before the failure first
                    self._deferred = exc
                    break
            raw = parts[0] if len(parts) == 1 else b"".join(parts)
            try:
                data = self._decoder.feed(raw) if self._decoder else raw
            except DecodeError as exc:
                raise UndecodableBody(str(exc)) from exc
            if self._done and self._decoder:
                try:
                    data += self._decoder.flush()
                except DecodeError as exc:
                    # what came whole before a missing end is handed over first, as when it came a
                    # read earlier: a stream over at its last event has what it needs either way
                    self._deferred = UndecodableBody(str(exc))
            if data:
                return data
        raise StopAsyncIteration

    async def aread(self, limit: int = 256 * 1024 * 1024) -> bytes:
        chunks, size = [], 0
        async for chunk in self:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ReadError(f"upstream body over {limit} bytes")
        return b"".join(chunks)

    async def finish(self, timeout: float) -> None:
        """Wait up to `timeout` for the end of a body whose content is of no more use (a stream
        over at its last event still owes its last chunk, a moment behind), so the connection
        goes back to the pool; past that, `aclose` closes it."""
        if self._done:
            return
        with contextlib.suppress(TimeoutError, TransportError):
            async with asyncio.timeout(timeout):
                while not self._end_if_in():
                    await self._connection.more()

    async def aclose(self) -> None:
        """Done with the body: the connection goes back if the body's end is already in
        (what was not read is skipped), otherwise it is closed."""
        if self._done:
            return
        with contextlib.suppress(TransportError):
            if self._end_if_in():
                return
        self._done = True
        self._client._discard(self._connection)

    def _end_if_in(self) -> bool:
        """True once the body's end has arrived: the connection is given back."""
        if not _skip_to_end(self._connection):
            return False
        self._done = True
        self._client._release(self._connection)
        return True
