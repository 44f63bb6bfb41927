"""Errors on a bridged Codex WebSocket: ccswitch's own refusals of a turn and the upstream's
failures, each as the in-band frame Codex reads like an HTTP answer of that status
(`{"type": "error", "status": N, "error": {…}}`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ccswitch.vocab import Protocol
from ccswitch.wire.protocols import Kind, classify_event, error_body, error_object, error_type, own_error_parts
from ccswitch.wire.sse import SSEParser


@dataclass
class Refusal:
    """ccswitch answers a turn itself (no upstream available, rate limited, over budget), with the
    headers its HTTPS answer would have (`retry-after`, `x-should-retry`)."""
    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


#: the headers of an answer that tell Codex when to try again and how its limits stand: an
#: in-band error carries them (`headers`), which Codex reads as those of an HTTPS answer
_TOLD_HEADERS = ("retry-after", "x-should-retry", "x-ratelimit-", "x-codex-")


def told_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers if name.lower().startswith(_TOLD_HEADERS)}


def error_frame(status: int, message: str, error: Any = None, headers: Iterable[tuple[str, str]] = ()) -> str:
    """An in-band error, `error` the upstream's (else one in the Responses form), with the
    answer's `headers` that say when to try again."""
    return json.dumps(error_event(status, error if isinstance(error, dict) else
                                   error_body(Protocol.RESPONSES, status, message)["error"], told_headers(headers)))


def error_event(status: int, error: dict, headers: dict[str, str] | None = None) -> dict:
    """`{"type": "error", "status": …, "error": …}`, the error with a `type` as documented (a
    Responses error event or `response.failed` says only its code and message), and `headers`
    when it has any."""
    if "type" not in error:
        error = {"type": error_type(Protocol.RESPONSES, status), **error}
    event = {"type": "error", "status": status, "error": error}
    if headers:
        event["headers"] = headers
    return event


def refusal_frame(refusal: Refusal) -> str:
    """One of ccswitch's own answers in-band: the error and the headers its HTTPS answer to
    Codex would have, so that Codex reads it the same way on either transport."""
    headers, body = own_error_parts(Protocol.RESPONSES, refusal.status, refusal.message, refusal.headers, codex=True)
    return json.dumps(error_event(refusal.status, body["error"], told_headers(headers)))


def held_stream_error(body: bytes) -> dict | None:
    """The error event of a stream held back whole (its opening events, then `error` or
    `response.failed`), or None when the body is not such a stream."""
    if not body.lstrip().startswith((b"event:", b"data:")):
        return None
    parser = SSEParser()
    for event in parser.feed(body) + parser.flush():
        if classify_event(Protocol.RESPONSES, event) is Kind.ERROR and isinstance(parsed := event.json(), dict):
            return parsed
    return None


def error_detail(event: dict) -> dict:
    """The error of an error event: its `error` object (Anthropic, Chat, `response.failed`), or the
    event itself, since a Responses `error` event carries its code and message at the top."""
    error = error_object(event)
    if isinstance(error, dict):
        return error
    return {key: value for key, value in event.items() if key not in ("type", "sequence_number")}


def message_of(error: Any, body: bytes) -> str:
    message = error.get("message") if isinstance(error, dict) else None
    return str(message) if message else body.decode("utf-8", "replace")[:500]
