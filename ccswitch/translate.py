"""The seam between the client's protocol and the upstream's.

The dialer asks `translation_for(client, upstream)` and uses the result for every
body that crosses: the request, a whole response, an error, each stream event.
Same protocol on both sides is a pass-through that only checks and scrubs; the
chat route's conversions plug in here (`ccswitch.convert`).
"""

from __future__ import annotations

from typing import Any

from . import protocols
from .outcome import Reply, json_or_none, not_json_kind
from .rules import Upstream
from .sse import Event
from .upstream import ClientRequest, RenderError


class StreamPassthrough:
    """Forward each upstream event's bytes as they came."""

    def feed(self, event: Event) -> bytes:
        return event.raw

    def finish(self) -> bytes:
        return b""


class Passthrough:
    """Client and upstream speak the same protocol."""

    def request(self, req: ClientRequest, upstream: Upstream, rules=None) -> dict[str, Any] | None:
        return None  # keep the client's body; only the model is renamed

    def scrub(self, body: bytes, secrets: list[str]) -> bytes:
        return scrub(body, secrets)

    def check_body(self, req: ClientRequest, upstream: Upstream, body: bytes, is_sse: bool) -> str | None:
        """Why a 2xx body is not a real answer, or None if it is."""
        if req.stream and not is_sse:
            parsed = json_or_none(body)
            if isinstance(parsed, dict) and parsed.get("error"):
                return "error JSON under a 2xx status"
            return "a non-SSE body for a streamed request"
        if is_sse:
            return "an SSE body for a non-streamed request"
        parsed = json_or_none(body)
        if parsed is None:
            return f"a 2xx body that is {not_json_kind(body)}"
        if not protocols.body_matches_protocol(upstream.protocol, req.endpoint, parsed):
            return "a 2xx body that is not a " + upstream.protocol + " response"
        return None

    def reply(self, req: ClientRequest, upstream: Upstream, status: int,
              headers: list[tuple[str, str]], body: bytes) -> Reply:
        return Reply(upstream.name, status, headers, body, translated=True)

    def error_reply(self, req: ClientRequest, reply: Reply) -> Reply:
        return reply

    def stream(self, req: ClientRequest, upstream: Upstream) -> StreamPassthrough:
        return StreamPassthrough()


class _DropUsageChunk(StreamPassthrough):
    """The client did not ask for the usage chunk we asked the upstream for: leave it out."""

    def feed(self, event: Event) -> bytes:
        body = event.json() if event.event else None
        if isinstance(body, dict) and body.get("choices") == [] and body.get("usage"):
            return b""
        return event.raw


class ChatPassthrough(Passthrough):
    """Chat client, Chat upstream: only the model is renamed, but usage must always be known,
    so a stream always asks for the final usage chunk and drops it if the client did not."""

    def request(self, req: ClientRequest, upstream: Upstream, rules=None) -> dict[str, Any] | None:
        body = req.json or {}
        if not req.stream or wants_usage(body):
            return None
        return {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}

    def stream(self, req: ClientRequest, upstream: Upstream) -> StreamPassthrough:
        return StreamPassthrough() if wants_usage(req.json or {}) else _DropUsageChunk()


def wants_usage(body: dict) -> bool:
    """Whether a Chat client asked for the final usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


_PASSTHROUGH = Passthrough()
_CHAT_PASSTHROUGH = ChatPassthrough()


def translation_for(client_protocol: str, upstream_protocol: str):
    if client_protocol == upstream_protocol:
        return _CHAT_PASSTHROUGH if client_protocol == protocols.CHAT else _PASSTHROUGH
    from .convert import translation   # (imported here: convert builds on this module)
    return translation(client_protocol, upstream_protocol) or _Unsupported(client_protocol, upstream_protocol)


class _Unsupported(Passthrough):
    def __init__(self, client_protocol: str, upstream_protocol: str) -> None:
        self.pair = (client_protocol, upstream_protocol)

    def request(self, req: ClientRequest, upstream: Upstream, rules=None) -> dict[str, Any] | None:
        raise RenderError(f"cannot convert a {self.pair[0]} request for {upstream.name} "
                          f"({self.pair[1]})")


_SHORTEST_SECRET = 8   # shorter text is too likely to occur by chance to be worth replacing


def scrub(body: bytes, secrets: list[str]) -> bytes:
    """Replace any upstream key text an upstream echoed back (e.g. in an error)."""
    for secret in secrets:
        if len(secret) >= _SHORTEST_SECRET and secret.encode() in body:
            body = body.replace(secret.encode(), b"[redacted]")
    return body


def scrub_headers(headers: list[tuple[str, str]], secrets: list[str]) -> list[tuple[str, str]]:
    """`scrub` for response headers.  A header whose name holds key text is dropped: a name
    cannot carry the `[redacted]` mark."""
    secrets = [s for s in secrets if len(s) >= _SHORTEST_SECRET]
    if not secrets:
        return headers
    kept = []
    for name, value in headers:
        if any(s.lower() in name.lower() for s in secrets):
            continue
        for secret in secrets:
            value = value.replace(secret, "[redacted]")
        kept.append((name, value))
    return kept
