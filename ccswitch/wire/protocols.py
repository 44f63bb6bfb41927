"""What the three wire protocols mean: which route speaks which, which SSE
events open, carry content, end or break a stream, what a well-formed body looks
like, and how each one spells an error.  One table per protocol, no I/O."""

from __future__ import annotations

import enum
import json
import math
import secrets
import time
from collections.abc import Iterable
from typing import Any

from ccswitch.vocab import Protocol
from ccswitch.wire.exchange import json_or_none
from ccswitch.wire.redact import scrub_text
from ccswitch.wire.sse import Event, format_event


class Kind(enum.Enum):
    OPENING = "opening"    # may be held back before committing to an attempt
    CONTENT = "content"    # the first one commits the attempt
    TERMINAL = "terminal"  # the stream ended as the protocol says it should
    ERROR = "error"        # the upstream reported a failure inside the stream
    OTHER = "other"


_ANTHROPIC = {
    "message_start": Kind.OPENING,
    "ping": Kind.OPENING,
    "content_block_start": Kind.CONTENT,
    "content_block_delta": Kind.CONTENT,
    "content_block_stop": Kind.OTHER,
    "message_delta": Kind.OTHER,
    "message_stop": Kind.TERMINAL,
    "error": Kind.ERROR,
}

_RESPONSES = {
    "response.created": Kind.OPENING,
    "response.in_progress": Kind.OPENING,
    "response.queued": Kind.OPENING,
    "response.output_item.added": Kind.CONTENT,
    "response.completed": Kind.TERMINAL,
    "response.incomplete": Kind.TERMINAL,
    "response.done": Kind.TERMINAL,
    "response.failed": Kind.ERROR,
    "error": Kind.ERROR,
}


def classify_event(protocol: str, event: Event) -> Kind:
    if not event.event:  # a comment block
        return Kind.OTHER
    if protocol == Protocol.CHAT:
        return _classify_chat(event)
    kind_of = _ANTHROPIC if protocol == Protocol.ANTHROPIC else _RESPONSES
    name = event.type
    kind = kind_of.get(name)
    if kind is not None:
        return kind
    if protocol == Protocol.RESPONSES and name.endswith(".delta"):
        return Kind.CONTENT
    if is_bare_error(event):
        return Kind.ERROR
    return Kind.OTHER


def is_bare_error(event: Event) -> bool:
    """A relay's bare `{"error": {...}}`, without an `event:` line or a type: an error event all the same."""
    return event.type == "message" and isinstance(body := event.json(), dict) and isinstance(body.get("error"), dict)


def _classify_chat(event: Event) -> Kind:
    if event.data.strip() == "[DONE]":
        return Kind.TERMINAL
    body = event.json()
    if not isinstance(body, dict):
        return Kind.OTHER
    if body.get("error"):    # some servers send `"error": null` on every chunk
        return Kind.ERROR
    for choice in _choices(body):
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content") \
                or delta.get("refusal") or choice.get("finish_reason"):
            return Kind.CONTENT
    return Kind.OPENING


def chat_finished(event: Event) -> bool:
    """A Chat chunk that gives a choice its `finish_reason`: the answer is complete (only the usage
    chunk and `[DONE]` may follow)."""
    body = event.json()
    return isinstance(body, dict) and any(choice.get("finish_reason") for choice in _choices(body))


def _choices(chunk: dict) -> list[dict]:
    """A Chat chunk's choices that are objects (a relay's odd chunk may hold anything there)."""
    choices = chunk.get("choices")
    return [choice for choice in choices if isinstance(choice, dict)] if isinstance(choices, list) else []


def chat_done() -> Event:
    """The `[DONE]` that ends every Chat stream."""
    return Event(data="[DONE]", raw=b"data: [DONE]\n\n")


def anthropic_finished(event: Event) -> bool:
    """A `message_delta` that gives the message its `stop_reason`: the answer is complete (only
    `message_stop` may follow)."""
    if event.type != "message_delta":
        return False
    body = event.json()
    delta = body.get("delta") if isinstance(body, dict) else None
    return isinstance(delta, dict) and bool(delta.get("stop_reason"))


#: per upstream protocol, the kind of event that can complete an answer before the stream's own
#: end, and the test that it does (a Responses answer is whole only with its terminal event)
FINISHING = {Protocol.CHAT: (Kind.CONTENT, chat_finished), Protocol.ANTHROPIC: (Kind.OTHER, anthropic_finished)}


_MESSAGE_STOP = '{"type":"message_stop"}'


def closing_event(protocol: str) -> Event:
    """The event that ends a whole answer's stream, for an upstream that ended its body after
    the answer's finish without it (some relays)."""
    if protocol == Protocol.ANTHROPIC:
        return Event(event="message_stop", data=_MESSAGE_STOP, raw=format_event(_MESSAGE_STOP, "message_stop"))
    return chat_done()


def error_object(body: Any) -> Any:
    """The `error` of an error event: top level (Anthropic, Chat) or under `response` (Responses)."""
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if err is None and isinstance(body.get("response"), dict):
        err = body["response"].get("error")
    return err


