"""The request path's mitmproxy glue: admission, routing and hand-over of each flow, its
record at the end, and the drain at shutdown.  Thin by design: every decision is made
below (routing, translate, dial); this file only moves data between them and the flows."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, exceptions, http
from mitmproxy.flow import Error

from ccswitch.clock import utc_now
from ccswitch.config.models import Rules
from ccswitch.dial.dialer import Dialer
from ccswitch.dial.job import CLIENT_CLOSED, KILLED, Job
from ccswitch.dial.relay import JOB_HEADER, BufferSink, Relay, run_guarded
from ccswitch.dial.shutdown import RETRY_AFTER, SHUTTING_DOWN, Shutdown, close_proxy_connections, stop_on_hangup
from ccswitch.dial.ws_bridge import TICKET_HEADER
from ccswitch.mitm.answer_rows import AnswerRows
from ccswitch.mitm.codex_socket import CodexSockets
from ccswitch.mitm.flow_ends import ClientWatch, KilledStreams, client_left, goes_nowhere, gone_meanwhile, killed
from ccswitch.mitm.flows import (
    HeldBody,
    StreamCopy,
    answer,
    answer_error,
    attempts_line,
    comment_on,
    drop_body,
    error_response,
    fit_to_save,
    flows_are_kept,
    hold_body,
    keep_copy,
    mark_for_a_look,
    redact_credentials,
    restore_body,
    show_outcome,
    show_streaming,
    to_own_server,
    whole_response,
    without_client_keys,
)
from ccswitch.mitm.gateway import UPSTREAM_TLS_OPTIONS, Gateway, upstream_tls
from ccswitch.mitm.held import Holds
from ccswitch.mitm.known import Known
from ccswitch.mitm.lifecycle import hook_task, stopping, take_given_values
from ccswitch.mitm.planner import Planner
from ccswitch.mitm.quoted import QuotedKeys
from ccswitch.mitm.relay_link import link_relay, unlink_relay
from ccswitch.mitm.replay import as_the_client_sent, replayed_request
from ccswitch.mitm.router_options import add_options
from ccswitch.mitm.scope import answered_early, is_api_flow, replays_routed, route_of
from ccswitch.mitm.send_first import ANSWER_OPTIONS, AnswerTiming
from ccswitch.mitm.unrouted import Unrouted
from ccswitch.net import http1
from ccswitch.routing.admission import (
    body_problem,
    decoded_body,
    head_problem,
    origin_problem,
    parse_body,
    streamed,
    undecodable,
)
from ccswitch.routing.affinity import session_key
from ccswitch.routing.classify import RouteMatch
from ccswitch.vocab import CLIENT_PROTOCOL, Endpoint
from ccswitch.wire.exchange import ClientRequest
from ccswitch.wire.headers import from_wire
from ccswitch.wire.redact import NO_CLIENT_KEY, client_credential
from ccswitch.wire.sse import is_event_stream

log = logging.getLogger("ccswitch")
NOT_STARTED = "ccswitch failed to start (its log says why): nothing is routed"
#: ccswitch's answer to a new request once the shutdown drains: the next process takes it
_DRAINING = (503, SHUTTING_DOWN, {"retry-after": RETRY_AFTER, "connection": "close"})
CLOSE_FRAME_WAIT = 0.2     # seconds for mitmproxy to pass the bridge's close frames on at shutdown


class Router:
    """Hand routed flows to the dialer through the loopback relay."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.planner = Planner(gateway)
        self.dialer: Dialer | None = None
        self.relay: Relay | None = None
        self.failed_to_start = False    # the dialer, the relay or the socket bridge did not come up
        self.starting: asyncio.Task | None = None
        self.jobs: dict[str, Job] = {}   # flow id -> job, while the flow is live
        self.held_bodies: dict[str, HeldBody] = {}   # flow id -> a streamed request's body, while at the relay
        self.killed_streams = KilledStreams(self._stop_killed)
        self.unrouted = Unrouted(gateway)    # what goes on as it came: its comment, the offline answer
        self.inline: set[asyncio.Task] = set()   # hooks running the dialer for non-streamed requests
        self.shutdown = Shutdown()
        self.rows = AnswerRows(gateway, self.shutdown)   # the rows of answers given from the request hook
        self.holds = Holds()     # flows stopped by mitmproxy's intercept before they are routed
        self.sockets: CodexSockets | None = None   # Codex's WebSocket bridge, once running
        self.answer_timing = AnswerTiming()    # sent before mitmproxy's later passes, where no addon may change it
        self.flows_shown = True    # anyone shows or saves flows: bodies are kept on them (streams: a copy)
        self.quoted = QuotedKeys(gateway, "request")    # upstream keys a client quotes: sent as [redacted]
        # set once `running` has loaded the month's spend and opened the relay: mitmproxy opens
        # the listeners first, and a request must neither pass a budget that a ledger being read
        # (PostgreSQL: a connection) holds, nor pass unrouted, nor be sent to a relay not yet listening
        self.started = asyncio.Event()

    def load(self, loader) -> None:
        add_options(loader)
        take_given_values(loader.master.options)

    def running(self) -> None:
        # Not awaited by mitmproxy: its own addons after the scripts (the TLS settings) get their
        # `running` only once every addon before has had its own, and the listeners are open
        # meanwhile: a request let in then (not one routed: those wait for `started`) would find
        # them unset, and the error would end the start.
        self.starting = hook_task(self._start(), "router start")
        stop_on_hangup(ctx.master.shutdown)

    async def _start(self) -> None:
        gateway = self.gateway
        self.dialer = Dialer(gateway.health, allow_url=lambda url: gateway.allow_url(url),
                             client=http1.UpstreamClient(ssl_context=upstream_tls()),
                             quota=gateway.quota, sessions=gateway.sessions, events=gateway.events)
        gateway.connections = self.dialer.client.connection_counts
        gateway.in_flight = self._jobs_in_flight
        gateway.upstream_client = self.dialer.client
        self.relay = Relay(self.dialer.run, on_done=self.gateway.record_job, shutdown=self.shutdown)
        try:   # the spend so far this month, the relay and the bridge, before the first request is routed
            await gateway.start_spend(utc_now())
            await self.relay.start()
            link_relay(self.relay.address, self.relay.link)
            sockets = CodexSockets(self)
            await sockets.start()
            self.sockets = sockets
        except BaseException:
            self.failed_to_start = True
            raise
        finally:
            self.started.set()   # after a failure too: mitmproxy has logged it, and no request waits for good

    def done(self) -> asyncio.Task:
        return hook_task(self._stop(), "router stop")

    async def _stop(self) -> None:
        # mitmproxy awaits this while it still accepts connections: the requests in flight end
        # here, each with an answer and its usage row, before the listeners and the ledger close.
        # On a reload of the script the new addons take the new requests meanwhile, and the
        # client connections stay open.
        ending = stopping()
        proxyserver = ctx.master.addons.get("proxyserver")
        closing = self.rows.connections_closing = proxyserver is not None and ending
        # on a reload (or when mitmproxy dropped the script) these addons are out of its chain: no
        # flow's end reaches them any more, so what is in flight is the work still running
        await self.shutdown.drain(self._in_flight if ending else self._working, ctx.options.ccswitch_shutdown_grace,
                                  self._cut, process_ends=ending)
        if closing:   # no new connection while the bridged sockets are told to go
            await proxyserver.servers.update([])
        if self.sockets:
            # before mitmproxy's client connections end: each bridged socket's close frame (1001)
            # goes out through mitmproxy to its client, which then reconnects, instead of a cut (1006)
            if await self.sockets.stop() and closing:
                await asyncio.sleep(CLOSE_FRAME_WAIT)
        if closing:
            await close_proxy_connections(proxyserver)
        if self.relay:
            unlink_relay(self.relay.address)
            await self.relay.stop()
        if self.dialer:
            await self.dialer.aclose()
        for job in self.jobs.values():   # answered from the hook, but mitmproxy ended the flow unsent
            if not job.relayed:
                self.gateway.record_job(job)
        self.jobs.clear()
        self.rows.stop()
        self.gateway.stop_reading_spend()
        await asyncio.to_thread(self.gateway.close)

    def _jobs_in_flight(self) -> list[Job]:
        """The requests under way (for the live page): routed flows' jobs and bridged turns."""
        return [*self.jobs.values(), *(self.sockets.bridge.turning.values() if self.sockets else ())]

    def _in_flight(self) -> int:
        # a job leaves `jobs` when its flow ends, its task a moment before or after
        return max(len(self.jobs), self._dialing()) + self._beside()

    def _working(self) -> int:
        """What is in flight once these addons are out of mitmproxy's chain (a reload, the script
        dropped): no flow's end reaches them, so the work that still runs."""
        return self._dialing() + self._beside()

    def _dialing(self) -> int:
        return len(self.inline) + (self.relay.running if self.relay else 0)

    def _beside(self) -> int:
        # a bridged socket's turns are jobs of their own, never in `jobs`; activation probes' rows
        # go to the ledger too
        return (self.sockets.bridge.running if self.sockets else 0) + len(self.gateway.probes)

    def _cut(self) -> None:
        for task in [*self.inline, *self.gateway.probes]:
            task.cancel()
        if self.relay:
            self.relay.cut()
        if self.sockets:
            self.sockets.bridge.cut()

    def configure(self, updated) -> None:
        if "ccswitch_shutdown_grace" in updated and ctx.options.ccswitch_shutdown_grace < 0:
            raise exceptions.OptionsError("ccswitch_shutdown_grace must be 0 or more seconds")
        if updated & UPSTREAM_TLS_OPTIONS:
            context = upstream_tls()   # checked now, so a bad CA file is refused at once
            if self.dialer:
                self.dialer.client.ssl_context = context
        if "ccswitch_max_body" in updated and ctx.options.ccswitch_max_body <= 0:
            raise exceptions.OptionsError("ccswitch_max_body must be a positive number of bytes")
        if "ccswitch_keep_stream" in updated and ctx.options.ccswitch_keep_stream < 0:
            raise exceptions.OptionsError("ccswitch_keep_stream must be 0 or more bytes (0: keep none)")
        if "ccswitch_ledger" in updated:
            self.gateway.open_ledger(ctx.options.ccswitch_ledger)
        if updated & ANSWER_OPTIONS:
            self.answer_timing.configure(ctx.options)
        if updated & {"save_stream_file", "flow_detail"}:
            self.flows_shown = flows_are_kept(ctx.master, ctx.options)

    # ------------------------------------------------------------------ hooks

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or answered_early(flow):
            return
        await self._request(flow)
        if flow.response is not None and getattr(ctx.options, "intercept_active", False):
            # answered here: mitmproxy's intercept addon, whose hook runs after this one, would
            # stop it now by a filter that matches answers (`~s`), before it shows what became
            # of it, and once more at its response; that one is the stop the filter means
            self.holds.let_go.add(flow.id)

    async def _request(self, flow: http.HTTPFlow) -> None:
        replayed = replays_routed(flow)
        unreplayable = as_the_client_sent(flow) if replayed else None
        if not self.started.is_set():
            await self.started.wait()
        match = route_of(flow, self.gateway.rules)
        if match is not None and self.holds.wanted(flow):   # mitmweb's intercept: route what the user leaves
            names = self.gateway.rules.routes.for_route(match.route)
            await self.holds.hold(flow, f"routed by the {match.route} route ({', '.join(names)})" if names
                                  else f"passed on unrouted (the {match.route} route lists no upstreams)")
            if flow.response or gone_meanwhile(flow):     # answered by the user, killed, or its client left
                goes_nowhere(flow)
                return
            match = route_of(flow, self.gateway.rules)      # what the request is now
        rules = self.gateway.rules
        if match is not None and self.gateway.first_spend_read is not None:
            await self.gateway.spend_read_for(rules)     # a reload may have set a budget meanwhile
            rules = self.gateway.rules
        if gone_meanwhile(flow):
            goes_nowhere(flow)
            return
        if match is None or not rules.routes.for_route(match.route):
            self.unrouted.passed_on(flow, replayed)  # a route with no upstreams is not ours either
            return
        if unreplayable:
            answer_error(flow, CLIENT_PROTOCOL[match.route], 400, unreplayable)
            body, client = replayed_request(flow)    # the row names the client and model it replays
            self.rows.refused(flow, match, Known(utc_now(), body=body, client=client), 400, unreplayable)
            return
        if self.relay is None or self.failed_to_start:   # mitmproxy logged why; not passed on unrouted
            answer_error(flow, CLIENT_PROTOCOL[match.route], 503, NOT_STARTED)
            self.rows.refused(flow, match, Known(utc_now()), 503, NOT_STARTED)
            return
        known = Known(utc_now())
        try:
            await self._route(flow, match, rules, known)
        except Exception:
            # never let it pass on unrouted: mitmproxy would log the error, skip ccswitch's other
            # hooks (the client-key gate among them) and send the request, the client's key and
            # all, to where the client addressed it
            log.exception("ccswitch: a %s request failed inside ccswitch", match.route)
            self._failed_inside(flow, match, known)

    async def _route(self, flow: http.HTTPFlow, match: RouteMatch, rules: Rules, known: Known) -> None:
        client_protocol = CLIENT_PROTOCOL[match.route]

        looked = False      # once the body was looked through for quoted keys, the flow shows it so

        def refuse(status: int, message: str, extra: dict | None = None, *, read: bool = True) -> None:
            message = rules.scrub(message)    # it may quote the model, and the client may send anything as one
            answer_error(flow, client_protocol, status, message, extra)
            self.rows.refused(flow, match, known, status, message)
            if not looked:     # sent nowhere, but on view
                self.quoted.off_refused(flow, ctx.options.ccswitch_max_body, read=read)

        # the bytes as received, but the upstreams' keys it may quote (an x-debug header, a ?dbg=)
        headers = self.quoted.off_head(flow, from_wire(flow.request.headers.fields))
        known.session = session_key(headers, None)    # a refusal's row has the header's, before any body
        client = rules.client_named(client_credential(headers)) if rules.client_keys else None
        if client is None and replays_routed(flow):
            # its key shows as `<redacted>`; a replay is the user's doing (mitmweb, `client_replay`),
            # never a client's: it comes as the client whose request it replays
            client = rules.client_called(flow.metadata["ccswitch"].get("client"))
        if rules.client_keys:       # a key goes no further, wherever the client put it, refused or not
            headers = without_client_keys(flow, headers, rules)
            if client is None:
                return refuse(401, NO_CLIENT_KEY, read=False)
        elif refusal := origin_problem(headers):   # the live page posts nothing
            return refuse(*refusal)
        client_name = known.client = client.name if client is not None else None
        # nothing is sent upstream until the budget's next period; a request's row keeps its model
        over_budget = self.planner.client_over_budget(client_name)
        if match.endpoint == Endpoint.WEBSOCKET:
            # a client over its budget is refused turn by turn (in-band, or over HTTPS after a
            # 426), not at the upgrade: Codex reads a turn's refusal but not a refused upgrade's body
            if self.shutdown.draining:    # the bridge closes its sockets soon: Codex goes on elsewhere
                return refuse(*_DRAINING)
            if rules.codex_websocket == "bridge" and self.sockets is not None:
                return self.sockets.accept(flow, headers, client)
            # Codex falls back to HTTPS at once: not an error, and no request to record
            answer(flow, error_response(client_protocol, 426, "ccswitch serves Responses over HTTPS, not WebSocket"))
            comment_on(flow, "ccswitch: WebSocket declined (426): Codex goes on over HTTPS")
            return
        max_body = ctx.options.ccswitch_max_body
        raw = flow.request.raw_content or b""
        refusal = (head_problem(flow.request.path, headers)
                   or body_problem(flow.request.headers.get("content-type", ""), len(raw), max_body))
        if refusal:
            return refuse(*refusal)
        encoding = flow.request.headers.get("content-encoding", "")
        sent, raw = raw, decoded_body(encoding, raw, max_body)
        if raw is None:   # a small compressed body can inflate a lot: never inflate past the limit
            return refuse(413, f"request body too large once decoded (over {max_body} bytes)")
        if (scrubbed := self.quoted.without(raw)) is not None:
            # on the flow as the upstreams get it: decoded, not compressed again
            flow.request.headers.pop("content-encoding", None)
            flow.request.content = raw = scrubbed
        looked = True
        body, problem = parse_body(raw)
        if problem:
            if not raw and flow.is_replay == "request":
                # a copy made in mitmweb while the flow streamed: its body is put back when it ends
                problem += " (a copy of a flow made while it streamed has none: copy it once it has ended)"
            return refuse(400, (raw is sent and undecodable(encoding)) or problem)
        known.body = body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return refuse(400, "the request body names no model")
        session = known.session = known.session or session_key((), body)   # the headers' come first
        if over_budget:
            return refuse(*over_budget)
        if self.shutdown.draining:   # those in flight finish; new ones are for the next process
            return refuse(*_DRAINING)
        req = ClientRequest(route=match.route, endpoint=match.endpoint, method="POST",
                            url=flow.request.url, headers=headers, body=raw, json=body, model=model,
                            stream=streamed(body, match.endpoint), client_protocol=client_protocol)
        job = self.planner.plan_job(req, flow.id, client_name, session, shown=self.flows_shown)
        if not isinstance(job, Job):
            return refuse(*job)
        self.jobs[flow.id] = job
        redact_credentials(flow.request)
        flow.metadata["ccswitch"] = {"route": match.route, "endpoint": match.endpoint, "model": rules.scrub(model),
                                     "client": client_name, "client_url": flow.request.url}   # for a replay
        # an HTTP/2 client's cancel (a stream reset) reaches no hook while the hook runs, but it
        # ends the relay's connection: its requests go there even when nothing is streamed
        job.relayed = req.stream or flow.request.is_http2
        if not job.relayed:
            # nothing to stream: answer from this hook, without the relay hop
            await self._run_inline(flow, job)
            return
        self.relay.register(job)
        if self.flows_shown:   # back on the flow at its end; otherwise no one would ever see it
            self.held_bodies[flow.id] = hold_body(flow.request)
        else:
            drop_body(flow.request)
        to_own_server(flow, self.relay.port)
        flow.request.headers[JOB_HEADER] = job.token
        if self.flows_shown:    # until its first bytes the flow points at the relay, with its one-time ticket
            comment_on(flow, "ccswitch: on its way through ccswitch's relay to " + ", then ".join(
                u.name for u in job.candidates[: job.rules.failover.max_attempts]))
        self.killed_streams.add(flow)

    def _stop_killed(self, flow: http.HTTPFlow) -> None:
        """A stream killed in mitmproxy ends now, its upstream request with it (not yet at the
        relay: the relay ends it unsent when it comes, or `_finish` records it if it never does)."""
        job = self.jobs.get(flow.id)
        if job is not None and self.relay is not None:
            job.killed = True
            self.relay.cancel(job)

    def _failed_inside(self, flow: http.HTTPFlow, match: RouteMatch, known: Known) -> None:
        """A bug of ccswitch's on the way: the client gets a 500 in its API's shape, the ledger its row."""
        if flow.response is not None:   # answered already; its row is written or on its way
            return
        job = self.jobs.pop(flow.id, None)
        if job is not None and self.relay is not None:
            self.relay.forget(job)
        self.held_bodies.pop(flow.id, None)
        message = "ccswitch failed on this request (an internal error: its log has the details)"
        answer_error(flow, CLIENT_PROTOCOL[match.route], 500, message)
        mark_for_a_look(flow)
        self.rows.refused(flow, match, known, 500, message)

    async def _run_inline(self, flow: http.HTTPFlow, job: Job) -> None:
        """The dialer runs in the hook's own task (no task of its own, no wait set: the answer
        is one wake-up away); a watch cancels it when the client goes, the shutdown's cut too.
        Its row is recorded once the answer is sent (`_finish`)."""
        sink = BufferSink()
        hook = asyncio.current_task()
        watch = ClientWatch(flow, hook, on_kill=job.mark_killed)
        self.inline.add(hook)
        try:
            await run_guarded(self.dialer.run, job, sink, self.shutdown)
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            hook.uncancel()     # the client went away (or the flow was killed): the upstream request was cancelled at once
            job.client_left()     # the watch marked a killed one so before it cancelled
            flow.response = http.Response.make(499, b"", {})
            return
        finally:
            watch.stop()
            self.inline.discard(hook)
        if self.shutdown.cutting and hook.cancelling():
            hook.uncancel()     # the cut was answered (run_guarded's 503): mitmproxy's task goes on
        kind = self.answer_timing.kind(ctx.master.addons.lookup)
        flow.response = whole_response(sink.status, sink.headers, sink.body, kind)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if not is_event_stream(flow.response.headers.get("content-type")):
            return
        job = self.jobs.get(flow.id)
        if job is not None:
            if not job.relayed:
                return      # answered whole from the request hook (an SSE-typed error): sent as it is
            flow.request.headers.pop(JOB_HEADER, None)   # the relay has it: no ticket of ours on view
            if self.flows_shown:        # someone shows or saves flows: worth pointing it at its upstream now
                show_streaming(flow, job)
        elif not is_api_flow(flow, self.gateway.rules):      # passed on unrouted (e.g. a route with no upstreams)
            return
        # a routed stream from the relay, or an API stream passed through untouched: as it comes
        # where flows are shown, a copy (of nothing, with keep_stream 0) that says what was not kept
        flow.response.stream = StreamCopy(ctx.options.ccswitch_keep_stream) if self.flows_shown else True

    def update(self, flows) -> None:
        if self.holds.let_go:
            self.holds.update(flows)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)
        fit_to_save(flow)       # mitmproxy's `-w` writes it after this hook

    def error(self, flow: http.HTTPFlow) -> None:
        job = self.jobs.get(flow.id)
        if job is not None and job.killed and not killed(flow):
            # the relay ended a killed stream, and mitmproxy wrote over the kill with that end
            # ("server closed connection"); the kill back, it ends the client's request as its own
            # kills do (HTTP/1: the connection dropped; HTTP/2: the stream reset), not with a 502
            # page in no API's format, and the flow says it was killed
            flow.error = Error(Error.KILLED_MESSAGE)
        self._finish(flow)
        fit_to_save(flow)

    async def websocket_end(self, flow: http.HTTPFlow) -> None:
        if self.sockets is not None:
            await self.sockets.ended(flow)      # mitmproxy's `-w` saves it after this hook
        fit_to_save(flow)       # a Codex socket's comment holds each turn's attempts

    # ------------------------------------------------------------------ helpers

    def _finish(self, flow: http.HTTPFlow) -> None:
        self.rows.handed_on(flow)
        self.killed_streams.discard(flow.id)
        self.holds.forget(flow)
        job = self.jobs.pop(flow.id, None)
        if job is None:
            if self.sockets is not None and TICKET_HEADER in flow.request.headers:
                self.sockets.settled(flow)
            if is_api_flow(flow, self.gateway.rules):
                redact_credentials(flow.request)  # passed through: sent already, hide now
            keep_copy(flow)     # of an API stream passed through
            return
        if not job.relayed:
            self.rows.answered(job)      # answered from the request hook: its row once that is sent
        elif self.relay and self.relay.forget(job):
            # mitmproxy never delivered it to the relay (e.g. the client left at once)
            job.error = (KILLED if killed(flow) else CLIENT_CLOSED if client_left(flow)
                         else flow.error.msg if flow.error else "not dispatched")
            self.gateway.record_job(job)
        elif flow.error is not None and job.latency_ms is None:
            job.flow_ended_first()    # the relay is about to cancel it
        flow.request.headers.pop(JOB_HEADER, None)
        if (held := self.held_bodies.pop(flow.id, None)) is not None:
            restore_body(flow.request, held)
        show_outcome(flow, job)
        if (line := attempts_line(job)) is not None:
            log.info("ccswitch: %s %s", job.request.route, line)

