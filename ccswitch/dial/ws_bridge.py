"""Codex's Responses WebSocket, carried: a small WebSocket server on loopback that mitmproxy
hands each accepted upgrade to.

Each `response.create` frame becomes one routed request of the codex route (planned, failed
over before its first event, recorded), sent to an upstream over HTTPS + SSE as a full request
rebuilt from the socket's chain (`wire.ws_chain`), or over a `websocket: true` upstream's own
WebSocket (`dial.ws_upstream`, one per upstream and client socket); the upstream's events go back
as text frames.
Errors travel in-band, as Codex expects: `{"type": "error", "status": N, "error": {...}}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ccswitch.dial.job import Job
from ccswitch.dial.relay import ClientGone
from ccswitch.dial.ws_upstream import UpstreamSockets
from ccswitch.wire.protocols import error_object, in_stream_status
from ccswitch.wire.sse import SSEParser
from ccswitch.wire.ws_chain import Chain, ChainLost, FrameError, Turn

log = logging.getLogger("ccswitch.websocket")

TICKET_HEADER = "x-ccswitch-socket"
_READ = 64 * 1024


@dataclass
class Refusal:
    """ccswitch answers a turn itself (no upstream available, rate limited, over budget)."""
    status: int
    message: str


@dataclass
class Ticket:
    """What the request hook knew about the client's upgrade, for every turn on the socket."""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    context: Any = None                               # the router's own: client headers, session, flow
    turns: int = 0
    # its sockets to `websocket: true` upstreams, closed with it
    upstream_sockets: UpstreamSockets = field(default_factory=UpstreamSockets)


#: (ticket, turn) -> a job to run, or ccswitch's own answer
MakeJob = Callable[[Ticket, Turn], "Job | Refusal"]


def error_frame(status: int, message: str, error: Any = None) -> str:
    body = error if isinstance(error, dict) else {"type": "api_error", "message": message}
    return json.dumps({"type": "error", "status": status, "error": body})


class WsSink:
    """The dialer's sink for one turn: SSE events become text frames; a whole answer (only ever
    an error here, since every turn streams) becomes one in-band error."""

    def __init__(self, send: Callable[[str], Awaitable[None]], chain: Chain, job: Job) -> None:
        self.send, self.chain, self.job = send, chain, job
        self.started = False
        self.broken = False
        self.status = 0
        self.streaming = False
        self.parser = SSEParser()
        self.whole: list[bytes] = []

    async def start(self, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        self.status, self.streaming = status, length is None
        self.started = self.streaming      # a whole answer can still be replaced until it is sent

    async def write(self, data: bytes) -> None:
        if not self.streaming:
            self.whole.append(data)
            return
        for event in self.parser.feed(data):
            await self._event(event.json())

    async def end(self) -> None:
        if self.streaming:
            for event in self.parser.flush():
                await self._event(event.json())
            return
        body = b"".join(self.whole)
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        error = error_object(parsed)
        message = error.get("message") if isinstance(error, dict) else body.decode("utf-8", "replace")[:500]
        self.chain.drop()
        await self.send(error_frame(self.status, str(message or f"HTTP {self.status}"), error))

    async def _event(self, event: Any) -> None:
        if not isinstance(event, dict):
            return      # comments, [DONE]: nothing for a WebSocket client
        if event.get("type") == "error" and "status" not in event:
            event = {"type": "error", "status": in_stream_status(event), "error": error_object(event) or event}
        self.chain.observe(event, self.job.upstream or "")
        await self.send(json.dumps(event, separators=(",", ":")))


class WsBridge:
    def __init__(self, make_job: MakeJob, run_job: Callable[[Job, Any], Awaitable[None]],
                 on_done: Callable[[Job], None], on_turn: Callable[[Ticket, Job | Refusal], None] | None = None) -> None:
        self._make_job, self._run_job, self._on_done = make_job, run_job, on_done
        self._on_turn = on_turn
        self._tickets: dict[str, Ticket] = {}
        self._server: asyncio.AbstractServer | None = None
        self._sockets: set[asyncio.Task] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._sockets):
            task.cancel()
        await asyncio.gather(*self._sockets, return_exceptions=True)

    def register(self, ticket: Ticket) -> None:
        self._tickets[ticket.token] = ticket

    def forget(self, ticket: Ticket) -> bool:
        return self._tickets.pop(ticket.token, None) is not None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sockets.add(task)
        socket = _Socket(self, reader, writer)
        try:
            await socket.run()
        except RemoteProtocolError as exc:
            log.info("ccswitch: a WebSocket client broke the protocol: %s", exc)
            if socket.ticket is None:     # no handshake yet: an HTTP answer, not a dropped connection
                writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        except (ConnectionError, OSError, LocalProtocolError) as exc:
            log.debug("ccswitch: a bridged socket ended: %s", exc)
        finally:
            if task is not None:
                self._sockets.discard(task)
            writer.close()


