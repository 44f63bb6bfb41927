"""OpenAI Responses SSE events -> Chat Completions chunks.

`ResponsesStream` is stateful and per request.  `step(event)` turns one upstream
event into Chat deltas and records how the stream ended; `feed(event)` writes
those as `chat.completion.chunk` bytes.  The non-stream aggregation of a
stream-only upstream (the Codex backend) reuses `step` and folds the deltas.
"""

from __future__ import annotations

from typing import Any

from ccswitch.translate.chat.common import (
    LOGPROBS,
    ChunkWriter,
    chat_id,
    chat_usage,
    key_of,
    list_of,
    object_of,
    text_of,
)
from ccswitch.wire.protocols import Protocol, error_type, in_stream_status, is_bare_error
from ccswitch.wire.reasoning import REASONING_ITEMS, carried_reasoning
from ccswitch.wire.sse import Event
from ccswitch.wire.usage import token_count

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.done"})
FAILED = frozenset({"response.failed", "error"})


def response_usage(usage: Any) -> dict[str, Any] | None:
    """Responses usage -> Chat usage; cached tokens are already part of input_tokens.  None when
    the upstream gave none: zero tokens would be a false count."""
    if not isinstance(usage, dict):
        return None
    details_in, details_out = (details if isinstance(details := usage.get(name), dict) else {}
                               for name in ("input_tokens_details", "output_tokens_details"))
    out = chat_usage(token_count(usage.get("input_tokens")), token_count(usage.get("output_tokens")),
                     cached=token_count(details_in.get("cached_tokens")),
                     cache_write=token_count(details_in.get("cache_write_tokens")),
                     reasoning=token_count(details_out.get("reasoning_tokens")))
    if isinstance(usage.get("total_tokens"), int):
        out["total_tokens"] = usage["total_tokens"]
    return out


def finish_reason(response: dict[str, Any], any_tool_call: bool, incomplete: bool = False) -> str:
    """`length` (or `content_filter`) wins over `tool_calls`; never an unknown value."""
    if incomplete or response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if any_tool_call else "stop"


def failure_of(data: Any) -> tuple[str, str, str | None, str | None]:
    """(message, type, code, param) of a `response.failed` / `error` event or a failed response.
    A failure that names only a code the request is at fault for is an `invalid_request_error`
    (as OpenAI's HTTP API answers it), not a server error to fail over and retry."""
    err: Any = None
    if isinstance(data, dict):
        err = data.get("error")
        if not isinstance(err, dict) and isinstance(data.get("response"), dict):
            err = data["response"].get("error")
        if not isinstance(err, dict) and (data.get("type") == "error" or "message" in data):
            err = data
    if not isinstance(err, dict):     # OpenAI's own word for a failure of the server's
        response = data.get("response") if isinstance(data, dict) else None
        status = response.get("status") if isinstance(response, dict) else None
        said = f"upstream response {status}, without an error" if status in ("failed", "cancelled") else \
            "upstream response failed"
        return said, "server_error", None, None
    code = err.get("code") if isinstance(err.get("code"), str) else None
    kind = err.get("type") if isinstance(err.get("type"), str) and err.get("type") != "error" else None
    if kind is None and code is not None and (status := in_stream_status({"error": {"code": code}})) < 429:
        # the request's fault: the type OpenAI's HTTP API gives its status (a rate limit's and a
        # server's vary with what ran out or broke, and keep their code)
        kind = error_type(Protocol.CHAT, status)
    param = err.get("param") if isinstance(err.get("param"), str) else None
    return str(err.get("message") or "upstream response failed"), kind or code or "server_error", code, param


