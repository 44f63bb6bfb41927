"""Turns of a bridged Codex socket sent to upstreams over their own Responses WebSocket
(`websocket: true`) instead of HTTPS + SSE.

Per client socket (`UpstreamSockets`): at most one socket per upstream, opened on first use and
closed with the client socket.  A turn goes out as one `response.create` frame (`create_frame`):
with `previous_response_id` and only the turn's new items when that very socket completed that
response, in full otherwise -- after a failover to it, on a new socket, after an error.  An
upstream never sees an id it did not issue on that socket.

The socket's event frames come back through `TurnResponse`, which the dialer reads like an HTTP
response: a 200 SSE stream for the pump, or, for an error frame before any other event, that
error's status with a JSON error body, so the attempt loop judges and fails over as for HTTPS.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ccswitch.config.models import Upstream
from ccswitch.dial.render import OutgoingRequest
from ccswitch.net import http1
from ccswitch.net.ws_client import HandshakeRefused, OpenTransport, WsClient
from ccswitch.vocab import Protocol
from ccswitch.wire.exchange import RenderError, json_text
from ccswitch.wire.protocols import Kind, classify_event, error_object, in_stream_status
from ccswitch.wire.sse import Event, format_event
from ccswitch.wire.ws_chain import Turn

log = logging.getLogger("ccswitch.websocket")

#: an upgrade answered with one of these: no WebSocket at that URL (an HTTPS-only relay marked
#: `websocket: true`), not a failure of the upstream; its turns go over HTTPS
NO_WEBSOCKET_THERE = frozenset({404, 405, 426, 501})
RECHECK_AFTER = 600.0     # seconds before such an upstream is offered a WebSocket again


class WithoutWebSocket:
    """The `websocket: true` upstreams whose handshake said they have none, each for the account
    the rules gave it then (a new base_url or key asks again) and for RECHECK_AFTER (a 404 of a
    moment, a relay that adds it later, are asked again then)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._refused: dict[str, tuple[tuple, float]] = {}    # name -> (account, until)

    def known(self, upstream: Upstream) -> bool:
        held = self._refused.get(upstream.name)
        return held is not None and held[0] == upstream.fingerprint() and self.clock() < held[1]

    def learn(self, upstream: Upstream, exc: HandshakeRefused) -> bool:
        """Whether `exc` says the upstream has no WebSocket (then remembered, and said once)."""
        if exc.status not in NO_WEBSOCKET_THERE:
            return False
        if not self.known(upstream):
            self._refused[upstream.name] = (upstream.fingerprint(), self.clock() + RECHECK_AFTER)
            log.warning("ccswitch: upstream %s answers a WebSocket with HTTP %d: Codex's turns go to it over "
                        "HTTPS (set websocket: false for it)", upstream.name, exc.status)
        return True

#: request headers that belong to the POST, not to the upgrade (wsproto writes its own handshake)
_NOT_FOR_THE_UPGRADE = frozenset({"content-type", "content-length", "host", "upgrade", "connection"})


def create_frame(body: dict[str, Any], turn: Turn, issued: str | None) -> dict[str, Any]:
    """The `response.create` frame for a socket whose last completed response is `issued`.
    `body` is the full request rendered for the upstream (its model, the full input)."""
    frame = {"type": "response.create", **body}
    frame.pop("previous_response_id", None)
    if turn.previous is not None and turn.previous == issued:
        frame.update(input=list(turn.new_input), previous_response_id=issued)
    return frame


@dataclass(eq=False)
class UpstreamSocket:
    client: WsClient
    url: str
    headers: list[tuple[str, str]]      # opened with these: other ones (a changed key) need a new socket
    issued: str | None = None           # its last completed response: the one id it can continue
    opened_fresh: bool = True           # the 101's headers not yet handed to a turn

    def takes(self, url: str, headers: list[tuple[str, str]]) -> bool:
        return self.client.idle() and self.url == url and self.headers == headers


