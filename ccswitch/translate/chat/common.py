"""What every conversion *to* an OpenAI Chat Completions client shares: the
chunk writer, the usage shape, the error shape, the translation skeleton.

Conversions plug into the dialer as a `translate.base.Translation` (request / scrub /
check_body / reply / error_reply / stream); `ChatTranslation` below implements the
protocol-independent parts.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from ccswitch.translate.base import wants_usage, whole_body_problem
from ccswitch.vocab import Protocol
from ccswitch.wire.exchange import UNPARSED, ClientRequest, RenderError, Reply, array_at, json_bytes, json_or_none
from ccswitch.wire.protocols import error_type
from ccswitch.wire.redact import scrub
from ccswitch.wire.sse import format_event

DONE = b"data: [DONE]\n\n"


# An upstream's answer is read as it should be shaped, and a value of another JSON type where a
# text, an object, a list or a key belongs reads as none: a broken relay's answer converts or
# ends in the client's error, never in an exception that leaves the upstream uncounted.
def text_of(value: Any) -> str:
    return value if isinstance(value, str) else ""


def object_of(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def list_of(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def key_of(value: Any) -> str | int | None:
    """An id or an index to look up by (a list or an object is no key)."""
    return value if isinstance(value, str | int) else None


def chat_usage(prompt: int, completion: int, cached: int = 0, cache_write: int = 0,
               reasoning: int = 0) -> dict[str, Any]:
    """OpenAI usage: `prompt_tokens` is the whole prompt; cached tokens are a subset."""
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion,
                             "prompt_tokens_details": {"cached_tokens": cached}}
    if cache_write:
        usage["prompt_tokens_details"]["cache_write_tokens"] = cache_write
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


class ChunkWriter:
    """Writes `chat.completion.chunk` events with one id/created/model."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.finished = False

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        if LOGPROBS in delta:       # the choice's, not the delta's
            choice["logprobs"] = chat_logprobs(delta.pop(LOGPROBS))
        body: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                "model": self.model, "choices": [choice]}
        if self.include_usage:
            body["usage"] = None
        return format_event(body)

    def finish(self, finish_reason: str, usage: dict[str, Any] | None) -> bytes:
        """The one finish chunk, the usage chunk if asked for, then [DONE]."""
        self.finished = True
        out = self.chunk({}, finish_reason)
        if self.include_usage:
            out += format_event({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                 "model": self.model, "choices": [], "usage": usage})
        return out + DONE

    def error(self, message: str, kind: str = "api_error", code: str | None = None,
              param: str | None = None) -> bytes:
        """A mid-stream error: one `data: {"error": …}` line; no finish chunk, no [DONE]."""
        self.finished = True
        return format_event(openai_error(message, kind, code, param))


def completion(model: str, message: dict[str, Any], finish_reason: str, usage: dict[str, Any] | None,
               response_id: str | None = None, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": response_id or "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason,
                         "logprobs": chat_logprobs(logprobs) if logprobs else None}],
            "usage": usage}


#: a stream delta's key for the token log probabilities that came with its text (ChunkWriter
#: moves them to the choice, where Chat Completions has them)
LOGPROBS = "_logprobs"


def chat_logprobs(tokens: list[dict[str, Any]]) -> dict[str, Any]:
    """Responses' output_text logprobs as a Chat choice's `logprobs`: each token in Chat's shape
    (`bytes` and `top_logprobs` are required there; a stream's delta may carry neither)."""
    return {"content": [_token(token, top=True) for token in tokens if isinstance(token, dict)], "refusal": None}


def _token(token: dict[str, Any], top: bool) -> dict[str, Any]:
    out = {"token": token.get("token", ""), "logprob": token.get("logprob", 0.0), "bytes": token.get("bytes")}
    if top:
        out["top_logprobs"] = [_token(t, top=False) for t in token.get("top_logprobs") or () if isinstance(t, dict)]
    return out


def openai_error(message: str, kind: str = "api_error", code: str | None = None,
                 param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code or kind}}


def chat_id(upstream_id: Any) -> str | None:
    """The chat completion id for an upstream message/response id (None: make one up)."""
    return f"chatcmpl-{upstream_id}" if isinstance(upstream_id, str) and upstream_id else None


def openai_error_from(body: bytes, status: int) -> dict[str, Any]:
    """Any upstream error body (Anthropic or OpenAI shaped) as an OpenAI error."""
    parsed = json_or_none(body)
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict):
        return {"error": openai_error_of(err)}
    return {"error": {"message": _said_plainly(body, status), "type": error_type(Protocol.CHAT, status),
                      "param": None, "code": None}}


_TAG = re.compile(r"<[^>]*>")


def _said_plainly(body: bytes, status: int) -> str:
    """A body that is no API error as a message: its text, a web page (a proxy's or a CDN's
    error page in front of the upstream) by its words."""
    text = body.decode("utf-8", "replace")[:4000].strip()
    if not text:
        return f"upstream answered HTTP {status}"
    if text.startswith("<"):
        words = " ".join(_TAG.sub(" ", text).split())[:200]
        return f"upstream answered HTTP {status} with a web page" + (f": {words}" if words else "")
    return text[:500]


def openai_error_of(err: dict[str, Any]) -> dict[str, Any]:
    """An upstream's `error` object (Anthropic or OpenAI shaped, whole or in a stream) as OpenAI's."""
    kind = err.get("type") or err.get("code") or "api_error"
    message = str(err.get("message", ""))
    # OpenAI's own code, null included; an Anthropic error has none: its type stands in, but
    # a context overflow gets OpenAI's code, the one clients check before trimming history
    if "code" in err:
        code = err["code"]
    else:
        code = "context_length_exceeded" if _CONTEXT_OVERFLOW in message.lower() else kind
    return {"message": message, "type": kind, "param": err.get("param"), "code": code}


