"""The attempt loop: send a client request to its candidates in order, judge each
answer, fail over or retry, and stream the winner to the client as it arrives.

mitmproxy cannot re-send a flow or time out an upstream, so this module owns
connections (one pooled `http1.UpstreamClient`, verified TLS), timeouts and the pump.
It writes to a `Sink` (the loopback relay's response) and never touches flows.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing
from collections.abc import Callable
from urllib.parse import urlsplit

from ccswitch.config.models import Upstream
from ccswitch.dial.job import CLIENT_CLOSED, KILLED, Attempt, Job, marks
from ccswitch.dial.outcome import (
    NOT_ITS_RESPONSE,
    Failure,
    NetworkFailure,
    Streamed,
    continues_anothers,
    limit_passed_on,
    network_failure,
    redirect_failure,
    response_headers,
    retry_delay,
)
from ccswitch.dial.pump import Pump, nothing
from ccswitch.dial.relay import ClientGone, send_whole
from ccswitch.dial.render import OutgoingRequest, over_https, render, upstream_url
from ccswitch.dial.ws_upstream import TurnResponse, WithoutWebSocket
from ccswitch.net import http1
from ccswitch.net.ws_client import HandshakeRefused
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.events import Events
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.limits import cool_rate_limited, learn_windows
from ccswitch.routing.quota import QuotaBoard
from ccswitch.translate import translation_for
from ccswitch.vocab import Action, Endpoint, Protocol
from ccswitch.wire import protocols
from ccswitch.wire.exchange import UNPARSED, RenderError, Reply, json_or_none
from ccswitch.wire.reasoning import SealMemory, refuses_foreign_reasoning, seals_in
from ccswitch.wire.redact import scrub_headers, scrub_json, scrub_text, without_quoted_keys
from ccswitch.wire.sse import is_event_stream
from ccswitch.wire.usage import answer_of_body

log = logging.getLogger("ccswitch.dialer")

_MAX_RETRIES_SAME_UPSTREAM = 2


class Sink(typing.Protocol):
    """Where an answer goes: the relay's HTTP/1.1 connection back to mitmproxy, or a buffer
    for an answer given from the request hook."""

    started: bool    # something reached the client: an error can no longer replace the answer
    broken: bool     # the client end is gone: nothing more can be written

    async def start(self, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        """The status line and headers; `length` None means a stream (chunked)."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def end(self) -> None: ...


