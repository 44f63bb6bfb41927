"""Refusals from a request's head, before mitmproxy reads its body.

mitmproxy reads a whole body into memory before the request hook: a client with no key could
send gigabytes to a listener beyond loopback, and be refused only once they were all in.  A
request whose body is large (or of unknown length) and that ccswitch would refuse whatever that
body holds — no valid client key, a foreign web page's, a bad head, a content type or declared
size ccswitch never takes — is answered from its head instead, through `dial.early`; the body
is discarded as it comes.  A small body is read and judged by the router, the live page and the
client-key gate as ever; these checks are theirs, repeated here from the head."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, http
from mitmproxy.proxy import mode_specs

from ccswitch.clock import utc_now
from ccswitch.dial.early import EARLY_HEADER, EarlyAnswers, http_answer
from ccswitch.mitm.flows import CLIENT_PROTOCOL, comment_on, error_response, from_codex, likely_protocol
from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.key_shield import KeyShield
from ccswitch.mitm.known import Known
from ccswitch.mitm.lifecycle import hook_task
from ccswitch.mitm.live_page import live_path, query_key, text_answer
from ccswitch.mitm.quoted import QuotedKeys
from ccswitch.mitm.safety import beyond_loopback
from ccswitch.mitm.scope import EARLY_MARK, route_of
from ccswitch.routing.admission import body_problem, head_problem, origin_problem
from ccswitch.routing.affinity import session_key
from ccswitch.routing.classify import RouteMatch
from ccswitch.vocab import Endpoint
from ccswitch.wire import headers as wire
from ccswitch.wire.redact import NO_CLIENT_KEY, client_credential

log = logging.getLogger("ccswitch")

#: a body declared larger than this (or of unknown length) is judged from the head
EARLY_FROM = 1 << 20


def declared_length(headers: http.Headers) -> int | None:
    """The body's length as the head declares it (0: none), or None when it comes in chunks."""
    if "transfer-encoding" in headers:
        return None
    value = headers.get("content-length")
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return None


def _discard(data: bytes) -> list[bytes]:
    return []      # nothing to send: an empty piece would go out as a chunked body's end


class EarlyRefusal:
    def __init__(self, gateway: Gateway, shield: KeyShield) -> None:
        self.gateway, self.shield = gateway, shield
        self.answers = EarlyAnswers()
        self.quoted = QuotedKeys(gateway, "request")    # upstream keys its URL or headers quote
        self._shown: dict[str, tuple[str, str]] = {}    # flow id -> (the URL the client asked, its ticket)

    def running(self) -> None:
        # sync, as every hook mitmproxy may call from a script reload (an async `done` there
        # raises, and the reload leaves the proxy with none of ccswitch's addons)
        self._starting = hook_task(self.answers.start(), "early answers start")

    def done(self) -> asyncio.Task:
        return hook_task(self.answers.stop(), "early answers stop")

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or flow.is_replay or not self.answers.port:
            return
        length = declared_length(flow.request.headers)
        if length is not None and length <= EARLY_FROM:
            return
        hidden = self.shield.hidden.get(flow.id)       # its keys as they came (the flow shows <redacted>)
        fields = hidden.own_fields if hidden is not None else flow.request.headers.fields
        path = hidden.own_path if hidden is not None else flow.request.path
        headers = wire.from_wire(fields)
        rules = self.gateway.rules
        match = route_of(flow, rules)
        routed = match if match is not None and rules.routes.for_route(match.route) else None
        presented = client_credential(headers)
        client = rules.client_named(presented) if presented is not None and rules.client_keys else None
        refusal = self._refusal(flow, routed, client is not None, headers, path, length)
        if refusal is None:
            return
        self._refuse(flow, *refusal)
        if routed is not None:   # a routed request's row, as every one has (the router's, with the client it named)
            known = Known(utc_now(), session=session_key(headers, None), client=client.name if client else None)
            self.gateway.record_own_answer(known.own_answer_row(flow.id, routed, refusal[1], refusal[2]))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._settled(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._settled(flow)

    # ------------------------------------------------------------------ helpers

    def _refusal(self, flow: http.HTTPFlow, routed: RouteMatch | None, key_ok: bool, headers: list[tuple[str, str]],
                 path: str, length: int | None) -> tuple[str, int, str] | None:
        """(the API format, status, message) of the answer the request gets whatever its body, or
        None.  `routed`: its route, if one with upstreams takes it; `key_ok`: it named a client key."""
        rules = self.gateway.rules
        client = flow.client_conn
        beyond = isinstance(client.proxy_mode, mode_specs.ReverseMode) and beyond_loopback(
            client, ctx.options.listen_host or "127.0.0.1")
        if live_path(flow) is not None:
            if rules.client_keys and (key_ok or any(rules.client_key_ok(k) for k in query_key(path))):
                return None
            return ("text", 401, NO_CLIENT_KEY) if rules.client_keys or beyond else None
        if routed is None:
            # passed on unrouted: only beyond loopback does it need a key (the client-key gate)
            return (likely_protocol(flow.request), 401, NO_CLIENT_KEY) if beyond and not key_ok else None
        protocol = CLIENT_PROTOCOL[routed.route]
        if rules.client_keys and not key_ok:
            return protocol, 401, NO_CLIENT_KEY
        if not rules.client_keys and (foreign := origin_problem(headers)):
            return protocol, *foreign
        if routed.endpoint == Endpoint.WEBSOCKET:
            return None
        problem = head_problem(path, headers) or (
            body_problem(flow.request.headers.get("content-type", ""), length, ctx.options.ccswitch_max_body)
            if length is not None else None)
        return (protocol, *problem) if problem else None

    def _refuse(self, flow: http.HTTPFlow, protocol: str, status: int, message: str) -> None:
        message = self.gateway.rules.scrub(message)     # it may quote what the client sent
        if protocol == "text":
            response = text_answer(status, message + "\n")      # the live page's, as it would have answered
        else:
            response = error_response(protocol, status, message,
                                      codex=from_codex(flow.request))
        ticket = self.answers.register(http_answer(status, response.reason, list(response.headers.fields),
                                                   response.raw_content or b""))
        self.shield.hidden.pop(flow.id, None)      # its keys stay <redacted>: nothing of it goes upstream
        self.quoted.off_head(flow, wire.from_wire(flow.request.headers.fields))   # nor stands on its flow
        self._shown[flow.id] = (flow.request.url, ticket)
        request = flow.request
        request.headers.pop("expect", None)        # no `100 Continue`: the answer comes before any upload
        request.stream = _discard
        request.scheme, request.host, request.port = "http", "127.0.0.1", self.answers.port
        request.headers[EARLY_HEADER] = ticket
        flow.metadata[EARLY_MARK] = status
        comment_on(flow, f"ccswitch: answered {status} itself from the request's head (its body was not read): {message}")
        log.info("ccswitch: refused a request from its head (%d: %s)", status, message)

    def _settled(self, flow: http.HTTPFlow) -> None:
        """The answer came (or the flow ended): the flow shows the URL the client asked for again."""
        shown = self._shown.pop(flow.id, None)
        if shown is None:
            return
        url, ticket = shown
        self.answers.forget(ticket)
        flow.request.headers.pop(EARLY_HEADER, None)
        flow.request.url = url
        if flow.request.raw_content is None:    # its body went nowhere as it came: mitmweb shows none
            flow.request.raw_content = b""     # (its content-length still says what was declared)
