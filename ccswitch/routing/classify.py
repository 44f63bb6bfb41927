"""Which client API a request speaks, decided by its method and path alone (any host)."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass

from ccswitch.vocab import Endpoint, Route

_PATHS = {
    "/v1/messages": (Route.CLAUDE, Endpoint.MESSAGES),
    "/v1/messages/count_tokens": (Route.CLAUDE, Endpoint.COUNT_TOKENS),
    "/v1/responses": (Route.CODEX, Endpoint.RESPONSES),
    "/responses": (Route.CODEX, Endpoint.RESPONSES),
    "/backend-api/codex/responses": (Route.CODEX, Endpoint.RESPONSES),
    "/openai/responses": (Route.CODEX, Endpoint.RESPONSES),
    "/v1/chat/completions": (Route.CHAT, Endpoint.CHAT),
}


@dataclass(frozen=True)
class RouteMatch:
    route: str      # claude | codex | chat
    endpoint: str   # messages | count_tokens | responses | chat | websocket


def classify(method: str, path: str, websocket_upgrade: bool = False) -> RouteMatch | None:
    """Route by path on any host; only POSTs (and Codex's WebSocket upgrade) are routed."""
    bare = path.split("?", 1)[0]
    if len(bare) > 1:
        bare = bare.rstrip("/")
    hit = _PATHS.get(bare)
    if hit is None:
        return None
    route, endpoint = hit
    if method == "POST":
        return RouteMatch(route, endpoint)
    if method == "GET" and websocket_upgrade and route == Route.CODEX:
        return RouteMatch(route, Endpoint.WEBSOCKET)
    return None


def base_url_hint(path: str, routes: Collection[str]) -> str | None:
    """What the client's base URL most likely gets wrong, for a path ccswitch does not route that
    a path of one of `routes` (those listing upstreams) explains: `/v1/v1/messages` (a base URL
    given with the `/v1` the client adds itself), `/api/v1/responses` (one with a prefix too many)
    or `/chat/completions` (one without the `/v1` an OpenAI client leaves to it), or a path a
    letter off one of them; None otherwise."""
    bare = path.split("?", 1)[0].rstrip("/")
    if bare in _PATHS:
        return None
    if "/v1" + bare in _PATHS and _PATHS["/v1" + bare][0] in routes:
        return f"ccswitch routes /v1{bare}, not {bare}: the client's base URL likely lacks its /v1"
    meant = max((known for known in _PATHS if bare.endswith(known) and _PATHS[known][0] in routes),
                key=len, default=None)
    if meant is not None:
        return f"ccswitch routes {meant}, not {bare[:200]}: check the client's base URL"
    # a letter off (`/v1/message`); the API's other paths (`/v1/models`, `/v1/messages/batches`) are far from all
    near = difflib.get_close_matches(bare[:200], [known for known in _PATHS if _PATHS[known][0] in routes], n=1,
                                     cutoff=0.9)
    return f"ccswitch routes {near[0]}, not {bare[:200]}: check the path" if near else None
