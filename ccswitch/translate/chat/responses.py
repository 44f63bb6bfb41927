"""The chat route on an OpenAI Responses upstream: Chat Completions request ->
Responses request, Responses answer (JSON or SSE) -> Chat Completions answer.

Request: `responses_request.build_request`.  Non-stream answers:
`completion_from_response`.  Streams: `responses_stream.ResponsesStream`.  The ChatGPT
Codex backend only streams, so a non-stream client is served by aggregating the upstream SSE body (`aggregate`).
"""

from __future__ import annotations

import json
from typing import Any

from ccswitch.translate.chat.common import (
    ChatTranslation,
    _json_headers,
    chat_id,
    completion,
    include_usage,
    list_of,
    object_of,
    openai_error,
    text_of,
)
from ccswitch.translate.chat.models import split_model
from ccswitch.translate.chat.responses_request import build_request, is_codex_backend, reasoning_asked
from ccswitch.translate.chat.responses_stream import (
    FAILED,
    TERMINAL,
    ResponsesStream,
    failure_of,
    finish_reason,
    fold,
    response_usage,
)
from ccswitch.vocab import Protocol
from ccswitch.wire.exchange import UNPARSED, ClientRequest, Reply, json_or_none
from ccswitch.wire.protocols import in_stream_status
from ccswitch.wire.reasoning import REASONING_ITEMS, carried_reasoning
from ccswitch.wire.sse import parse_all