class _Socket:
    """One client socket: the handshake, then its turns, one at a time."""

    def __init__(self, bridge: WsBridge, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.bridge, self.reader, self.writer = bridge, reader, writer
        self.ws = WSConnection(ConnectionType.SERVER)
        self.chain = Chain()
        self.ticket: Ticket | None = None
        self.closed = False

    async def run(self) -> None:
        try:
            while not self.closed:
                data = await self.reader.read(_READ)
                self.ws.receive_data(data or None)
                for event in self.ws.events():
                    await self._on(event)
                await self._flush()
                if not data:
                    return
        finally:
            if self.ticket is not None:
                self.ticket.upstream_sockets.close()

    async def _on(self, event) -> None:
        if isinstance(event, Request):
            token = dict((k.decode().lower(), v.decode()) for k, v in event.extra_headers).get(TICKET_HEADER, "")
            self.ticket = self.bridge._tickets.pop(token, None)
            if self.ticket is None:
                self._send(RejectConnection(status_code=403))
                self.closed = True
                return
            offered = [PerMessageDeflate()] if event.extensions else []
            self._send(AcceptConnection(extensions=offered))
        elif isinstance(event, Ping):
            self._send(event.response())
        elif isinstance(event, CloseConnection):
            if self.ws.state.name not in ("CLOSED", "LOCAL_CLOSING"):
                self._send(event.response())
            self.closed = True
        elif isinstance(event, TextMessage | BytesMessage) and event.message_finished is not False:
            await self._frame(event.data)

    async def _frame(self, data: str | bytes) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            return await self._text(error_frame(400, "a frame that is not JSON"))
        if isinstance(frame, dict) and frame.get("type") == "response.processed":
            return          # an acknowledgement: nothing to answer
        try:
            if isinstance(frame, dict) and frame.get("generate") is False:
                for event in self.chain.warm_up(frame):
                    await self._text(json.dumps(event))
                return
            turn = self.chain.prepare(frame)
        except FrameError as exc:
            return await self._text(error_frame(400, str(exc)))
        except ChainLost as exc:
            # before any output: Codex opens a new socket and sends its whole input
            log.info("ccswitch: closing a Codex socket whose chain is lost (%s)", exc)
            self._send(CloseConnection(code=1011, reason="ccswitch: conversation state lost, resend in full"))
            self.closed = True
            return
        assert self.ticket is not None
        self.ticket.turns += 1
        made = self.bridge._make_job(self.ticket, turn)
        if isinstance(made, Refusal):
            self.chain.drop()
            await self._text(error_frame(made.status, made.message))
        else:
            sink = WsSink(self._text, self.chain, made)
            try:
                await self.bridge._run_job(made, sink)
            except ClientGone:
                made.client_left()
                self.closed = True
            finally:
                self.bridge._on_done(made)
        if self.bridge._on_turn is not None:
            self.bridge._on_turn(self.ticket, made)

    async def _text(self, text: str) -> None:
        try:
            self._send(TextMessage(data=text))
            await self._flush()
        except (ConnectionError, OSError, LocalProtocolError) as exc:
            raise ClientGone(str(exc)) from exc

    def _send(self, event) -> None:
        self.writer.write(self.ws.send(event))

    async def _flush(self) -> None:
        await self.writer.drain()
