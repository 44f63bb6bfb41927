"""Protocol payloads for tests/mock_upstream.py (standard library only).

A `Reply` says what the mock answers (text pieces or a tool call, model, usage).
Builders turn it into a non-streaming JSON body (dict) or a list of SSE events
`(event_name | None, data)` where data is a dict or the literal "[DONE]".

Usage numbers are configured the Anthropic way (fresh input, cache write, cache
read, visible output) plus reasoning tokens; the OpenAI protocols report them the
OpenAI way: input_tokens = fresh + cache_read (cached_tokens = cache_read) and
output_tokens = visible output + reasoning.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

Event = tuple[str | None, Any]

DEFAULT_USAGE = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 10,
    "cache_read_input_tokens": 100,
    "output_tokens": None,  # None: one per word of the reply text
    "reasoning_tokens": 4,
}


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def split(s: str, n: int = 4) -> list[str]:
    """Split s into at most n non-empty pieces of similar length."""
    if not s:
        return []
    size = -(-len(s) // n)
    return [s[i : i + size] for i in range(0, len(s), size)]


@dataclass
class Reply:
    model: str
    deltas: list[str]
    tool: tuple[str, dict] | None = None  # (name, args) -> tool-call reply
    sealed: str | None = None   # Responses: a reasoning item sealed so (encrypted_content) comes first
    input_tokens: int = 25
    cache_creation_input_tokens: int = 10
    cache_read_input_tokens: int = 100
    output_tokens: int = 1
    reasoning_tokens: int = 0
    msg_id: str = field(default_factory=lambda: _id("msg_"))
    item_id: str = field(default_factory=lambda: _id("item_"))
    call_id: str = field(default_factory=lambda: _id("call_"))
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    @property
    def args_json(self) -> str:
        return json.dumps(self.tool[1]) if self.tool else ""


def sse(event: Event) -> bytes:
    name, data = event
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return ((f"event: {name}\n" if name else "") + f"data: {payload}\n\n").encode()


def is_delta(event: Event) -> bool:
    """True for content-carrying events (text or tool-argument deltas)."""
    name, data = event
    if name:
        return name.endswith(".delta") or name == "content_block_delta"
    choices = data.get("choices") if isinstance(data, dict) else None
    return bool(choices) and "role" not in choices[0]["delta"] and bool(choices[0]["delta"])


# --------------------------------------------------------------------- errors
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                     500: "api_error", 529: "overloaded_error"}
_OPENAI_ERRORS = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
                  403: ("invalid_request_error", "unsupported_country_region_territory"),
                  404: ("invalid_request_error", "model_not_found"), 429: ("requests", "rate_limit_exceeded"),
                  503: ("server_error", "server_overloaded")}


def _phrase(code: int) -> str:
    if code == 529:
        return "Overloaded"
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return f"HTTP {code}"


def error_body(protocol: str | None, code: int) -> dict:
    """The error JSON the real API of `protocol` would send with HTTP `code`."""
    if protocol in ("anthropic", "count_tokens"):
        return {"type": "error", "error": {"type": _ANTHROPIC_ERRORS.get(code, "api_error"), "message": _phrase(code)}}
    etype, ecode = _OPENAI_ERRORS.get(code, ("server_error" if code >= 500 else "invalid_request_error", None))
    return {"error": {"message": _phrase(code), "type": etype, "param": None, "code": ecode}}


def error_event(protocol: str, r: Reply, seq: int) -> Event:
    """A mid-stream failure event (Anthropic `error`, Responses `response.failed`, Chat error chunk)."""
    if protocol == "anthropic":
        return "error", error_body("anthropic", 529)
    if protocol == "responses":
        err = {"code": "server_error", "message": "The server had an error processing your request."}
        resp = responses_object(r, "failed", [], usage=False, error=err)
        return "response.failed", {"type": "response.failed", "sequence_number": seq, "response": resp}
    return None, error_body("chat", 500)


# ------------------------------------------------------------------ anthropic
def anthropic_usage(r: Reply, final: bool = True) -> dict:
    return {"input_tokens": r.input_tokens, "cache_creation_input_tokens": r.cache_creation_input_tokens,
            "cache_read_input_tokens": r.cache_read_input_tokens,
            "output_tokens": r.output_tokens if final else 1, "service_tier": "standard"}


def anthropic_message(r: Reply) -> dict:
    block = ({"type": "tool_use", "id": "toolu_" + r.call_id[5:], "name": r.tool[0], "input": r.tool[1]}
             if r.tool else {"type": "text", "text": r.text})
    return {"id": r.msg_id, "type": "message", "role": "assistant", "model": r.model, "content": [block],
            "stop_reason": "tool_use" if r.tool else "end_turn", "stop_sequence": None,
            "usage": anthropic_usage(r)}


def anthropic_events(r: Reply) -> list[Event]:
    start = dict(anthropic_message(r), content=[], stop_reason=None, usage=anthropic_usage(r, final=False))
    if r.tool:
        block = dict(anthropic_message(r)["content"][0], input={})
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in split(r.args_json, 3)]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": d} for d in r.deltas]
    stop = {"stop_reason": "tool_use" if r.tool else "end_turn", "stop_sequence": None}
    return [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        ("ping", {"type": "ping"}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas],
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": stop, "usage": anthropic_usage(r)}),
        ("message_stop", {"type": "message_stop"}),
    ]


# ------------------------------------------------------------------ responses
def responses_usage(r: Reply) -> dict:
    inp, out = r.input_tokens + r.cache_read_input_tokens, r.output_tokens + r.reasoning_tokens
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out,
            "input_tokens_details": {"cached_tokens": r.cache_read_input_tokens, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": r.reasoning_tokens}}


def _output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def responses_item(r: Reply, done: bool = True) -> dict:
    status = "completed" if done else "in_progress"
    if r.tool:
        return {"type": "function_call", "id": r.item_id, "call_id": r.call_id, "name": r.tool[0],
                "arguments": r.args_json if done else "", "status": status}
    return {"type": "message", "id": r.item_id, "role": "assistant", "status": status,
            "content": [_output_text(r.text)] if done else []}


def sealed_items(r: Reply) -> list[dict]:
    if r.sealed is None:
        return []
    return [{"type": "reasoning", "id": "rs_" + r.item_id[5:], "summary": [], "encrypted_content": r.sealed}]


def responses_object(r: Reply, status: str = "completed", output: list | None = None,
                     usage: bool = True, error: dict | None = None) -> dict:
    return {"id": "resp_" + r.msg_id[4:], "object": "response", "created_at": r.created, "status": status,
            "completed_at": int(time.time()) if status == "completed" else None, "error": error,
            "incomplete_details": None, "instructions": None, "max_output_tokens": None, "model": r.model,
            "output": [*sealed_items(r), responses_item(r)] if output is None else output,
            "parallel_tool_calls": True,
            "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": False,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "truncation": "disabled", "usage": responses_usage(r) if usage else None,
            "user": None, "metadata": {}}


def responses_events(r: Reply) -> list[Event]:
    evs: list[Event] = []

    def add(kind: str, **kw: Any) -> None:
        evs.append((kind, {"type": kind, "sequence_number": len(evs), **kw}))

    add("response.created", response=responses_object(r, "in_progress", [], usage=False))
    add("response.in_progress", response=responses_object(r, "in_progress", [], usage=False))
    for index, item in enumerate(sealed_items(r)):
        add("response.output_item.added", output_index=index, item={**item, "encrypted_content": None})
        add("response.output_item.done", output_index=index, item=item)
    at = len(sealed_items(r))
    add("response.output_item.added", output_index=at, item=responses_item(r, done=False))
    if r.tool:
        for piece in split(r.args_json, 3):
            add("response.function_call_arguments.delta", item_id=r.item_id, output_index=at, delta=piece)
        add("response.function_call_arguments.done", item_id=r.item_id, output_index=at, arguments=r.args_json)
    else:
        ids = {"item_id": r.item_id, "output_index": at, "content_index": 0}
        add("response.content_part.added", **ids, part=_output_text(""))
        for d in r.deltas:
            add("response.output_text.delta", **ids, delta=d, logprobs=[])
        add("response.output_text.done", **ids, text=r.text, logprobs=[])
        add("response.content_part.done", **ids, part=_output_text(r.text))
    add("response.output_item.done", output_index=at, item=responses_item(r))
    add("response.completed", response=responses_object(r))
    return evs


# ----------------------------------------------------------------------- chat
def chat_usage(r: Reply) -> dict:
    u = responses_usage(r)
    return {"prompt_tokens": u["input_tokens"], "completion_tokens": u["output_tokens"],
            "total_tokens": u["total_tokens"],
            "prompt_tokens_details": {"cached_tokens": r.cache_read_input_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": r.reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _tool_call(r: Reply, args: str) -> dict:
    return {"id": r.call_id, "type": "function", "function": {"name": r.tool[0], "arguments": args}}


def chat_completion(r: Reply) -> dict:
    msg: dict = {"role": "assistant", "content": None if r.tool else r.text, "refusal": None}
    if r.tool:
        msg["tool_calls"] = [_tool_call(r, r.args_json)]
    choice = {"index": 0, "message": msg, "logprobs": None, "finish_reason": "tool_calls" if r.tool else "stop"}
    return {"id": "chatcmpl-" + r.msg_id[4:], "object": "chat.completion", "created": r.created,
            "model": r.model, "choices": [choice], "usage": chat_usage(r), "system_fingerprint": None}


def chat_events(r: Reply, include_usage: bool) -> list[Event]:
    base = {"id": "chatcmpl-" + r.msg_id[4:], "object": "chat.completion.chunk", "created": r.created,
            "model": r.model, "system_fingerprint": None}
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict, finish: str | None = None) -> Event:
        return None, dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    if r.tool:
        first = {"role": "assistant", "content": None, "tool_calls": [dict(_tool_call(r, ""), index=0)]}
        body = [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in split(r.args_json, 3)]
    else:
        first = {"role": "assistant", "content": "", "refusal": None}
        body = [chunk({"content": d}) for d in r.deltas]
    evs = [chunk(first), *body, chunk({}, "tool_calls" if r.tool else "stop")]
    if include_usage:
        evs.append((None, dict(base, choices=[], usage=chat_usage(r))))
    return evs + [(None, "[DONE]")]