# how Anthropic words a prompt over the model's context window ("prompt is too long: 250000
# tokens > 200000 maximum")
_CONTEXT_OVERFLOW = "prompt is too long"


class ChatTranslation:
    """The protocol-independent half of a Chat-client conversion.

    Subclasses set `protocol` and implement `convert_request(body, req, upstream, rules)`,
    `convert_response(body, req, upstream)` and `stream(req, upstream)`.
    """

    protocol = ""

    def scrub(self, body: bytes, secrets: list[str]) -> bytes:
        return scrub(body, secrets)

    def request(self, req: ClientRequest, upstream, rules=None) -> dict[str, Any]:
        return self.convert_request(req.json or {}, req, upstream, rules)

    def check_body(self, req: ClientRequest, upstream, body: bytes, is_sse: bool,
                   parsed: Any = UNPARSED) -> str | None:
        if self.upstream_streams(req, upstream):
            return None if is_sse else "a non-SSE body for a streamed request"
        if is_sse:
            return "an SSE body for a non-streamed request"
        return whole_body_problem(self.protocol, req.endpoint, body, parsed)

    def upstream_streams(self, req: ClientRequest, upstream) -> bool:
        """Whether the upstream is asked to stream (some always must, e.g. Codex's backend)."""
        return req.stream

    def reply(self, req: ClientRequest, upstream, status: int, headers: list[tuple[str, str]],
              body: bytes) -> Reply:
        converted = self.convert_response(body, req, upstream)
        out = json_bytes(converted, compact=False)
        return Reply(upstream.name, status, _json_headers(headers), out, translated=True)

    def error_reply(self, req: ClientRequest, reply: Reply) -> Reply:
        status = 503 if reply.status == 529 else reply.status
        body = json.dumps(openai_error_from(reply.body, reply.status)).encode()
        return Reply(reply.upstream, status, _json_headers(reply.headers), body, translated=True,
                     reason=reply.reason)

    # subclasses ---------------------------------------------------------------
    def convert_request(self, body: dict[str, Any], req: ClientRequest, upstream, rules) -> dict[str, Any]:
        raise NotImplementedError

    def convert_response(self, body: bytes, req: ClientRequest, upstream) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, req: ClientRequest, upstream):
        raise NotImplementedError


#: what of an upstream's headers a converted answer keeps: what tells the client when and whether
#: to try again (the SDKs of both sides read `x-should-retry`), and the ids to quote to support
_KEPT_HEADERS = frozenset(("retry-after", "retry-after-ms", "x-should-retry", "request-id", "x-request-id"))


def _json_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in headers if k.lower() in _KEPT_HEADERS]
    return kept + [("content-type", "application/json")]


def include_usage(req: ClientRequest) -> bool:
    return wants_usage(req.json or {})


def _refuse_what_has_no_counterpart(body: dict[str, Any]) -> None:
    """What a client asks for that an Anthropic or Responses upstream cannot give, and that left
    out would change the answer's kind: refused alike for both (a Chat upstream of the same route
    may take it)."""
    if body.get("audio") is not None or "audio" in array_at(body.get("modalities"), "modalities"):
        raise RenderError("audio output is not supported for this model")
    if body.get("web_search_options") is not None:
        raise RenderError("web_search_options is not supported for this model")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise RenderError("the legacy functions/function_call parameters are not supported; use tools")


#: the kinds of response_format OpenAI takes
_FORMATS = ("text", "json_object", "json_schema")
#: the reasoning efforts ccswitch takes: OpenAI's, and the adaptive thinking's xhigh and max
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def _check_shapes(body: dict[str, Any]) -> None:
    """What OpenAI refuses with its 400 and a conversion would otherwise leave out or mend
    unsaid: a `stop` that is no text, a `response_format` of no kind it knows (or a json_schema
    without its object), a tool's `parameters` that is no schema object, an unknown effort."""
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(item, str) for item in stop)):
        raise RenderError("stop must be a string or an array of strings")
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in _FORMATS:
            raise RenderError(f"response_format.type must be one of {', '.join(_FORMATS)}, not {json.dumps(kind)[:40]}")
        if kind == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
            raise RenderError("response_format.json_schema must be an object (its name and schema)")
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise RenderError(f"tools[{i}].function.parameters must be a JSON Schema object")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in _EFFORTS:
        raise RenderError(f"reasoning_effort must be one of {', '.join(_EFFORTS)}")


#: OpenAI's own bounds: a value past them is its 400, never quietly left out
_SAMPLING_RANGES = {"temperature": (0, 2), "top_p": (0, 1)}


def _check_sampling(body: dict[str, Any]) -> None:
    """`temperature` and `top_p` are numbers within OpenAI's bounds, or absent (null)."""
    for name, (low, high) in _SAMPLING_RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise RenderError(f"{name} must be a number from {low} to {high}, not {json.dumps(value)[:40]}")


def refuse_alike(body: dict[str, Any]) -> None:
    """What a Chat body asks that the conversion to an Anthropic and to a Responses upstream
    refuse alike, with a RenderError (a 400; a Chat upstream of the route may take it)."""
    _refuse_what_has_no_counterpart(body)
    _check_sampling(body)
    _check_shapes(body)