def said_in(body: bytes, secrets: list[str], limit: int = 300) -> str | None:
    """The message of an error answer's body (`error.message`, or a top-level `message`), on one
    line, scrubbed of `secrets` (decoded: a key written in JSON escapes is plain text now) before
    it is cut to at most `limit` characters; None when it has none."""
    parsed = json_or_none(body)
    err = error_object(parsed)
    message = err.get("message") if isinstance(err, dict) else parsed.get("message") if isinstance(parsed, dict) else None
    if not isinstance(message, str) or not message.strip():
        return None
    message = " ".join(scrub_text(message, secrets).split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


def dressed_error(body: Any) -> bool:
    """Is a 2xx JSON body an error object with its own words (`error.message`)?"""
    err = error_object(body)
    return isinstance(err, dict) and isinstance(err.get("message"), str)


def stream_error_message(event: Event) -> str:
    """The text of an in-stream error event, for logs and the attempt list; whole, so that key
    text in it is scrubbed before anyone cuts it short (a key cut in two is no longer found)."""
    body = event.json()
    if isinstance(body, dict):
        err = error_object(body)
        if isinstance(err, dict):
            return str(err.get("type") or err.get("code") or "error") + ": " + str(err.get("message", ""))
        if isinstance(body.get("message"), str):     # Responses' own `error` event: code and message on top
            code = body.get("code")
            return f"{code}: {body['message']}" if isinstance(code, str) and code else body["message"]
        response = body.get("response")
        if isinstance(response, dict) and isinstance(response.get("status"), str):   # the whole response, no error in it
            return f"{body.get('type') or event.type}: the response {response['status']}, without an error"
    return event.data or event.type


def body_matches_protocol(protocol: str, endpoint: str, body: Any) -> bool:
    """Is a 2xx JSON body what the protocol promises (not an error dressed as 200)?"""
    if not isinstance(body, dict) or ("error" in body and body.get("error")):
        return False
    if endpoint == "count_tokens":
        return isinstance(body.get("input_tokens"), int)
    if protocol == Protocol.ANTHROPIC:
        return body.get("type") == "message"
    if protocol == Protocol.RESPONSES:
        return body.get("object") == "response" or isinstance(body.get("output"), list)
    return isinstance(body.get("choices"), list)


# ---------------------------------------------------------------- error bodies

_ANTHROPIC_ERROR_TYPES = {     # Anthropic's errors page, status by status
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 502: "api_error", 503: "api_error", 504: "timeout_error",
    529: "overloaded_error",     # Anthropic's own word for its 529 only: a 503 of ours is not "overloaded"
}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
    404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error",
}


def error_type(protocol: str, status: int) -> str:
    """The error type a client of `protocol` expects with `status`."""
    if protocol == Protocol.ANTHROPIC:
        return _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(protocol: str, status: int, message: str, code: str | None = None) -> dict:
    """The error JSON a client of `protocol` understands."""
    kind = error_type(protocol, status)
    if protocol == Protocol.ANTHROPIC:
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


#: a client that waits longer than this is better told at once (the SDKs wait at most about a minute)
RETRY_WAIT_WORTH_IT = 60.0


def should_retry(status: int, retry_after: float | None = None) -> bool:
    """Whether a client should retry one of ccswitch's own answers.  The official SDKs (and so
    Claude Code) obey `x-should-retry`: a wrong key or a bad body is said once, not after minutes
    of retries; a busy or briefly unavailable route is worth another try.  (Codex reads it not:
    see `_told_codex`.)"""
    if status in (429, 503):
        return retry_after is None or retry_after <= RETRY_WAIT_WORTH_IT
    if status in (408, 409):
        return True
    return not 400 <= status < 500


def rate_limit_headers(protocol: str, seconds: float, now: float) -> dict[str, str]:
    """What ccswitch's own 429 tells a client: when to come back, and to an Anthropic client
    the unified headers of a subscription's limit."""
    wait = max(1, math.ceil(seconds))
    headers = {"retry-after": str(wait)}
    if protocol == Protocol.ANTHROPIC:
        headers["anthropic-ratelimit-unified-status"] = "rejected"
        headers["anthropic-ratelimit-unified-reset"] = str(int(now + wait))
    return headers


def own_error(protocol: str, status: int, message: str, headers: tuple[tuple[str, str], ...] = (), *,
              codex: bool = False, now: float | None = None) -> tuple[list[tuple[str, str]], bytes]:
    """An answer ccswitch gives itself: its headers (with `x-should-retry`) and the error body in
    the client's protocol (`codex`: the client is Codex CLI, see `_told_codex`)."""
    headers, body = own_error_parts(protocol, status, message, headers, codex=codex, now=now)
    return headers, json.dumps(body).encode()


