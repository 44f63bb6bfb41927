"""Which flows are ccswitch's to route: a POST to a route's path (or a Codex WebSocket upgrade)
on a reverse listener or to an `intercept` host; and the replay of a flow it routed."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from ccswitch.config.models import Rules
from ccswitch.routing.classify import RouteMatch, classify


def route_of(flow: http.HTTPFlow, rules: Rules) -> RouteMatch | None:
    match = _classified(flow)
    return match if match is not None and is_api_flow(flow, rules) else None


def _classified(flow: http.HTTPFlow) -> RouteMatch | None:
    upgrade = flow.request.headers.get("upgrade", "").lower() == "websocket"
    return classify(flow.request.method, flow.request.path, upgrade)


def why_unrouted(flow: http.HTTPFlow, shown_path: str) -> str:
    """Why an API flow goes on as it came, for its comment (`shown_path`: its path as it may be
    shown, without a key in it)."""
    match = _classified(flow)
    if match is None:
        return f"no route takes {flow.request.method} {shown_path.split('?', 1)[0][:200]}"
    return f"the {match.route} route lists no upstreams"


def host_named(name: str) -> str:
    """A host name as the `intercept` list holds it: lower case, without the root's trailing dot
    (`api.anthropic.com.` is the same host, and its TLS was decrypted by its SNI, which has none)."""
    return name.lower().rstrip(".")


def is_api_flow(flow: http.HTTPFlow, rules: Rules) -> bool:
    """A flow to an API host: on a reverse listener, or to an `intercept` host; or the replay
    of a flow ccswitch routed, whatever it shows now (the upstream's URL, or an edit)."""
    return (isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode)
            or host_named(flow.request.pretty_host) in rules.intercept
            or replays_routed(flow))


def replays_routed(flow: http.HTTPFlow) -> bool:
    """mitmproxy replays (`is_replay`) a flow that ccswitch routed (its metadata)."""
    return flow.is_replay == "request" and "ccswitch" in flow.metadata


#: flow.metadata: answered from its head (`mitm.early`); the request hooks leave it be
EARLY_MARK = "ccswitch_early"


def answered_early(flow: http.HTTPFlow) -> bool:
    """Answered from its head; a replay of such a flow (its metadata copied) is a request anew."""
    return EARLY_MARK in flow.metadata and not flow.is_replay