class Dialer:
    def __init__(self, health: HealthBoard, *, allow_url: Callable[[str], bool] = lambda url: True,
                 client: http1.UpstreamClient | None = None, quota: QuotaBoard | None = None,
                 sessions: SessionBindings | None = None, events: Events | None = None) -> None:
        self.health = health
        self.events = events            # an upstream becoming full is announced here
        # (`is None`, not `or`: an empty board is falsy)
        self.quota = QuotaBoard() if quota is None else quota    # what each upstream's rate-limit headers said
        self.sessions = SessionBindings() if sessions is None else sessions
        self.seals = SealMemory()     # reasoning each upstream sealed, and refused
        self.allow_url = allow_url      # a guard tests install: False refuses the upstream unsent
        self.client = client or http1.UpstreamClient()
        self.without_websocket = WithoutWebSocket()
        self._told_missing: set[tuple[str, str]] = set()    # (upstream, base_url) whose 404 the log named

    async def aclose(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------------ the loop

    async def run(self, job: Job, sink: Sink) -> None:
        """Serve one job; always leaves the sink answered (or the task cancelled)."""
        failover = job.rules.failover
        last: Reply | Failure | None = None
        retries: dict[str, int] = {}
        index = 0
        resent = 0      # sent again without reasoning it refused: not one of the route's attempts

        def counted() -> int:   # the route's attempts made so far
            return len(job.attempts) - resent

        try:
            while index < len(job.candidates) and counted() < failover.max_attempts:
                upstream = job.candidates[index]
                if self.health.busy_probing(upstream.name) and index + 1 < len(job.candidates):
                    index += 1   # another request is probing it after its cooldown: one at a time
                    continue
                job.may_fail_over = index + 1 < len(job.candidates) and counted() + 1 < failover.max_attempts
                result = await self._attempt(job, upstream, sink)
                if isinstance(result, Streamed):
                    return
                last = result
                if self._again_without_reasoning(job, upstream, result):
                    resent += 1
                    continue
                if isinstance(result, Reply):
                    await self._deliver(job, upstream, result, sink)
                    return
                action = result.action
                if action == Action.RETRY and retries.get(upstream.name, 0) < _MAX_RETRIES_SAME_UPSTREAM \
                        and counted() < failover.max_attempts:
                    retries[upstream.name] = retries.get(upstream.name, 0) + 1
                    await asyncio.sleep(retry_delay(result.headers, failover.retry_backoff,
                                                    retries[upstream.name]))
                    continue
                index += 1
            if last is None:
                await self._deliver_own_error(job, sink, 503, "no upstream could be tried")
            else:
                if isinstance(last, Failure):
                    job.error = last.reason   # even when the last word is a 200 carrying an error event
                reply = last.as_reply(job.request.client_protocol, job.earlier_words())
                await self._deliver(job, self._by_name(job, last.upstream), reply, sink)
        except asyncio.CancelledError:
            job.client_left()
            raise
        finally:
            job.latency_ms = job.elapsed_ms()

    def _again_without_reasoning(self, job: Job, upstream: Upstream, result: Reply | Failure) -> bool:
        """An upstream that refused reasoning another account encrypted (a conversation that failed
        over, or that affinity moved) takes the request again at once without it: not one more of
        the route's attempts (the upstream answered; the request was ours to mend), and it ends,
        as each time leaves out more.  Only the items it did not seal itself are left out (a
        conversation back from another account keeps its own); should it refuse those too, the
        next time goes without any.  The refused items are remembered, so the conversation's
        later turns go without them at once."""
        if not refuses_foreign_reasoning(result.status, result.body or b""):
            return False
        refused = job.converted.get(upstream.name) or job.request.json
        items = refused.get("input") if isinstance(refused, dict) else None
        kept = self.seals.refusal(_account(upstream), items) if isinstance(items, list) else None
        if kept is None:
            return False
        body = {**refused, "input": kept}
        job.converted[upstream.name] = body
        job.attempts[-1].error = "reasoning encrypted by another account: sent again without it"
        return True

    def _body_for(self, job: Job, upstream: Upstream, translation) -> dict | None:
        """The request body converted for `upstream` (None: the client's own goes as it is),
        without the sealed reasoning it has refused before."""
        body = job.converted.get(upstream.name)
        if body is None:
            body = translation.request(job.request, upstream, job.rules)
        if not self.seals:
            return body
        unrefused = self.seals.leave_out(_account(upstream), job.request.json if body is None else body)
        if unrefused is None:
            return body
        job.converted[upstream.name] = unrefused
        return unrefused

    @staticmethod
    def _by_name(job: Job, name: str) -> Upstream:
        return next(u for u in job.candidates if u.name == name)

    # ------------------------------------------------------------------ one attempt

    async def _attempt(self, job: Job, upstream: Upstream, sink: Sink) -> Reply | Failure | Streamed:
        """Streamed when the attempt was committed to the client; otherwise what came back."""
        began = time.monotonic()
        attempt = Attempt(upstream.name, running_since=began)
        job.attempts.append(attempt)
        # the key it is sent with: what its answer teaches is that key's, if the rules still give it
        fingerprint = upstream.fingerprint()
        # one probe at a time: a request that reaches the upstream while another probes it (it
        # was the last candidate left) is not the probe, and does not end the other's
        probing = self.health.needs_probe(upstream.name) and not self.health.busy_probing(upstream.name)
        if probing:
            self.health.begin_probe(upstream.name)
        outgoing: OutgoingRequest | None = None
        try:
            translation = translation_for(job.request.client_protocol, upstream.protocol)
            # no local for the body as converted: this frame lasts as long as the stream
            outgoing = render(upstream, job.request, self._body_for(job, upstream, translation),
                              client_key=job.rules.key_of_client(job.client))
            if upstream.protocol != job.request.client_protocol:
                # converted: text the client's body held escaped twice (a tool call's arguments,
                # JSON inside a string) is written once now, a key it quotes readable as such
                outgoing.body = without_quoted_keys(outgoing.body, job.rules.upstream_key_texts()) or outgoing.body
            # what it is sent of the input, whose sealed reasoning is its own if it serves (read
            # now: a stream's commit lets the request's body go, and nothing here holds it)
            read = _read_by(job, upstream) if upstream.protocol == Protocol.RESPONSES else None
            if read is not None and job.turn is not None:
                # a Codex socket's chain keeps the turn when its answer completes, before this
                # attempt ends: what the upstream is sent is known to it first (the last attempt serves)
                job.turn.sent = read[1]
            job.upstream_model, job.sent_body = outgoing.upstream_model, outgoing.body
            job.sent_protocol = upstream.protocol
            result = await self._send_and_judge(job, upstream, outgoing, translation, sink, attempt, probing,
                                                fingerprint)
        except RenderError as exc:
            read = None
            # not the upstream's doing, and the next one may take the request as it is
            result = Failure(upstream.name, None, str(exc), Action.SWITCH, counts=False, client_status=exc.status)
        except (asyncio.CancelledError, ClientGone):
            attempt.error = KILLED if job.killed else CLIENT_CLOSED
            if job.upstream is None and attempt.usage is not None:
                # gone before the commit, after the upstream said what it counts (a stream's
                # opening event): the request's row keeps that, and its spend counts
                job.upstream = upstream.name
            raise
        finally:
            attempt.end()
            if probing:
                self.health.end_probe(upstream.name)
        failover = job.rules.failover
        # an answer to a key a reload has since replaced is not the new key's health
        learn = self.health.is_current(upstream.name, fingerprint)
        if isinstance(result, Failure):
            # a stream that broke or went quiet before its commit answered with a status all the same
            attempt.status = result.status if result.status is not None else attempt.status
            attempt.error = result.reason
            attempt.said = _said(result.status, result.body, outgoing, job)
            if learn and result.counts and result.rate_limited:
                # an error event under a 2xx head: that head's resets are of windows still serving
                self._rate_limited(upstream.name, result.reason, result.headers, failover.cooldown,
                                   refusal=not 200 <= (result.status or 0) < 300, began=began)
            elif learn and result.counts:
                self.health.record_failure(upstream.name, result.reason, threshold=failover.threshold,
                                           cooldown=failover.cooldown)
        elif isinstance(result, Streamed):
            attempt.error = result.reason
            if result.ok:
                self._served(job, upstream, read, learn, began)
            elif learn and result.rate_limited:
                self._rate_limited(upstream.name, result.reason or "rate limited", result.limit_headers,
                                   failover.cooldown, refusal=False, began=began)
            elif learn and result.ok is False:
                self.health.record_failure(upstream.name, result.reason or "stream failed",
                                           threshold=failover.threshold, cooldown=failover.cooldown)
        elif 200 <= result.status < 300:
            attempt.status = result.status
            self._served(job, upstream, read, learn, began)
        else:
            attempt.status = result.status
            attempt.said = _said(result.status, result.body, outgoing, job)
        return result

    def _served(self, job: Job, upstream: Upstream, read: tuple[list[int], set[int]] | None, learn: bool,
                began: float) -> None:
        """A 2xx: the upstream is healthy (`learn`: its key is still the rules'), the sealed
        reasoning it was sent (`read`: its seals, and the items' ids) is its own, and the request's
        session is bound to it (unless it only counted tokens: that writes no prompt cache, so the
        session's cache stays where it is)."""
        if learn:
            self.health.record_success(upstream.name, began)
        if read is not None:
            self.seals.made(_account(upstream), read[0])
        if job.session is not None and job.request.endpoint != Endpoint.COUNT_TOKENS:
            route = job.request.route
            if self.sessions.bind(route, job.binding or job.session, upstream.name,
                                  job.rules.routes.spec(route).sticky):
                job.rebound_to = upstream.name

    def _rate_limited(self, name: str, reason: str, headers: list[tuple[str, str]], cooldown: float, *,
                      refusal: bool, began: float) -> None:
        cool_rate_limited(self.health, self.quota, name, reason, headers, cooldown, refusal=refusal, began=began)

    async def _send_and_judge(self, job: Job, upstream: Upstream, outgoing: OutgoingRequest,
                              translation, sink: Sink, attempt: Attempt, probing: bool,
                              fingerprint: tuple) -> Reply | Failure | Streamed:
        rules = job.rules
        timeouts = rules.timeouts
        if not self.allow_url(outgoing.url):
            return NetworkFailure(upstream.name, "refused by the URL guard",
                                  rules.failover.on_network_error)
        wait = timeouts.first_byte if job.request.stream else timeouts.total
        deadline = time.monotonic() + wait
        # a connection (or room for one) under the upstream's max_connections; without a cap no
        # request waits for one, and nothing is rescheduled
        slot = outgoing.via.max_connections is None
        try:
            async with asyncio.timeout(wait) as limit:
                def on_slot() -> None:
                    # the upstream's `wait` runs from when the request has its connection: a wait in
                    # ccswitch's own queue is not the upstream's time (nor, cut short, its failure);
                    # once: the kept-alive connection's resend on a new one is within the same wait
                    nonlocal slot, deadline
                    if slot:
                        return
                    slot, deadline = True, time.monotonic() + wait
                    limit.reschedule(asyncio.get_running_loop().time() + wait)
                response = await self._send(job, upstream, outgoing, timeouts.connect, None if slot else on_slot)
        except (TimeoutError, http1.TransportError, OSError) as exc:
            if isinstance(exc, TimeoutError) and not slot:
                # the whole wait spent in ccswitch's own queue: not the upstream failing
                exc = http1.NoFreeConnection(http1.no_free_connection(wait, outgoing.via.max_connections))
            failure = network_failure(upstream.name, exc, rules.failover.on_network_error,
                                      "first_byte" if job.request.stream else "total",
                                      outgoing.via.proxy.shown if outgoing.via.proxy else None)
            # a proxy's status line may say anything, a key in any spelling among it
            failure.reason = scrub_text(failure.reason, rules.secret_texts())
            return failure
        attempt.status = response.status_code
        if self.health.is_current(upstream.name, fingerprint):    # not a replaced key's windows
            learn_windows(self.quota, self.events, upstream.name, response.headers, rules.failover.drain_at)
        # the probe's answer has begun once it is whole, or its stream committed (content came):
        # others may use the upstream from then on, not while a stream has only opened
        answered = (lambda: self.health.end_probe(upstream.name)) if probing else nothing
        try:
            return await self._judge(job, upstream, outgoing, translation, response, sink, deadline, attempt,
                                     answered)
        finally:
            await response.aclose()

    async def _send(self, job: Job, upstream: Upstream, outgoing: OutgoingRequest,
                    connect_timeout: float, on_slot: Callable[[], object] | None) -> http1.Response | TurnResponse:
        """A turn of a bridged Codex socket goes to a `websocket: true` upstream over that
        upstream's own WebSocket (read like an HTTP response), unless it has none; everything
        else over HTTP."""
        if upstream.websocket and job.upstream_sockets is not None and job.turn is not None \
                and not self.without_websocket.known(upstream):
            if on_slot is not None:     # an upstream's WebSocket is its own connection, under no cap
                on_slot()
            try:
                return await job.upstream_sockets.send(
                    upstream.name, outgoing, job.turn, tls=self.client.ssl_context, connect_timeout=connect_timeout,
                    open_transport=http1.opener(outgoing.via.proxy, connect_timeout),
                    through=outgoing.via.proxy.shown if outgoing.via.proxy else None)
            except HandshakeRefused as exc:
                if not self.without_websocket.learn(upstream, exc):
                    raise
        if job.turn is not None and upstream.websocket:
            outgoing.headers = over_https(outgoing.headers)
        return await self.client.send(outgoing.method, outgoing.url, outgoing.headers, outgoing.body,
                                      connect_timeout=connect_timeout, via=outgoing.via, on_slot=on_slot)

    async def _judge(self, job: Job, upstream: Upstream, outgoing: OutgoingRequest, translation,
                     response: http1.Response | TurnResponse, sink: Sink, deadline: float,
                     attempt: Attempt, answered: Callable[[], None]) -> Reply | Failure | Streamed:
        status = response.status_code
        headers = scrub_headers(response_headers(response.headers), outgoing.secrets)
        is_sse = is_event_stream(response.header("content-type"))
        failover = job.rules.failover
        if 200 <= status < 300 and job.request.stream and is_sse:
            pump = Pump(job, upstream, outgoing, translation, response, sink, headers, attempt, answered)
            del headers   # the pump lets them go at its commit, not this frame at the stream's end
            try:
                return await pump.run()
            finally:
                self.seals.made(_account(upstream), pump.seals)
        answered()
        try:
            body = await asyncio.wait_for(response.aread(), max(0.001, deadline - time.monotonic()))
        except (TimeoutError, http1.TransportError, OSError) as exc:
            return network_failure(upstream.name, exc, failover.on_network_error, "total")
        body = translation.scrub(body, outgoing.secrets)
        parsed = UNPARSED if is_sse else json_or_none(body)   # once, for the usage and the check
        attempt.usage, response_id = answer_of_body(upstream.protocol, body, is_sse, parsed)
        if attempt.usage is not None and attempt.usage.raw and outgoing.secrets and b"\\" in body:
            # decoded: a key written in a JSON escape the body's scrub does not know is plain text now
            attempt.usage.raw = scrub_json(attempt.usage.raw, outgoing.secrets)
        why = None
        if 200 <= status < 300:
            attempt.response_id = response_id
            problem = translation.check_body(job.request, upstream, body, is_sse, parsed)
            if problem and protocols.dressed_error(parsed):
                # an error under a 2xx (relays do it; a Responses object that failed): judged, and
                # told to the client, as the error it stands for, with the upstream's own words
                status = protocols.in_stream_status(parsed)
                why = f"HTTP {status} under a 2xx"
            elif problem:   # a 2xx that is not an answer: if it is the last word, the client gets a 502
                return Failure(upstream.name, status, problem, failover.on_network_error, headers, body,
                               client_status=502)
        if 200 <= status < 300:
            if upstream.protocol == Protocol.RESPONSES:
                self.seals.made(_account(upstream), seals_in(parsed, "output"))
            reply = translation.reply(job.request, upstream, status, headers, body)
            if 200 <= reply.status < 300:
                return reply
            # a 2xx that held a failure (an aggregated stream ending in an error event) is judged
            # by the status that failure stands for, like any other answer
            action = failover.action_for(reply.status)
            if action == Action.PASS:
                return reply
            return Failure(upstream.name, reply.status, reply.reason or f"HTTP {reply.status}", action,
                           reply.headers, reply.body, translated=True)
        if job.request.endpoint == Endpoint.COUNT_TOKENS and status in (404, 405, 501):
            return Failure(upstream.name, status, "count_tokens not supported", Action.SWITCH, headers, body,
                           counts=False)
        if 300 <= status < 400 and failover.set_for(status) is None:
            return redirect_failure(upstream.name, upstream.base_url, outgoing.url, status, headers, body)
        if 400 <= status < 500 and continues_anothers(job.request, parsed):
            # a stored answer ccswitch did not know the issuer of (issued before a restart, or a
            # moment ago through an instance whose word has not come yet): the next may be it
            return Failure(upstream.name, status, f"HTTP {status}: {NOT_ITS_RESPONSE}", Action.SWITCH, headers,
                           body, counts=False)
        action = failover.action_for(status)
        if action == Action.PASS:
            return Reply(upstream.name, status, headers, body)
        return Failure(upstream.name, status, why or f"HTTP {status}", action, headers, body)

    # ------------------------------------------------------------------ answers

    def _status_error(self, status: int, upstreams_body: bytes, upstream: Upstream, job: Job) -> str:
        """An error status passed on (as the client gets it), as the ledger and the live page say
        it.  A bare 404 (no API error in the upstream's own body: those say what is missing, a
        model most often) on the endpoint ccswitch called is almost always a `base_url` that misses
        part of the upstream's path (`/v1`): said there, and in the log once per upstream and URL
        (the client sees only the 404)."""
        if status != 404 or job.request.endpoint == Endpoint.COUNT_TOKENS or upstream.base_url == "original" \
                or protocols.error_object(json_or_none(upstreams_body)) is not None:
            return f"HTTP {status}"
        try:
            path = urlsplit(upstream_url(upstream, job.request)).path
        except RenderError:
            return f"HTTP {status}"
        said = f"HTTP 404 ({upstream.name} has no {path}: check its base_url)"
        if (upstream.name, upstream.base_url) not in self._told_missing:
            self._told_missing.add((upstream.name, upstream.base_url))
            log.warning("ccswitch: upstream %s answered 404 for %s: its base_url (%s) may miss part of the "
                        "upstream's path, such as /v1", upstream.name, path, upstream.base_url)
        return said

    async def _deliver(self, job: Job, upstream: Upstream, reply: Reply, sink: Sink) -> None:
        translation = translation_for(job.request.client_protocol, upstream.protocol)
        upstreams_body = reply.body     # before it is put in the client's API's words
        if reply.translated is False and not 200 <= reply.status < 300:
            reply = translation.error_reply(job.request, reply)
        job.upstream, job.status = reply.upstream, reply.status
        job.error = job.error or (None if 200 <= reply.status < 300 else reply.reason or self._status_error(
            reply.status, upstreams_body, upstream, job))
        headers = reply.headers
        if reply.status in (401, 403) and upstream.auth != "client":
            # the key refused is the rules', not the client's: no retry of the client's mends it
            # (Claude Code retried an upstream's 401 for minutes before saying anything)
            headers = [h for h in headers if h[0].lower() != "x-should-retry"] + [("x-should-retry", "false")]
        elif reply.status in (429, 503):
            headers = limit_passed_on(headers, job.request.headers)
        await _answer(job, sink, reply.status, headers + marks(job), reply.body)

    async def _deliver_own_error(self, job: Job, sink: Sink, status: int, message: str) -> None:
        job.status, job.error = status, message
        headers, body = protocols.own_error(job.request.client_protocol, status, message, (("retry-after", "10"),))
        await _answer(job, sink, status, headers, body)


def _read_by(job: Job, upstream: Upstream) -> tuple[list[int], set[int]] | None:
    """The seals of the input `upstream` is sent, and the ids of its items (alive in a Codex
    socket's turn; nothing else is kept of them)."""
    body = job.converted.get(upstream.name) or job.request.json
    items = body.get("input") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return None
    return seals_in(body, "input"), ({id(item) for item in items} if job.turn is not None else set())


def _account(upstream: Upstream) -> tuple:
    """Whose sealed reasoning an upstream takes: its name and identity (a new key, a new account)."""
    return upstream.name, upstream.fingerprint()


async def _answer(job: Job, sink: Sink, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    job.ttfb_ms = job.elapsed_ms()
    await send_whole(sink, status, headers, body)


def _said(status: int | None, body: bytes, outgoing: OutgoingRequest | None, job: Job) -> str | None:
    """An error answer's own message for the live page, scrubbed whole before it is cut: a key
    cut in two is not found after."""
    if outgoing is None or status is None or 200 <= status < 300:
        return None
    return protocols.said_in(body, outgoing.every_secret(job.rules))
