"""Which client API a request speaks, decided by its method and path alone (any host)."""

from __future__ import annotations

from dataclasses import dataclass

_PATHS = {
    "/v1/messages": ("claude", "messages"),
    "/v1/messages/count_tokens": ("claude", "count_tokens"),
    "/v1/responses": ("codex", "responses"),
    "/responses": ("codex", "responses"),
    "/backend-api/codex/responses": ("codex", "responses"),
    "/openai/responses": ("codex", "responses"),
    "/v1/chat/completions": ("chat", "chat"),
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
    if method == "GET" and websocket_upgrade and route == "codex":
        return RouteMatch(route, "websocket")
    return None
