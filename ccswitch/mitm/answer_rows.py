"""When the usage rows of answers given from the request hook are written: once mitmproxy has
sent them, so that a row says what the client got.

An answer set in the request hook goes out once that hook's task gets the connection's event
lock back, itself a callback queued after the hook: a routed request's row and the live counters
wait one more loop turn.  While a stop that ends the client connections drains, a refusal of
ccswitch's own (its 503s) may be written after the connection closed, to no one: its row waits
for mitmproxy to hand the answer on, and says `client_closed` when the connection was gone."""

from __future__ import annotations

import asyncio
import secrets

from mitmproxy import http

from ccswitch.dial.job import CLIENT_CLOSED, KILLED, Job
from ccswitch.dial.shutdown import Shutdown
from ccswitch.mitm.flow_ends import answer_reaches_client, killed
from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.known import Known
from ccswitch.routing.classify import RouteMatch


class AnswerRows:
    def __init__(self, gateway: Gateway, shutdown: Shutdown) -> None:
        self.gateway, self.shutdown = gateway, shutdown
        self.unrecorded: dict[str, Job] = {}           # token -> a job answered from the hook, until sent
        self.refusals_on_their_way: dict[str, dict] = {}   # flow id -> its refusal's row, while a stop closes
        self.connections_closing = False              # the stop under way ends mitmproxy's client connections

    def refused(self, flow: http.HTTPFlow, match: RouteMatch, known: Known, status: int, message: str) -> None:
        # a replay keeps its flow's id, and the ledger keeps one row per request_id
        request_id = f"{flow.id}#{secrets.token_urlsafe(6)}" if flow.is_replay else flow.id
        row = known.own_answer_row(request_id, match, status, message)
        if self.shutdown.draining and self.connections_closing:
            self.refusals_on_their_way[flow.id] = row      # its fate is known when mitmproxy hands it on
            return
        self.gateway.record_own_answer(row)

    def handed_on(self, flow: http.HTTPFlow) -> None:
        """mitmproxy's response or error hook: the answer goes out right after it, to a connection
        open now or to none."""
        if (refused := self.refusals_on_their_way.pop(flow.id, None)) is not None:
            gone = KILLED if killed(flow) else CLIENT_CLOSED
            self.gateway.record_own_answer(refused if answer_reaches_client(flow) else unanswered(refused, gone))

    def answered(self, job: Job) -> None:
        """A routed request answered from the hook: its row one loop turn after mitmproxy sends it."""
        self.unrecorded[job.token] = job
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.call_soon, self._record, job)

    def _record(self, job: Job) -> None:
        if self.unrecorded.pop(job.token, None) is not None:    # else `stop` recorded it already
            self.gateway.record_job(job)

    def stop(self) -> None:
        """At the stop's end: the rows still waiting (sent, or their clients' connections closed first)."""
        for job in list(self.unrecorded.values()):
            self._record(job)
        for row in self.refusals_on_their_way.values():
            self.gateway.record_own_answer(unanswered(row, CLIENT_CLOSED))
        self.refusals_on_their_way.clear()


def unanswered(row: dict, why: str) -> dict:
    """The row of an answer of ccswitch's own that never reached its client: no status, and
    why (`client_closed`, `killed`), as a request's whose client left before its answer."""
    return {**row, "status": None, "error": why}
