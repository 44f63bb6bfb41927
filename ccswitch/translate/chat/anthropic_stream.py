"""Anthropic Messages SSE -> Chat Completions chunks, one event at a time,
plus the finish-reason and usage mappings shared with the non-stream reply."""

from __future__ import annotations

import json
from typing import Any

from ccswitch.translate.chat.common import ChunkWriter, chat_usage, key_of, object_of, openai_error_of, text_of
from ccswitch.wire.protocols import is_bare_error
from ccswitch.wire.sse import Event
from ccswitch.wire.usage import later_totals

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
           "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}


def finish_reason(stop_reason: Any, tool_calls: int) -> str:
    """Chat finish_reason; unknown or missing values never pass through verbatim."""
    if isinstance(stop_reason, str) and stop_reason in _FINISH:
        reason = _FINISH[stop_reason]
        return "stop" if reason == "tool_calls" and not tool_calls else reason
    return "tool_calls" if tool_calls else "stop"


def usage_from(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Anthropic usage as Chat usage: cache reads and writes are part of the prompt.  None when
    the upstream gave none (a relay's answer without it): zero tokens would be a false count."""
    if not usage or not isinstance(usage, dict):
        return None

    def n(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) else 0

    details = usage.get("output_tokens_details") or {}
    reasoning = details.get("thinking_tokens") if isinstance(details, dict) else 0
    cached, written = n("cache_read_input_tokens"), n("cache_creation_input_tokens")
    return chat_usage(n("input_tokens") + cached + written, n("output_tokens"), cached, written,
                      reasoning if isinstance(reasoning, int) else 0)


class _Block:
    __slots__ = ("args", "kind", "signature", "text", "tool", "whole")

    def __init__(self, kind: str, tool: int = -1) -> None:
        self.kind, self.tool, self.args, self.text, self.signature = kind, tool, False, "", ""
        self.whole = False      # its input came up front: deltas after it would repeat it, in no JSON


class AnthropicChatStream:
    """Feed every upstream event in order; get the client's chunk bytes (b"" for none)."""

    def __init__(self, model: str, include_usage: bool, json_tool: str | None = None) -> None:
        self.writer = ChunkWriter(model, include_usage)
        self.json_tool = json_tool      # a forced response_format tool whose input is the content
        self.blocks: dict[int, _Block] = {}
        self.tools = 0                  # tool_use blocks seen = the next dense tool index
        # signed thinking, sent whole in one delta before the finish: an SDK that sets a delta's
        # unknown field on its message (openai-node) keeps only the last piece of a list sent in pieces
        self.thinking: list[dict[str, Any]] = []
        self.usage: dict[str, Any] = {}
        self.stop_reason: Any = None
        self.started = False

    # ------------------------------------------------------------------ output
    def _chunk(self, delta: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._role()
        return out + self.writer.chunk(delta)

    def _role(self) -> bytes:
        self.started = True
        return self.writer.chunk({"role": "assistant", "content": ""})

    def _tool_delta(self, k: int, fragment: dict[str, Any]) -> bytes:
        return self._chunk({"tool_calls": [{"index": k, **fragment}]})

    # ------------------------------------------------------------------ input
    def feed(self, event: Event) -> bytes:
        if self.writer.finished or not event.event:
            return b""
        data = event.json()
        if not isinstance(data, dict):
            return self._on_error({"error": {"message": event.data}}) if event.type == "error" else b""
        if is_bare_error(event):
            return self._on_error(data)
        handler = getattr(self, "_on_" + event.type, None)
        return handler(data) if handler is not None else b""  # ping and unknown events: nothing

    def finish(self) -> bytes:
        """End of the upstream body: a stream without message_stop is an error, never a clean end."""
        if self.writer.finished:
            return b""
        return self.writer.error("upstream stream ended before message_stop", "api_error")

    def _on_error(self, data: dict[str, Any]) -> bytes:
        err = data.get("error") if isinstance(data.get("error"), dict) else {}
        # as for a whole error body: the type, and OpenAI's code for a context overflow
        openai = openai_error_of({"type": err.get("type") or "api_error",
                                  "message": str(err.get("message") or "upstream stream error")})
        return self.writer.error(openai["message"], openai["type"], openai["code"])

    def _on_message_start(self, data: dict[str, Any]) -> bytes:
        message = object_of(data.get("message"))
        if isinstance(message.get("usage"), dict):
            self.usage.update(message["usage"])
        if self.started:
            return b""
        if text_of(message.get("model")):
            self.writer.model = message["model"]
        if key_of(message.get("id")) not in (None, ""):
            self.writer.id = "chatcmpl-" + str(message["id"])
        return self._role()

    def _on_content_block_start(self, data: dict[str, Any]) -> bytes:
        block = object_of(data.get("content_block"))
        kind = block.get("type")
        index = key_of(data.get("index"))
        if kind == "tool_use" and self.json_tool is not None and block.get("name") == self.json_tool:
            if any(seen.kind == "json" for seen in self.blocks.values()):
                self.blocks[index] = _Block("other")   # the first is the answer: two would be no JSON
                return b""
            state = self.blocks[index] = _Block("json")
            state.args = state.whole = bool(block.get("input"))
            return self._chunk({"content": json.dumps(block["input"], ensure_ascii=False)}) if state.args else b""
        if kind == "tool_use":
            k, self.tools = self.tools, self.tools + 1
            state = self.blocks[index] = _Block("tool", k)
            out = self._tool_delta(k, {"id": text_of(block.get("id")), "type": "function",
                                       "function": {"name": text_of(block.get("name")), "arguments": ""}})
            if block.get("input"):  # some compatible upstreams send the whole input up front
                state.args = state.whole = True
                out += self._tool_delta(k, {"function": {"arguments": json.dumps(block["input"], ensure_ascii=False)}})
            return out
        if kind == "text":
            self.blocks[index] = _Block("text")
            return self._chunk({"content": block["text"]}) if text_of(block.get("text")) else b""
        if kind == "thinking":
            state = self.blocks[index] = _Block("thinking")
            state.text, state.signature = text_of(block.get("thinking")), text_of(block.get("signature"))
            return self._chunk({"reasoning_content": state.text}) if state.text else b""
        if kind == "redacted_thinking" and block.get("data"):
            self.blocks[index] = _Block("redacted")
            self._keep_thinking({"type": "redacted_thinking", "data": block["data"]})
            return b""
        self.blocks[index] = _Block("other")  # server tools, their results, unknown blocks
        return b""

    def _on_content_block_delta(self, data: dict[str, Any]) -> bytes:
        state = self.blocks.get(key_of(data.get("index")))
        delta = object_of(data.get("delta"))
        kind = delta.get("type")
        if state is None:
            return b""
        if kind == "text_delta" and state.kind == "text" and text_of(delta.get("text")):
            return self._chunk({"content": delta["text"]})
        if kind == "thinking_delta" and state.kind == "thinking" and text_of(delta.get("thinking")):
            state.text += delta["thinking"]
            return self._chunk({"reasoning_content": delta["thinking"]})
        if kind == "signature_delta" and state.kind == "thinking":
            state.signature += text_of(delta.get("signature"))
        elif kind == "input_json_delta" and state.kind in ("tool", "json") and text_of(delta.get("partial_json")) \
                and not state.whole:
            # blanks alone are no arguments yet: "{}" still follows at the block's end (" {}" is JSON)
            state.args = state.args or not delta["partial_json"].isspace()
            if state.kind == "json":
                return self._chunk({"content": delta["partial_json"]})
            return self._tool_delta(state.tool, {"function": {"arguments": delta["partial_json"]}})
        return b""

    def _on_content_block_stop(self, data: dict[str, Any]) -> bytes:
        return self._closed(self.blocks.get(key_of(data.get("index"))))

    def _closed(self, state: _Block | None) -> bytes:
        if state is None or state.args:
            pass
        elif state.kind == "tool":  # a no-argument call streams no JSON at all
            state.args = True
            return self._tool_delta(state.tool, {"function": {"arguments": "{}"}})
        elif state.kind == "json":
            state.args = True
            return self._chunk({"content": "{}"})
        elif state.kind == "thinking" and state.signature:
            state.args = True  # kept once
            self._keep_thinking({"type": "thinking", "thinking": state.text, "signature": state.signature})
        return b""

    def _keep_thinking(self, block: dict[str, Any]) -> None:
        """Signed thinking for clients that round-trip it (litellm-style `thinking_blocks`), sent at the end."""
        self.thinking.append({"index": len(self.thinking), **block})

    def _on_message_delta(self, data: dict[str, Any]) -> bytes:
        delta = object_of(data.get("delta"))
        if delta.get("stop_reason"):
            self.stop_reason = delta["stop_reason"]
        if isinstance(data.get("usage"), dict):
            self.usage = later_totals(self.usage, data["usage"])
        return b""

    def _on_message_stop(self, data: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._role()
        # a block an upstream never closed is closed here: a call's "{}", a thinking's signature
        out += b"".join(self._closed(state) for state in self.blocks.values())
        if self.thinking:
            out += self._chunk({"thinking_blocks": self.thinking})
        return out + self.writer.finish(finish_reason(self.stop_reason, self.tools), usage_from(self.usage))
