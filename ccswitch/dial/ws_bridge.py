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
import collections
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wsproto import ConnectionState, ConnectionType, WSConnection
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

from ccswitch.dial.job import CLIENT_CLOSED, Job
from ccswitch.dial.relay import ClientGone, start_now
from ccswitch.dial.shutdown import Serving
from ccswitch.dial.ws_errors import (
    Refusal,
    error_detail,
    error_event,
    error_frame,
    held_stream_error,
    message_of,
    refusal_frame,
    told_headers,
)
from ccswitch.dial.ws_upstream import UpstreamSockets
from ccswitch.wire.exchange import client_json
from ccswitch.wire.protocols import error_object, in_stream_status
from ccswitch.wire.sse import SSEParser
from ccswitch.wire.ws_chain import Chain, ChainLost, FrameError, Turn

log = logging.getLogger("ccswitch.websocket")

TICKET_HEADER = "x-ccswitch-socket"
_READ = 64 * 1024
DEFAULT_MAX_MESSAGE = 32 * 1024 * 1024
# messages a client may send ahead of the turn being served: Codex sends one turn early at most,
# and an acknowledgement per turn; each may be `max_message` long, so more end the socket
MAX_WAITING = 4


@dataclass
class Ticket:
    """What the request hook knew about the client's upgrade, for every turn on the socket."""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    context: Any = None                               # the router's own: client headers, session, flow
    turns: int = 0
    # its sockets to `websocket: true` upstreams, closed with it
    upstream_sockets: UpstreamSockets = field(default_factory=UpstreamSockets)
    served: asyncio.Task | None = None      # serving its socket, once the upgrade reached the bridge


#: (ticket, turn) -> a job to run, or ccswitch's own answer
MakeJob = Callable[[Ticket, Turn], "Job | Refusal"]


