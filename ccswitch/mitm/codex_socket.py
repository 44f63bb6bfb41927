"""Codex's Responses WebSocket through ccswitch: the request hook hands an accepted upgrade to
the bridge (`dial.ws_bridge`), and every `response.create` frame on it is planned like an HTTPS
request of the codex route (strategy, affinity, budgets, failover) and recorded with
`endpoint = websocket`."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, http

from ccswitch.clock import utc_now
from ccswitch.config.models import ClientKey
from ccswitch.dial.job import Job
from ccswitch.dial.relay import run_guarded
from ccswitch.dial.shutdown import SHUTTING_DOWN
from ccswitch.dial.ws_bridge import TICKET_HEADER, Ticket, WsBridge
from ccswitch.dial.ws_errors import Refusal
from ccswitch.ledger.rows import own_answer_row
from ccswitch.mitm.flows import attempts_line, mark_for_a_look, redact_credentials, to_own_server, went_wrong
from ccswitch.routing.affinity import session_key
from ccswitch.vocab import Endpoint, Protocol, Route
from ccswitch.wire.exchange import ClientRequest
from ccswitch.wire.ws_chain import Turn, for_upstream

log = logging.getLogger("ccswitch")

#: how long the end of a socket waits for its last turn to end (its last event is out: only the
#: upstream's body end is to come), so the flow mitmproxy saves next has that turn's line
LAST_TURN_WAIT = 5.0

#: the handshake's own headers: never sent to an upstream with a turn
_HANDSHAKE = {"upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
              "sec-websocket-protocol", TICKET_HEADER}


@dataclass
class SocketContext:
    flow: http.HTTPFlow
    headers: list[tuple[str, str]]     # the upgrade's headers, handshake ones left out
    client: str | None                 # the client key's name (as of the last turn: reloads rename)
    url: str
    key: str | None = None             # the client key it presented, checked anew each turn


#: a turn on a socket whose client key the rules no longer hold (a reload revoked or renamed it)
_KEY_GONE = "missing or invalid ccswitch client key (the rules changed since this WebSocket opened)"


class CodexSockets:
    def __init__(self, router) -> None:
        self.router = router
        self.bridge = WsBridge(self._make_job, self._run, router.gateway.record_job, self._comment,
                               refuse=self._refuse, max_message=lambda: ctx.options.ccswitch_max_body)
        self._asked: dict[str, str] = {}   # flow id -> the URL Codex asked for, until it is shown again
        self._open: dict[str, Ticket] = {}  # flow id -> its socket's ticket, until the socket ends

    async def start(self) -> None:
        await self.bridge.start()

    async def stop(self) -> bool:
        """True if sockets were open (each was sent its close frame)."""
        return await self.bridge.stop()

    def accept(self, flow: http.HTTPFlow, headers: list[tuple[str, str]], client: ClientKey | None) -> None:
        """Point the upgrade at the bridge; it answers 101 and serves the socket's turns."""
        kept = [(k, v) for k, v in headers if k.lower() not in _HANDSHAKE]
        key = client.get_secret_value() if client is not None else None
        ticket = Ticket(context=SocketContext(flow, kept, client.name if client is not None else None,
                                              flow.request.url, key))
        redact_credentials(flow.request)   # the bridge has its own copy; mitmweb and -w see none
        self._asked[flow.id] = flow.request.url    # redacted: the ticket's own URL keeps a `?key=` for the bridge
        self.bridge.register(ticket)
        self._open[flow.id] = ticket
        flow.metadata["ccswitch"] = {"route": Route.CODEX, "endpoint": Endpoint.WEBSOCKET}
        to_own_server(flow, self.bridge.port)
        flow.request.headers[TICKET_HEADER] = ticket.token
        # no permessage-deflate between the client and mitmproxy: mitmproxy inflates a whole
        # message in memory before anyone may refuse it, so a compressed megabyte became gigabytes
        # (Codex speaks uncompressed on being told no; the bridge is on this machine anyway)
        flow.request.headers.pop("sec-websocket-extensions", None)
        flow.comment = "ccswitch: Codex WebSocket bridged"

    def settled(self, flow: http.HTTPFlow) -> None:
        """The upgrade reached the bridge (its 101) or never will: the flow shows the URL Codex
        asked for again, not the bridge's loopback address and ticket, for the socket's life."""
        if (token := flow.request.headers.pop(TICKET_HEADER, None)) is not None:
            self.bridge.forget(token)     # one that never reached the bridge (the client left)
        if flow.websocket is None:        # no socket (the bridge refused it, the client left): no end to come
            self._open.pop(flow.id, None)
        if (url := self._asked.pop(flow.id, None)) is not None:
            flow.request.url = url

    async def ended(self, flow: http.HTTPFlow) -> None:
        """The socket's end in mitmproxy: Codex closes on a turn's last event, often before the
        turn has ended (its upstream's body end, its row, its line in the comment); a moment's
        wait lets the flow mitmproxy saves or shows next carry that line."""
        ticket = self._open.pop(flow.id, None)
        if ticket is not None and ticket.served is not None and not ticket.served.done():
            await asyncio.wait({ticket.served}, timeout=LAST_TURN_WAIT)

    def _make_job(self, ticket: Ticket, turn: Turn) -> Job | Refusal:
        context: SocketContext = ticket.context
        body = turn.body
        model = body.get("model")
        session = session_key(context.headers, body)
        refusal = None
        # a socket lasts for hours: each turn is let in by the rules of its time, as a request is
        rules = self.router.gateway.rules
        client = rules.client_named(context.key) if rules.client_keys else None
        context.client = client.name if client is not None else None
        over_budget = self.router.planner.client_over_budget(context.client)
        if rules.client_keys and client is None:
            refusal = 401, _KEY_GONE
        elif over_budget:
            refusal = over_budget
        elif not isinstance(model, str) or not model:
            refusal = 400, "the frame names no model"
        elif self.router.shutdown.draining:
            refusal = 503, SHUTTING_DOWN
        else:
            req = ClientRequest(route=Route.CODEX, endpoint=Endpoint.WEBSOCKET, method="POST", url=context.url,
                                headers=context.headers, body=json.dumps(body).encode(), json=body, model=model,
                                stream=True, client_protocol=Protocol.RESPONSES)
            try:
                job = self.router.planner.plan_job(req, f"{context.flow.id}#{ticket.turns}", context.client,
                                                   session, shown=self.router.flows_shown)
            except Exception:   # a bug of ours: this turn's error frame and row, the socket goes on
                log.exception("ccswitch: a Codex WebSocket turn failed inside ccswitch")
                job = 500, "ccswitch failed on this turn (an internal error: its log has the details)"
            if isinstance(job, Job):
                job.upstream_sockets, job.turn = ticket.upstream_sockets, turn   # for websocket: true upstreams
                for upstream in job.candidates:     # encrypted reasoning stays with its own upstream
                    shaped = for_upstream(turn, upstream.name)
                    if shaped is not body:
                        job.converted[upstream.name] = shaped
                return job
            refusal = job
        return self._refuse(ticket, *refusal, frame=body)

    def _refuse(self, ticket: Ticket, status: int, message: str, headers: dict | None = None, *,
                frame: Any = None) -> Refusal:
        """A turn answered with an error frame instead of served: its row, as a refused request's,
        with the model and session the frame names (the socket's session when it could not be read)."""
        context: SocketContext = ticket.context
        body = frame if isinstance(frame, dict) else None
        model = body.get("model") if body is not None else None
        session = session_key(context.headers, body)
        message = self.router.gateway.rules.scrub(message)   # it may quote the model the client sent
        self.router.gateway.record_own_answer(own_answer_row(
            request_id=f"{context.flow.id}#{ticket.turns}", started_at=utc_now(), route=Route.CODEX,
            endpoint=Endpoint.WEBSOCKET, model=model if isinstance(model, str) else None, stream=True,
            status=status, error=message[:500], latency_ms=0, session=session, client=context.client))
        return Refusal(status, message, tuple((headers or {}).items()))

    async def _run(self, job: Job, sink) -> None:
        await run_guarded(self.router.dialer.run, job, sink, self.router.shutdown)

    @staticmethod
    def _comment(ticket: Ticket, made: Job | Refusal) -> None:
        flow = ticket.context.flow
        line = (f"turn {ticket.turns}: " + (made.comment().removeprefix("ccswitch: ") if isinstance(made, Job)
                                             else f"answered {made.status} itself"))
        flow.comment = f"{flow.comment}\n{line}"
        if isinstance(made, Job) and went_wrong(made):
            mark_for_a_look(flow)
        if isinstance(made, Job) and (line := attempts_line(made)) is not None:
            log.info("ccswitch: codex websocket turn %d %s", ticket.turns, line)