class UpstreamSockets:
    """One client socket's sockets to `websocket: true` upstreams, by upstream name."""

    def __init__(self) -> None:
        self._open: dict[str, UpstreamSocket] = {}

    def __len__(self) -> int:
        return len(self._open)

    async def send(self, upstream: str, outgoing: OutgoingRequest, turn: Turn, *, tls: ssl.SSLContext | None,
                   connect_timeout: float, open_transport: OpenTransport = http1.open_tcp,
                   through: str | None = None) -> TurnResponse:
        """Send the turn to `upstream` and wait for its first event frame.  A socket kept from an
        earlier turn that turns out closed before answering is replaced once by a new one (the
        upstream may close idle sockets); every other failure is a TransportError."""
        try:
            body = json.loads(outgoing.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise RenderError("the turn's request is not a JSON object", 500)
        headers = [(k, v) for k, v in outgoing.headers if k.lower() not in _NOT_FOR_THE_UPGRADE]
        for fresh in (False, True):
            socket = self._open.get(upstream)
            reused = socket is not None and not fresh and socket.takes(outgoing.url, headers)
            if not reused:
                self.discard(upstream)
                client = await WsClient.open(outgoing.url, headers, tls=tls, timeout=connect_timeout,
                                             open_transport=open_transport, through=through)
                socket = self._open[upstream] = UpstreamSocket(client, outgoing.url, headers)
            assert socket is not None
            frame = create_frame(body, turn, socket.issued)
            socket.issued = None        # until this turn completes, it can continue nothing
            try:
                await socket.client.send(json_text(frame))
                first = await socket.client.receive()
            except http1.TransportError:
                self.discard(upstream)
                if reused:
                    log.debug("ccswitch: %s's kept WebSocket was closed; opening a new one", upstream)
                    continue
                raise
            except BaseException:       # cancelled (the first_byte timeout): its state is unknown
                self.discard(upstream)
                raise
            handshake = socket.client.headers if socket.opened_fresh else []
            socket.opened_fresh = False
            return TurnResponse(self, upstream, socket, first, handshake)
        raise AssertionError("unreachable")

    def discard(self, upstream: str, socket: UpstreamSocket | None = None) -> None:
        """Close `upstream`'s socket (only if it is still `socket`, when given)."""
        current = self._open.get(upstream)
        if current is not None and (socket is None or current is socket):
            del self._open[upstream]
            current.client.close()

    def close(self) -> None:
        """The client socket is gone: so are its upstream sockets."""
        for name in list(self._open):
            self.discard(name)


class TurnResponse:
    """One turn's event frames as an HTTP response (the interface of http1.Response the dialer
    and the pump use): status_code, headers, header(), aiter_bytes(), aread(), finish(), aclose()."""

    def __init__(self, sockets: UpstreamSockets, upstream: str, socket: UpstreamSocket, first: str,
                 handshake: list[tuple[str, str]]) -> None:
        self._sockets, self._upstream, self._socket = sockets, upstream, socket
        self._first: str | None = first
        self._whole: bytes | None = None      # an error answered before any event
        self._ended = False
        event = _json(first)
        if isinstance(event, dict) and event.get("type") == "error":
            self.status_code = in_stream_status(event)
            self.headers = [("content-type", "application/json")]
            error = error_object(event)
            if not isinstance(error, dict):
                error = {"type": "api_error", "message": str(event.get("message") or "error")}
            self._whole, self._first, self._ended = json.dumps({"error": error}).encode(), None, True
        else:
            self.status_code = 200
            self.headers = [("content-type", "text/event-stream"), *handshake]

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        """The frames that arrived so far as SSE events, in one piece, up to the turn's end.
        A socket that closes first raises a TransportError (the pump's network failure)."""
        if self._whole is not None:
            whole, self._whole = self._whole, None
            return whole
        if self._ended:
            raise StopAsyncIteration
        client = self._socket.client
        text = self._first if self._first is not None else await client.receive()
        self._first = None
        out = []
        while text is not None:
            out.append(self._event(text))
            if self._ended:
                break
            text = client.poll()
        return b"".join(out)

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self])

    async def finish(self, timeout: float) -> None:
        """A turn ends at its last event: there is no body's end to wait for."""

    async def aclose(self) -> None:
        """A turn left before its end leaves the socket mid-response: it is closed, not reused."""
        if not self._ended:
            self._ended = True
            self._sockets.discard(self._upstream, self._socket)

    def _event(self, text: str) -> bytes:
        body = _json(text)
        kind = body.get("type") if isinstance(body, dict) and isinstance(body.get("type"), str) else None
        event = Event(kind or "message", text)
        if kind is not None and classify_event(Protocol.RESPONSES, event) in (Kind.TERMINAL, Kind.ERROR):
            self._ended = True
            response = body.get("response") if isinstance(body.get("response"), dict) else {}
            issued = response.get("id") if kind == "response.completed" else None
            self._socket.issued = issued if isinstance(issued, str) else None
        return format_event(text, kind)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