def utf8_size(data: str | bytes) -> int:
    """A piece's size in bytes, as the limit counts a request's body (a text frame's piece comes
    decoded; `isascii` is a flag's look, so only text beyond ASCII is encoded to be counted)."""
    if isinstance(data, bytes) or data.isascii():
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


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
        self.headers: list[tuple[str, str]] = []

    async def start(self, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        self.status, self.streaming, self.headers = status, length is None, headers
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
        self.chain.drop()
        failed = held_stream_error(body)
        if failed is not None:   # every attempt failed before its content: the error event, as it said
            error = error_detail(failed)
            self.job.status = in_stream_status(failed)   # the ledger's status is the one the client was told
            await self.send(error_frame(self.job.status, message_of(error, body), error, self.headers))
            return
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        error = error_object(parsed)
        await self.send(error_frame(self.status, message_of(error, body) or f"HTTP {self.status}", error,
                                    self.headers))

    async def _event(self, event: Any) -> None:
        if not isinstance(event, dict):
            return      # comments, [DONE]: nothing for a WebSocket client
        if event.get("type") == "error" and "status" not in event:
            event = error_event(in_stream_status(event), error_detail(event), told_headers(self.headers))
        self.chain.observe(event, self.job.upstream or "")
        await self.send(json.dumps(event, separators=(",", ":")))


class WsBridge(Serving):
    """Serves each socket's turns; `running` and `cut` are about turns (jobs), not sockets."""

    def __init__(self, make_job: MakeJob, run_job: Callable[[Job, Any], Awaitable[None]],
                 on_done: Callable[[Job], None], on_turn: Callable[[Ticket, Job | Refusal], None] | None = None, *,
                 refuse: Callable[..., Refusal] | None = None,
                 max_message: Callable[[], int] = lambda: DEFAULT_MAX_MESSAGE) -> None:
        super().__init__()
        self._make_job, self._run_job, self._on_done = make_job, run_job, on_done
        self._on_turn = on_turn
        # a frame refused before it is a turn (not JSON, too large): its row, as a refused request's
        self._refuse = refuse or (lambda ticket, status, message, **row: Refusal(status, message))
        self.max_message = max_message     # the largest message taken, in characters or bytes once inflated
        self._tickets: dict[str, Ticket] = {}
        self._server: asyncio.AbstractServer | None = None
        self._sockets: set[asyncio.Task] = set()
        self.turning: dict[int, Job] = {}      # the turns under way, by id (for the live page)
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> bool:
        """Close the listener and every socket (a close frame each); True if any was open."""
        if self._server is not None:
            self._server.close()
            self._server = None
        open_sockets = list(self._sockets)
        for task in open_sockets:
            task.cancel()
        await asyncio.gather(*open_sockets, return_exceptions=True)
        return bool(open_sockets)

    def register(self, ticket: Ticket) -> None:
        self._tickets[ticket.token] = ticket

    def forget(self, token: str) -> bool:
        """Drop a ticket whose upgrade never reached the bridge; True if it was still waiting."""
        return self._tickets.pop(token, None) is not None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sockets.add(task)
        socket = _Socket(self, reader, writer)
        try:
            await socket.run()
        except asyncio.CancelledError:
            # only `stop` cancels a socket: it ends here, told so.  Not re-raised: the server's
            # done-callback (Python 3.12.1) asks a cancelled task for its exception, and the loop
            # would log a traceback per open socket at every stop
            socket.going_away()
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
        self.ended_by = (499, CLIENT_CLOSED)   # what a frame left unserved at the end says in its row
        # the frames, served one at a time by a task of their own while the socket is still read:
        # a client that leaves is seen at once (a frame sent early included), its pings answered
        self.frames: collections.deque[str | bytes | int] = collections.deque()   # an int: one too large
        self.turn: asyncio.Task | None = None   # serving the frames, while there are any
        self.turn_job: Job | None = None
        # a message comes in pieces (a frame each, and wsproto hands over what each read brought):
        # gathered until it is whole, up to the bridge's `max_message`
        self._pieces: list[str | bytes] = []
        self._size = 0

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
            self.closed = True      # no frame waiting is served any more
            if (task := asyncio.current_task()) is not None and task.cancelling():   # only `stop` cancels it
                self.ended_by = (503, "ccswitch is shutting down: the frame was not served")
            if self.turn is not None:
                if self.turn_job is None or not self.turn_job.delivered:
                    # the client left (or closed the socket) mid-turn: its upstream request stops now,
                    # no other upstream is tried and no failure is counted; the turn's row is written
                    self.turn.cancel()
                # else its last event is out (Codex closes on `response.completed`): it ends in a
                # moment, served, once the upstream's body has ended and its connection is back
                await asyncio.gather(self.turn, return_exceptions=True)
            self._left_unserved()
            if self.ticket is not None:
                self.ticket.upstream_sockets.close()

    def _left_unserved(self) -> None:
        """The frames the client sent but left before their turn: a row each, as its own."""
        while self.frames and self.ticket is not None:
            data, frame = self.frames.popleft(), None
            if not isinstance(data, int):
                with contextlib.suppress(ValueError, RecursionError):
                    frame = client_json(data)
            if isinstance(frame, dict) and (frame.get("type") == "response.processed" or frame.get("generate") is False):
                continue        # an acknowledgement or a warm-up: never a turn with a row
            self.ticket.turns += 1
            self.bridge._refuse(self.ticket, *self.ended_by, frame=frame)

    def going_away(self) -> None:
        """The proxy stops: a close frame (1001), so Codex reconnects, rather than a socket cut."""
        if self.ws.state is ConnectionState.OPEN:
            with contextlib.suppress(ConnectionError, OSError, LocalProtocolError):
                self._send(CloseConnection(code=1001, reason="ccswitch is shutting down"))

    def _end(self, code: int, reason: str, left: tuple[int, str]) -> None:
        """ccswitch ends the socket (a close frame, then the connection): the frames still waiting
        have rows saying `left`, not that the client closed."""
        self.closed, self.ended_by = True, left
        if self.ws.state is ConnectionState.OPEN:
            with contextlib.suppress(ConnectionError, OSError, LocalProtocolError):
                self._send(CloseConnection(code=code, reason=reason))
        self.writer.close()     # its buffered close frame goes out first

    async def _on(self, event) -> None:
        if isinstance(event, Request):
            token = dict((k.decode().lower(), v.decode()) for k, v in event.extra_headers).get(TICKET_HEADER, "")
            self.ticket = self.bridge._tickets.pop(token, None)
            if self.ticket is None:
                self._send(RejectConnection(status_code=403))
                self.closed = True
                return
            self.ticket.served = asyncio.current_task()
            offered = [PerMessageDeflate()] if event.extensions else []
            self._send(AcceptConnection(extensions=offered))
        elif isinstance(event, Ping):
            self._send(event.response())
        elif isinstance(event, CloseConnection):
            if self.ws.state.name not in ("CLOSED", "LOCAL_CLOSING"):
                self._send(event.response())
            self.closed = True
        elif isinstance(event, TextMessage | BytesMessage):
            await self._piece(event.data, event.message_finished)

    async def _piece(self, data: str | bytes, finished: bool) -> None:
        limit = self.bridge.max_message()
        if self._size <= limit:
            self._size += utf8_size(data)
            self._pieces.append(data)
            if self._size > limit:
                self._pieces.clear()        # nothing more of it is kept
        if not finished:
            return
        pieces, size = self._pieces, self._size
        self._pieces, self._size = [], 0
        self.frames.append(limit if size > limit else pieces[0] if len(pieces) == 1 else pieces[0][:0].join(pieces))
        if len(self.frames) > MAX_WAITING:      # each has its row, this one too
            return self._end(1008, "too many messages ahead of their turn",
                             (429, f"more than {MAX_WAITING} messages sent ahead of their turn: the socket was closed"))
        if self.turn is None or self.turn.done():   # done, its callback still to come: a new one
            self.turn = start_now(self._serve_frames())
            self.bridge._track(self.turn)
            self.turn.add_done_callback(self._served)

    async def _serve_frames(self) -> None:
        try:
            while self.frames and not self.closed:
                data = self.frames.popleft()
                if isinstance(data, int):
                    await self._refused(413, f"a message over {data} bytes (ccswitch_max_body)")
                else:
                    await self._frame(data)
        except ClientGone:      # an error frame that could not go out
            self.closed = True
        finally:
            if self.closed:     # ended here (the client gone, a lost chain): the reading ends with it
                self.writer.close()

    async def _refused(self, status: int, message: str, frame: Any = None) -> None:
        assert self.ticket is not None
        self.ticket.turns += 1
        await self._text(refusal_frame(self.bridge._refuse(self.ticket, status, message, frame=frame)))

    async def _frame(self, data: str | bytes) -> None:
        try:
            frame = client_json(data)
        except ValueError:
            return await self._refused(400, "a frame that is not JSON")
        except RecursionError:
            return await self._refused(400, "a frame nested too deeply")
        if isinstance(frame, dict) and frame.get("type") == "response.processed":
            return          # an acknowledgement: nothing to answer
        # Codex sends the next turn once this one ended; one sent early waited in `frames` for it,
        # since the chain it builds on is this one's answer
        try:
            if isinstance(frame, dict) and frame.get("generate") is False:
                for event in self.chain.warm_up(frame):
                    await self._text(json.dumps(event))
                return
            turn = self.chain.prepare(frame)
        except FrameError as exc:
            return await self._refused(400, str(exc), frame)
        except ChainLost as exc:
            # before any output: Codex opens a new socket and sends its whole input
            log.info("ccswitch: closing a Codex socket whose chain is lost (%s)", exc)
            assert self.ticket is not None
            self.ticket.turns += 1
            self.bridge._refuse(self.ticket, 409, f"conversation state lost ({exc}): the socket is closed for "
                                "the client to send the whole input again", frame=frame)
            self._end(1011, "ccswitch: conversation state lost, resend in full",
                      (409, "the socket was closed, its conversation state lost, before this frame's turn: the "
                            "client sends it again in full"))
            return
        assert self.ticket is not None
        self.ticket.turns += 1
        made = self.bridge._make_job(self.ticket, turn)
        if isinstance(made, Refusal):
            self.chain.drop()
            await self._text(refusal_frame(made))
            self._turn_ended(made)
            return
        self.turn_job = made
        try:
            await self._serve(made)
        finally:
            self.turn_job = None

    async def _serve(self, job: Job) -> None:
        self.bridge.turning[id(job)] = job
        try:
            await self.bridge._run_job(job, WsSink(self._text, self.chain, job))
        except ClientGone:
            job.client_left()
            self.closed = True
        finally:
            self.bridge.turning.pop(id(job), None)
            self.bridge._on_done(job)
            self._turn_ended(job)

    def _served(self, task: asyncio.Task) -> None:
        if self.turn is task:
            self.turn, self.turn_job = None, None
        if not task.cancelled() and task.exception() is not None:
            log.error("ccswitch: serving a bridged socket's frames failed: %r", task.exception(),
                      exc_info=task.exception())
            self.ended_by = (500, "ccswitch failed on an earlier frame of the socket (its log has the details)")
            self.writer.close()    # its client is told by the socket's end, not left waiting

    def _turn_ended(self, made: Job | Refusal) -> None:
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
