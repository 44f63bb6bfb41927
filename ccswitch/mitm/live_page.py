"""The live page, its JSON and its Prometheus metrics, served by the proxy itself — like
mitmproxy's `mitm.it`: under `/_ccswitch/` on a reverse listener, and for the host `ccswitch`
(any path) through the regular proxy.  Such a request is answered here, before the router and
the client-key gate see it: it is never routed, never forwarded and never recorded.

Access follows the proxy's rules: with `client_keys` every request needs one (x-api-key,
Bearer, or `?key=` for a browser); without them, a reverse listener serves loopback only
(other listeners beyond loopback already authenticate their clients: see `safety`).
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime
from urllib.parse import unquote

from mitmproxy import ctx, http
from mitmproxy.proxy import mode_specs

from ccswitch.mitm.flows import LIVE_HOST, answer, redact_credentials, without_client_keys
from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.safety import beyond_loopback
from ccswitch.mitm.scope import answered_early, host_named
from ccswitch.report.live_html import CONTENT_SECURITY_POLICY, page_html
from ccswitch.report.live_status import InstanceView, live_status, upstream_views
from ccswitch.report.metrics import CONTENT_TYPE as METRICS_TYPE
from ccswitch.report.metrics import metrics_text
from ccswitch.routing.admission import origin_problem
from ccswitch.wire import headers as wire
from ccswitch.wire.exchange import json_bytes
from ccswitch.wire.redact import client_credential

log = logging.getLogger("ccswitch")
_OWN_PAGES = frozenset({LIVE_HOST})     # a page's own requests come from its own origin

PREFIX = "/_ccswitch"
KEY_PARAM = "key"
_COMMON = {"cache-control": "no-store", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def live_path(flow: http.HTTPFlow) -> str | None:
    """The page path a flow asks for (`/_ccswitch/...`), or None when it is not for the live page."""
    path = unquote(flow.request.path.split("?", 1)[0])
    if isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return path
        return None
    if host_named(flow.request.pretty_host) == LIVE_HOST:
        return path
    return None


def query_key(path: str) -> list[str]:
    """The `?key=` values of a page URL as typed: a form would read its `+` as a space, but a
    key pasted into the address bar (base64 keys hold `+`) means the character itself."""
    query = path.partition("?")[2]
    return [unquote(value) for name, _, value in (pair.partition("=") for pair in query.split("&"))
            if unquote(name) == KEY_PARAM and value]


class LivePage:
    """Answer the live page's requests from the gateway's boards."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or answered_early(flow):
            return
        path = live_path(flow)
        if path is None:
            return
        allowed = self._allowed(flow)
        redact_credentials(flow.request)      # no key text stays on the flow (mitmweb, -w, the console)
        without_client_keys(flow, wire.from_wire(flow.request.headers.fields), self.gateway.rules)
        if not self.gateway.rules.client_keys:      # with client keys, the key decides
            foreign = origin_problem(wire.from_wire(flow.request.headers.fields), _OWN_PAGES)
            if foreign is not None:
                return answer(flow, text_answer(foreign[0], foreign[1] + "\n"), foreign[1])
        if not allowed:      # a replay too: its key shows as <redacted>
            return answer(flow, text_answer(401, "this page needs a ccswitch client key: send it as x-api-key or "
                                            "Authorization: Bearer, or open /_ccswitch/?key=YOUR_CLIENT_KEY\n"),
                          "missing or invalid ccswitch client key")
        if flow.request.method not in ("GET", "HEAD"):
            return answer(flow, text_answer(405, "only GET\n", {"allow": "GET, HEAD"}))
        answer(flow, self._serve(path))
        if flow.request.method == "HEAD":
            # raw_content: the `content` setter would rewrite content-length to 0, and a HEAD
            # answer's length must be the one a GET would send (RFC 9110 §8.6)
            flow.response.raw_content = b""

    def _allowed(self, flow: http.HTTPFlow) -> bool:
        rules = self.gateway.rules
        if rules.client_keys:
            presented = client_credential(wire.from_wire(flow.request.headers.fields))
            if presented is not None:
                return rules.client_key_ok(presented)
            return any(rules.client_key_ok(value) for value in query_key(flow.request.path))
        client = flow.client_conn
        # as the client-key gate: without keys nobody beyond loopback passes a reverse listener
        return not (isinstance(client.proxy_mode, mode_specs.ReverseMode)
                    and beyond_loopback(client, ctx.options.listen_host or "127.0.0.1"))

    def _serve(self, path: str) -> http.Response:
        if path in (PREFIX, PREFIX + "/", "/"):
            return self._page()
        if path == PREFIX + "/status.json":
            return http.Response.make(200, json_bytes(self._status()), {"content-type": "application/json", **_COMMON})
        if path == PREFIX + "/metrics":
            return http.Response.make(200, self._metrics().encode(), {"content-type": METRICS_TYPE, **_COMMON})
        return text_answer(404, "not a ccswitch page: try /_ccswitch/, /_ccswitch/status.json or /_ccswitch/metrics\n")

    def _page(self) -> http.Response:
        return http.Response.make(200, page_html(self._status()).encode(), {
            "content-type": "text/html; charset=utf-8", "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-frame-options": "DENY", **_COMMON})

    def _views(self, now: datetime, running: list):
        gateway = self.gateway
        return upstream_views(gateway.rules, gateway.health, gateway.quota, gateway.sessions, now, gateway.spend,
                              running, gateway.connections(), gateway.activations.upcoming(gateway.rules))

    def _status(self) -> dict:
        rules, running = self.gateway.rules, self.gateway.in_flight()
        now = datetime.now(rules.tz)
        return live_status(self.gateway.live, self._views(now, running), rules, now, running, self.gateway.spend,
                           self.gateway.rules_file.not_applied, self._instance())

    def _metrics(self) -> str:
        now, running = datetime.now(self.gateway.rules.tz), self.gateway.in_flight()
        return metrics_text(self.gateway.live, self._views(now, running), running, self._instance())

    def _instance(self) -> InstanceView:
        ledger, state = self.gateway.ledger, self.gateway.state
        shown = {} if ledger is None else {
            "ledger_waiting": ledger.pending, "ledger_dropped": self.gateway.ledger_rows_dropped,
            "ledger_trouble": ledger.trouble}
        return InstanceView(host=socket.gethostname(), pid=os.getpid(),
                            ledger=ledger.backend.label if ledger is not None else None, **shown,
                            state=state.where, state_shared=state.shared, state_up=state.up)


def text_answer(status: int, message: str, extra: dict | None = None) -> http.Response:
    return http.Response.make(status, message.encode(), {"content-type": "text/plain; charset=utf-8",
                                                          **_COMMON, **(extra or {})})