def own_error_parts(protocol: str, status: int, message: str, headers: tuple[tuple[str, str], ...] = (), *,
                    codex: bool = False, now: float | None = None) -> tuple[list[tuple[str, str]], dict]:
    """`own_error` with its body still a dict (an in-band frame wraps it)."""
    seconds = _retry_after(headers)
    given = _header(headers, "x-should-retry")   # the caller knows better
    retry = given if given is not None else "true" if should_retry(status, seconds) else "false"
    body = error_body(protocol, status, message)
    if codex and retry == "false" and status in (429, 503):
        headers, body = _told_codex(status, headers, body, seconds, time.time() if now is None else now)
    extra = () if given is not None else (("x-should-retry", retry),)
    return [("content-type", "application/json"), *extra, *headers], body


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _retry_after(headers: Iterable[tuple[str, str]]) -> float | None:
    """The `retry-after` of ccswitch's own headers, in seconds (an upstream's, which may be a date
    or `retry-after-ms`, is `routing.rate_limits.retry_after`'s)."""
    value = _header(headers, "retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def without_retry_after(headers):
    return type(headers)(h for h in headers if h[0].lower() not in ("retry-after", "retry-after-ms"))


def _told_codex(status: int, headers: tuple[tuple[str, str], ...], body: dict, wait: float | None,
                now: float) -> tuple[tuple[tuple[str, str], ...], dict]:
    """Codex CLI waits out any `retry-after`, hours of it for a route closed until tomorrow or a
    budget spent for the day, without a word, and reads no `x-should-retry`.  It stops at once on
    a 429 whose error is `usage_limit_reached`, saying when to try again (its `resets_at`): such a
    429 is what it gets.  A 503 goes without `retry-after`: Codex's own backoff then gives up
    within half a minute and shows the message."""
    headers = without_retry_after(headers)
    if status == 429 and isinstance(body.get("error"), dict):
        error = {**body["error"], "type": "usage_limit_reached"}
        if wait is not None:
            error["resets_at"] = int(now + wait)
        return headers, {**body, "error": error}
    return headers, body


def codex_client(headers: Iterable[tuple[str, str]]) -> bool:
    """`is_codex` of a request's headers."""
    return is_codex(_header(headers, "originator"), _header(headers, "user-agent"))


def is_codex(originator: str | None, user_agent: str | None) -> bool:
    """Whether a request comes from Codex CLI or its IDE extension (`originator: codex_exec`,
    `codex_cli_rs`, `codex_vscode`, …; their user agent begins the same way)."""
    return (originator or user_agent or "").lower().startswith("codex")


def stream_error_event(protocol: str, message: str, status: int = 500, sequence: int = 0,
                       response_id: str | None = None) -> bytes:
    """The event that ends a committed stream whose upstream failed: never a silent cut.  Its
    type is the one the whole answer `status` would have had, had the stream not begun;
    `sequence`: the events the client had before it (a Responses stream numbers each one).
    A Responses stream ends in `response.failed` (the response it began, `response_id` when
    known, failed with that error), not an `error` event: Codex reads the message of the one
    and passes over the other, leaving its user "stream closed before response.completed"."""
    kind = error_type(protocol, status)
    if protocol == Protocol.ANTHROPIC:
        return format_event({"type": "error", "error": {"type": kind, "message": message}}, "error")
    if protocol == Protocol.RESPONSES:
        response = {"id": response_id or f"resp_ccswitch_{secrets.token_hex(12)}", "object": "response",
                    "created_at": int(time.time()), "status": "failed", "output": [],
                    "error": {"code": kind, "message": message}}
        return format_event({"type": "response.failed", "sequence_number": sequence, "response": response},
                            "response.failed")
    return format_event({"error": {"message": message, "type": kind, "param": None, "code": kind}})


#: Responses failure codes (the SDK's `ResponseError.code`) that are the request's or its content's
#: fault: OpenAI's HTTP API answers them 400, so no other upstream is tried and no client retries
REQUEST_FAULT_CODES = frozenset({
    "invalid_prompt", "data_residency_mismatch", "bio_policy", "misalignment_policy_violation",
    "invalid_image", "invalid_image_format", "invalid_base64_image", "invalid_image_url", "image_too_large",
    "image_too_small", "image_parse_error", "image_content_policy_violation", "invalid_image_mode",
    "image_file_too_large", "unsupported_image_media_type", "empty_image_file", "failed_to_download_image",
    "image_file_not_found",
})


def in_stream_status(event_json: object) -> int:
    """The HTTP status an in-stream error event stands for, so `on_status` can judge it.  One it
    names itself wins (the Responses WebSocket's error frames carry `status`)."""
    if isinstance(event_json, dict):
        status = event_json.get("status")
        if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
            return status
    err = error_object(event_json)
    kind = ""
    if isinstance(err, dict):
        kind = str(err.get("type") or err.get("code") or "")
    elif isinstance(event_json, dict):
        kind = str(event_json.get("code") or "")
    if kind in REQUEST_FAULT_CODES:
        return 400
    return {
        "overloaded_error": 529, "rate_limit_error": 429, "rate_limit_exceeded": 429,
        "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
        "not_found_error": 404, "request_too_large": 413, "insufficient_quota": 429,
        "server_is_overloaded": 529, "context_length_exceeded": 400,
    }.get(kind, 500)
