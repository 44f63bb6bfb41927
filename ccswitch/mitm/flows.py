"""What ccswitch writes onto a mitmproxy flow itself: its own answers, in the API the client
speaks, and credentials shown as `<redacted>` (in mitmweb and `mitmdump -w` files)."""

from __future__ import annotations

from mitmproxy import http

from ccswitch.routing.classify import classify
from ccswitch.vocab import CLIENT_PROTOCOL, Protocol
from ccswitch.wire import protocols
from ccswitch.wire.headers import to_wire
from ccswitch.wire.redact import CREDENTIAL_HEADERS, REDACTED

#: the host whose every path the proxy answers itself with the live page (as mitmproxy does `mitm.it`)
LIVE_HOST = "ccswitch"


def error_response(protocol: str, status: int, message: str, extra: dict | None = None) -> http.Response:
    headers, body = protocols.own_error(protocol, status, message, tuple((extra or {}).items()))
    return http.Response.make(status, body, http.Headers(to_wire(headers)))


def likely_protocol(request: http.Request) -> Protocol:
    """The API a request most likely speaks: its path's route, else Anthropic's marks, else OpenAI's."""
    match = classify("POST", request.path)
    if match is not None:
        return CLIENT_PROTOCOL[match.route]
    if "anthropic-version" in request.headers or "anthropic" in request.pretty_host:
        return Protocol.ANTHROPIC
    return Protocol.CHAT


def answer(flow: http.HTTPFlow, response: http.Response) -> None:
    """ccswitch answers the flow itself: nothing is sent on, and the comment says so."""
    redact_credentials(flow.request.headers)
    flow.response = response
    flow.comment = f"ccswitch: answered {response.status_code} itself"


def redact_credentials(headers: http.Headers) -> None:
    for name in CREDENTIAL_HEADERS:
        if name in headers:
            headers[name] = REDACTED