class ResponsesStream:
    """One request's Responses stream -> Chat chunks."""

    def __init__(self, model: str, include_usage: bool, sealed: bool = False) -> None:
        self.writer = ChunkWriter(model, include_usage)
        self.sealed = sealed                     # the request asked for reasoning: its seals are carried
        self.started = False
        self.n_calls = 0
        self.calls: dict[str, int] = {}          # function_call item id -> dense tool index k
        self.by_call_id: dict[str, int] = {}     # call_id -> k: only to know a call at the end
        self.by_output: dict[int, int] = {}      # output_index -> k (for items without an id)
        self.streamed: set[int] = set()          # k that already sent (some) arguments
        self.reasoning_part: tuple | None = None
        # sealed reasoning items, sent whole in one delta before the finish: an SDK that sets a delta's
        # unknown field on its message (openai-node) keeps only the last piece of a list sent in pieces
        self.seals: list[dict[str, Any]] = []
        self.shown: set = set()                  # items (id or output index) whose text came as deltas
        self.unkeyed: set[str] = set()           # item types a delta came for naming no item: none sent again whole
        self.outcome: tuple[str, dict[str, Any] | None] | None = None   # (finish_reason, usage)
        self.failure: tuple[str, str, str | None, str | None] | None = None  # (message, type, code, param)

    # ------------------------------------------------------------------ bytes
    def feed(self, event: Event) -> bytes:
        if self.writer.finished:
            return b""
        out = b"".join(self.writer.chunk(delta) for delta in self.step(event))
        if self.failure is not None:
            return out + self.writer.error(*self.failure)
        if self.outcome is not None:
            return out + self.writer.finish(*self.outcome)
        return out

    def finish(self) -> bytes:
        """End of the upstream body: without a terminal event the client must see an error."""
        if self.writer.finished:
            return b""
        return self.writer.error("upstream stream ended before its terminal event", "api_error",
                                 "stream_truncated")

    @property
    def ended(self) -> bool:
        return self.outcome is not None or self.failure is not None

    # ------------------------------------------------------------------ deltas
    def step(self, event: Event) -> list[dict[str, Any]]:
        """The Chat deltas for one upstream event (the role delta included when due)."""
        if not event.event or self.ended:
            return []
        data = event.json()
        if not isinstance(data, dict):
            return []
        kind = event.type
        if kind == "response.created":
            response = object_of(data.get("response"))
            if not self.started:
                self._adopt(response)
            return self._start()
        if kind in FAILED or is_bare_error(event):
            self.failure = failure_of(data)
            return []
        if kind in TERMINAL:
            return self._terminal(kind, object_of(data.get("response")))
        deltas = self._content(kind, data)
        return self._start() + deltas if deltas else []

    def _adopt(self, response: dict[str, Any]) -> None:
        """The upstream's model and id, so the chunks name the same completion the non-stream reply would."""
        if isinstance(response.get("model"), str):
            self.writer.model = response["model"]
        self.writer.id = chat_id(response.get("id")) or self.writer.id

    def _start(self) -> list[dict[str, Any]]:
        if self.started:
            return []
        self.started = True
        return [{"role": "assistant", "content": ""}]

    def _content(self, kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        if kind == "response.output_text.delta":
            self._shown(data, "message")
            if not text_of(data.get("delta")):
                return []
            if isinstance(data.get("logprobs"), list) and data["logprobs"]:   # asked for with `logprobs`
                return [{"content": data["delta"], LOGPROBS: data["logprobs"]}]
            return [{"content": data["delta"]}]
        if kind == "response.refusal.delta":
            self._shown(data, "message")
            return [{"refusal": data["delta"]}] if text_of(data.get("delta")) else []
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            self._shown(data, "reasoning")
            return self._reasoning(kind, data)
        item = data.get("item") if isinstance(data.get("item"), dict) else {}
        if kind == "response.output_item.done" and item.get("type") in ("message", "reasoning"):
            self._keep_seal(item)
            return self._whole(item, data.get("output_index"))
        if kind == "response.output_item.added" and item.get("type") == "function_call":
            if isinstance(item.get("id"), str) and item["id"] in self.calls:
                return []        # the same item added again (a relay's repeat): one call, not two
            k = self._new_call(item, data.get("output_index"))
            if not text_of(item.get("arguments")):
                return [self._header(k, item)]
            self.streamed.add(k)                 # arguments already present on `added`
            return [self._header(k, item), self._args(k, item["arguments"])]
        if kind == "response.function_call_arguments.delta":
            k = self._lookup(data.get("item_id"), data.get("output_index"))
            if k is None or not text_of(data.get("delta")):
                return []
            self.streamed.add(k)
            return [self._args(k, data["delta"])]
        if kind == "response.function_call_arguments.done":
            k = self._lookup(data.get("item_id"), data.get("output_index"))
            return [] if k is None else self._full_args(k, data.get("arguments"))
        if kind == "response.output_item.done" and item.get("type") == "function_call":
            k = self._lookup(item.get("id"), data.get("output_index"))
            if k is not None:
                return self._full_args(k, item.get("arguments"))
            k = self._new_call(item, data.get("output_index"))   # its `added` never came
            return [self._header(k, item)] + self._full_args(k, item.get("arguments"))
        return []

    def _shown(self, data: dict[str, Any], item_type: str) -> None:
        """A delta with text marks its item (by id and by output index: a `.done` may name it by
        either) as sent, or, naming none, every item of its type; an empty one marks nothing."""
        if not text_of(data.get("delta")):
            return
        keys = [key for key in (data.get("item_id"), data.get("output_index")) if isinstance(key, str | int)]
        self.shown.update(keys)
        if not keys:
            self.unkeyed.add(item_type)

    def _whole(self, item: dict[str, Any], output_index: Any) -> list[dict[str, Any]]:
        """A message or reasoning item's text from its `.done`, when no delta carried it (relays
        that send items only whole): never lost, never sent twice."""
        if item.get("type") in self.unkeyed or key_of(item.get("id")) in self.shown or key_of(output_index) in self.shown:
            return []
        self.shown.update(key for key in (item.get("id"), output_index) if isinstance(key, str | int))
        if item.get("type") == "reasoning":      # the summary first, as a whole body's reasoning is read
            parts = [p for p in list_of(item.get("summary")) or list_of(item.get("content")) if isinstance(p, dict)]
            summary = "\n\n".join(p["text"] for p in parts if isinstance(p.get("text"), str) and p["text"])
            return self._reasoning("whole", {"item_id": item.get("id"), "delta": summary})
        parts = [p for p in list_of(item.get("content")) if isinstance(p, dict)]
        text = "".join(p["text"] for p in parts if p.get("type") == "output_text" and isinstance(p.get("text"), str))
        refusal = "".join(p["refusal"] for p in parts if p.get("type") == "refusal" and isinstance(p.get("refusal"), str))
        return [delta for delta in ({"content": text}, {"refusal": refusal}) if next(iter(delta.values()))]

    def _keep_seal(self, item: dict[str, Any]) -> None:
        """A reasoning item's seal (`encrypted_content`: whole only on its `.done`), kept for the
        client to send back with the message (indexed, as the SDKs gather a list)."""
        carried = carried_reasoning(item) if self.sealed else None
        # the terminal response lists again what `.done` events gave: each seal once
        if carried is not None and all(seal["encrypted_content"] != carried["encrypted_content"] for seal in self.seals):
            self.seals.append({"index": len(self.seals), **carried})

    def _reasoning(self, kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        text = text_of(data.get("delta"))
        if not text:
            return []
        index = data.get("summary_index") if kind.endswith("summary_text.delta") else data.get("content_index")
        part = (data.get("item_id"), kind, index)
        if self.reasoning_part is not None and part != self.reasoning_part:
            text = "\n\n" + text                 # a new summary part (never a new choice)
        self.reasoning_part = part
        return [{"reasoning_content": text}]

    def _new_call(self, item: dict[str, Any], output_index: Any) -> int:
        """The next dense tool index, mapped from the item id (and output index)."""
        k, self.n_calls = self.n_calls, self.n_calls + 1
        if isinstance(item.get("id"), str):
            self.calls[item["id"]] = k
        if isinstance(item.get("call_id"), str):
            self.by_call_id[item["call_id"]] = k
        if isinstance(output_index, int):
            self.by_output[output_index] = k
        return k

    @staticmethod
    def _header(k: int, item: dict[str, Any]) -> dict[str, Any]:
        return {"tool_calls": [{"index": k, "id": text_of(item.get("call_id")) or text_of(item.get("id")),
                                "type": "function", "function": {"name": text_of(item.get("name")), "arguments": ""}}]}

    def _lookup(self, item_id: Any, output_index: Any) -> int | None:
        """Argument events are routed by item id (never call_id), else by output index."""
        if isinstance(item_id, str) and item_id in self.calls:
            return self.calls[item_id]
        if isinstance(output_index, int):
            return self.by_output.get(output_index)
        return None

    def _full_args(self, k: int | None, arguments: Any) -> list[dict[str, Any]]:
        """`.done`: the whole arguments, once, only if no delta carried them."""
        if k is None or k in self.streamed:
            return []
        self.streamed.add(k)
        return [self._args(k, arguments if isinstance(arguments, str) and arguments else "{}")]

    @staticmethod
    def _args(k: int, text: str) -> dict[str, Any]:
        return {"tool_calls": [{"index": k, "function": {"arguments": text}}]}

    def _terminal(self, kind: str, response: dict[str, Any]) -> list[dict[str, Any]]:
        if response.get("status") in ("failed", "cancelled"):
            self.failure = failure_of({"response": response})
            return []
        unsent = self._unsent(response.get("output"))
        reason = finish_reason(response, self.n_calls > 0, kind == "response.incomplete")
        self.outcome = (reason, response_usage(response.get("usage")))
        return self._start() + unsent + ([{REASONING_ITEMS: self.seals}] if self.seals else [])

    def _unsent(self, output: Any) -> list[dict[str, Any]]:
        """What the terminal response's `output` holds that no event before it carried (a relay
        that sends the answer only there): streamed as the whole body would give it."""
        out: list[dict[str, Any]] = []
        for index, item in enumerate(output if isinstance(output, list) else ()):
            if not isinstance(item, dict):
                continue
            if item.get("type") in ("message", "reasoning"):
                self._keep_seal(item)
                out += self._whole(item, index)
            elif item.get("type") == "function_call":
                # by call_id before the place: an item streamed without an id may sit elsewhere
                # in the final list (a relay that leaves reasoning out of it)
                k = self._lookup(item.get("id"), None)
                if k is None and isinstance(item.get("call_id"), str):
                    k = self.by_call_id.get(item["call_id"])
                if k is None:
                    k = self._lookup(None, index)
                if k is None:
                    k = self._new_call(item, index)
                    out.append(self._header(k, item))
                out += self._full_args(k, item.get("arguments"))
        return out


def fold(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat deltas -> (text, refusal, reasoning, tool_calls, sealed reasoning), the way the SDK
    accumulates them."""
    text, refusal, reasoning, sealed = [], [], [], []
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        text.append(delta.get("content") or "")
        refusal.append(delta.get("refusal") or "")
        reasoning.append(delta.get("reasoning_content") or "")
        sealed += [carried_reasoning(piece) for piece in delta.get(REASONING_ITEMS) or ()]
        for piece in delta.get("tool_calls") or ():
            call = calls.setdefault(piece["index"], {"id": None, "type": "function",
                                                     "function": {"name": "", "arguments": ""}})
            if piece.get("id"):
                call["id"] = piece["id"]
            fn = piece.get("function") or {}
            call["function"]["name"] += fn.get("name") or ""
            call["function"]["arguments"] += fn.get("arguments") or ""
    return {"text": "".join(text), "refusal": "".join(refusal), "reasoning": "".join(reasoning),
            "tool_calls": [calls[k] for k in sorted(calls)], "sealed": sealed}
