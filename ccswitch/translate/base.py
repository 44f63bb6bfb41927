"""The translation interface, and the pass-throughs for client and upstream of one protocol.

Same protocol on both sides only checks and scrubs; the chat route's conversions
(`translate.chat`) implement the same interface.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from ccswitch import vocab
from ccswitch.config.models import Upstream
from ccswitch.wire import protocols
from ccswitch.wire.exchange import UNPARSED, ClientRequest, RenderError, Reply, json_or_none, not_json_kind, object_at
from ccswitch.wire.reasoning import REASONING_ITEMS
from ccswitch.wire.redact import scrub
from ccswitch.wire.sse import Event


class StreamTranslation(Protocol):
    """Turns each upstream stream event into the bytes the client gets (maybe none)."""

    def feed(self, event: Event) -> bytes: ...

    def finish(self) -> bytes:
        """What is still owed to the client when the upstream stream has ended."""
        ...


class Translation(Protocol):
    """Everything the dialer asks of a protocol pair, for every body that crosses."""

    def request(self, req: ClientRequest, upstream: Upstream, rules=None) -> dict[str, Any] | None:
        """The body for this upstream, or None to send the client's own (model renamed).
        Raises RenderError when the request cannot be expressed for it."""
        ...

    def scrub(self, body: bytes, secrets: list[str]) -> bytes: ...

    def check_body(self, req: ClientRequest, upstream: Upstream, body: bytes, is_sse: bool,
                   parsed: Any = UNPARSED) -> str | None:
        """Why a 2xx body is not a real answer, or None if it is (`parsed`: the body's
        `json_or_none`, when the caller has it)."""
        ...

    def reply(self, req: ClientRequest, upstream: Upstream, status: int,
              headers: list[tuple[str, str]], body: bytes) -> Reply:
        """A whole 2xx answer in the client's protocol."""
        ...

    def error_reply(self, req: ClientRequest, reply: Reply) -> Reply:
        """An upstream's error answer in the client's protocol."""
        ...

    def stream(self, req: ClientRequest, upstream: Upstream) -> StreamTranslation: ...


class StreamPassthrough:
    """Forward each upstream event's bytes as they came."""

    __slots__ = ()

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

    def check_body(self, req: ClientRequest, upstream: Upstream, body: bytes, is_sse: bool,
                   parsed: Any = UNPARSED) -> str | None:
        """Why a 2xx body is not a real answer, or None if it is."""
        if req.stream and not is_sse:
            parsed = json_or_none(body, parsed)
            if isinstance(parsed, dict) and parsed.get("error"):
                return "error JSON under a 2xx status"
            return "a non-SSE body for a streamed request"
        if is_sse:
            return "an SSE body for a non-streamed request"
        return whole_body_problem(upstream.protocol, req.endpoint, body, parsed)

    def reply(self, req: ClientRequest, upstream: Upstream, status: int,
              headers: list[tuple[str, str]], body: bytes) -> Reply:
        return Reply(upstream.name, status, headers, body, translated=True)

    def error_reply(self, req: ClientRequest, reply: Reply) -> Reply:
        return reply

    def stream(self, req: ClientRequest, upstream: Upstream) -> StreamPassthrough:
        return _NAMED if upstream.protocol == vocab.Protocol.ANTHROPIC else _AS_THEY_CAME


_EVENT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class _NameEachEvent(StreamPassthrough):
    """Anthropic events as they came, each with its `event:` line: the Anthropic SDKs (and so
    Claude Code) go by that name, and some relays leave it out (the JSON's `type` says it)."""

    __slots__ = ()

    def feed(self, event: Event) -> bytes:
        if event.event != "message" or not event.data:
            return event.raw
        kind = event.type
        if kind == "message" or not _EVENT_NAME.fullmatch(kind):   # a name a line can hold, or none
            return event.raw
        return b"event: " + kind.encode() + b"\n" + event.raw


_AS_THEY_CAME, _NAMED = StreamPassthrough(), _NameEachEvent()


class _DropUsageChunk(StreamPassthrough):
    """The client did not ask for the usage chunk we asked the upstream for: leave it out."""

    __slots__ = ()

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
        messages = body.get("messages")
        carried = isinstance(messages, list) and any(isinstance(m, dict) and REASONING_ITEMS in m for m in messages)
        if carried:
            # ccswitch's own field (a Responses upstream's sealed reasoning, readable by that
            # account alone): no Chat upstream reads it, and some refuse a field they do not know
            body = {**body, "messages": [{k: v for k, v in m.items() if k != REASONING_ITEMS}
                                         if isinstance(m, dict) else m for m in messages]}
        if not req.stream or wants_usage(body):
            return body if carried else None
        options = object_at(body.get("stream_options"), "stream_options")
        return {**body, "stream_options": {**options, "include_usage": True}}

    def stream(self, req: ClientRequest, upstream: Upstream) -> StreamPassthrough:
        return StreamPassthrough() if wants_usage(req.json or {}) else _DropUsageChunk()


def wants_usage(body: dict) -> bool:
    """Whether a Chat client asked for the final usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


class Unsupported(Passthrough):
    """A pair no translation exists for: every request is refused as unrenderable."""

    def __init__(self, client_protocol: str, upstream_protocol: str) -> None:
        self.pair = (client_protocol, upstream_protocol)

    def request(self, req: ClientRequest, upstream: Upstream, rules=None) -> dict[str, Any] | None:
        raise RenderError(f"cannot convert a {self.pair[0]} request for {upstream.name} "
                          f"({self.pair[1]})")


def whole_body_problem(protocol: str, endpoint: str, body: bytes, parsed: Any = UNPARSED) -> str | None:
    """Why a whole 2xx body is not an answer of `protocol` (`a 2xx body that is not JSON`, `… not an
    anthropic response`), or None if it is one."""
    parsed = json_or_none(body, parsed)
    if parsed is None:
        return f"a 2xx body that is {not_json_kind(body)}"
    if not protocols.body_matches_protocol(protocol, endpoint, parsed):
        return f"a 2xx body that is not {'an' if protocol[0] in 'aeiou' else 'a'} {protocol} response"
    return None