class UpstreamFailed(Exception):
    """A 2xx upstream answer that is really a failure (failed response, error event, cut stream)."""

    def __init__(self, message: str, kind: str = "api_error", code: str | None = None,
                 param: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message, self.kind, self.code, self.param = message, kind, code, param
        self.status = status or in_stream_status({"error": {"type": kind, "code": code}})

    def body(self) -> dict[str, Any]:
        return openai_error(self.message, self.kind, self.code, self.param)


class ChatToResponses(ChatTranslation):
    protocol = Protocol.RESPONSES

    def convert_request(self, body: dict[str, Any], req: ClientRequest, upstream, rules=None) -> dict[str, Any]:
        return build_request(body, stream=self.upstream_streams(req, upstream), codex=is_codex_backend(upstream))

    def upstream_streams(self, req: ClientRequest, upstream) -> bool:
        """The Codex backend requires `stream: true` even for a non-stream client."""
        return bool(req.stream) or is_codex_backend(upstream)

    def check_body(self, req: ClientRequest, upstream, body: bytes, is_sse: bool,
                   parsed: Any = UNPARSED) -> str | None:
        problem = super().check_body(req, upstream, body, is_sse, parsed)
        if problem is None and is_sse and not req.stream and not _has_end(body):
            return "stream ended before its terminal event"
        return problem

    def reply(self, req: ClientRequest, upstream, status: int, headers: list[tuple[str, str]],
              body: bytes) -> Reply:
        try:
            return super().reply(req, upstream, status, headers, body)
        except UpstreamFailed as exc:
            return Reply(upstream.name, exc.status, _json_headers(headers), json.dumps(exc.body()).encode(),
                         translated=True, reason=f"stream error: {exc.message}")

    def convert_response(self, body: bytes, req: ClientRequest, upstream) -> dict[str, Any]:
        """A chat.completion from a Responses object, or from a whole Responses SSE body."""
        if _is_sse(body):
            return aggregate(body, client_model(req), reasoning_asked(req.json or {}))
        parsed = json_or_none(body)
        if not isinstance(parsed, dict):
            raise UpstreamFailed("the upstream answered a body that is not JSON", status=502)
        return completion_from_response(parsed, client_model(req), reasoning_asked(req.json or {}))

    def stream(self, req: ClientRequest, upstream) -> ResponsesStream:
        return ResponsesStream(client_model(req), include_usage(req), sealed=reasoning_asked(req.json or {}))


def client_model(req: ClientRequest) -> str:
    model = (req.json or {}).get("model") or req.model
    return split_model(model)[0] if isinstance(model, str) else ""


def chat_message(text: str, refusal: str, reasoning: str, tool_calls: list[dict[str, Any]],
                 annotations: list[dict[str, Any]] | None = None,
                 sealed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant",
                               "content": text or (None if tool_calls or refusal else ""),
                               "refusal": refusal or None}
    if annotations:
        message["annotations"] = annotations
    if reasoning:
        message["reasoning_content"] = reasoning     # de-facto extension (litellm, new-api)
    if sealed:
        # the upstream's sealed reasoning, for the client to send back with this message: Chat
        # has no field for it (as `thinking_blocks` for Claude), and with it the model goes on
        # from its reasoning after a tool call instead of reasoning anew
        message[REASONING_ITEMS] = sealed
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def completion_from_response(response: dict[str, Any], model: str, sealed: bool = False) -> dict[str, Any]:
    """Walk `output[]` in order into exactly one choice (`sealed`: with the reasoning's seals to carry)."""
    if response.get("status") in ("failed", "cancelled"):
        raise UpstreamFailed(*failure_of({"response": response}))
    text, refusal, reasoning, calls, logprobs, citations, seals = [], [], [], [], [], [], []
    length = 0                  # of the text so far: a part's citations count from its own start
    for item in list_of(response.get("output")):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "reasoning":
            if sealed and (carried := carried_reasoning(item)) is not None:
                seals.append(carried)
            parts = [t for s in list_of(item.get("summary")) if isinstance(s, dict) and (t := text_of(s.get("text")))]
            if not parts:   # raw reasoning text (open-weight models) when there is no summary
                parts = [t for c in list_of(item.get("content"))
                         if isinstance(c, dict) and c.get("type") == "reasoning_text" and (t := text_of(c.get("text")))]
            reasoning.extend(parts)
        elif kind == "message":     # every message item, commentary phase included
            for part in list_of(item.get("content")):
                if isinstance(part, dict) and part.get("type") == "output_text":
                    text.append(text_of(part.get("text")))
                    if isinstance(part.get("logprobs"), list):   # asked for with `logprobs`
                        logprobs.extend(part["logprobs"])
                    citations += url_citations(part.get("annotations"), length)
                    length += len(text[-1])
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    refusal.append(text_of(part.get("refusal")))
        elif kind == "function_call":
            args = item.get("arguments")
            calls.append({"id": text_of(item.get("call_id")) or text_of(item.get("id")), "type": "function",
                          "function": {"name": text_of(item.get("name")),
                                       "arguments": args if isinstance(args, str) and args else "{}"}})
    message = chat_message("".join(text), "".join(refusal), "\n\n".join(reasoning), calls, citations, seals)
    return completion(text_of(response.get("model")) or model, message, finish_reason(response, bool(calls)),
                      response_usage(response.get("usage")), chat_id(response.get("id")), logprobs)


def url_citations(annotations: Any, offset: int) -> list[dict[str, Any]]:
    """A Responses text part's url_citation annotations as Chat's, their character offsets moved
    to where the part starts in the message's whole text (other kinds have no Chat counterpart)."""
    found = []
    for note in annotations if isinstance(annotations, list) else ():
        if not isinstance(note, dict) or note.get("type") != "url_citation":
            continue
        start, end = note.get("start_index"), note.get("end_index")
        found.append({"type": "url_citation", "url_citation": {
            "url": note.get("url") or "", "title": note.get("title") or "",
            "start_index": start + offset if isinstance(start, int) else offset,
            "end_index": end + offset if isinstance(end, int) else offset}})
    return found


def aggregate(body: bytes, model: str, sealed: bool = False) -> dict[str, Any]:
    """A whole Responses SSE body as one chat.completion: the terminal event's response
    object when it lists the output, else what the deltas accumulated."""
    stream = ResponsesStream(model, include_usage=False, sealed=sealed)
    deltas: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    for event in parse_all(body):
        deltas.extend(stream.step(event))
        if event.event and event.type in TERMINAL and isinstance(object_of(event.json()).get("response"), dict):
            final = event.json()["response"]
        if stream.ended:
            break
    if stream.failure is not None:
        raise UpstreamFailed(*stream.failure)
    if stream.outcome is None:
        raise UpstreamFailed("upstream stream ended before its terminal event", status=502)
    got = fold(deltas)
    if final.get("output"):      # named by the model `response.created` gave when the last event names none
        whole = completion_from_response(final, stream.writer.model, sealed)
        # its citations and logprobs, unless it leaves out what the deltas carried (the stream's
        # answer has a tool call or text an upstream's final list forgot: so must the whole one)
        said = whole["choices"][0]["message"]
        if len(said.get("tool_calls") or ()) >= len(got["tool_calls"]) and len(said.get("content") or "") >= len(got["text"]):
            return whole
    message = chat_message(got["text"], got["refusal"], got["reasoning"], got["tool_calls"], sealed=got["sealed"])
    reason, usage = stream.outcome
    return completion(final.get("model") or stream.writer.model, message, reason, usage, chat_id(final.get("id")))


def _is_sse(body: bytes) -> bool:
    head = body.lstrip()[:6]
    return head.startswith((b"event:", b"data:", b":"))


def _has_end(body: bytes) -> bool:
    """Whether an SSE body reached a terminal or error event (otherwise it was cut short)."""
    return any(e.event and e.type in TERMINAL | FAILED for e in parse_all(body))
