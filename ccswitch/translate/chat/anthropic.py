"""The chat route over an Anthropic Messages upstream.

    request:   Chat Completions body  -> Messages body      (anthropic_request.build)
    reply:     Messages JSON          -> chat.completion    (convert_response)
    stream:    Messages SSE events    -> chat.completion.chunk bytes (anthropic_stream)

`convert_request` returns the client's model with any `-thinking` suffix removed in
body["model"]; `upstream.render()` maps that name through the upstream's `models`.
"""

from __future__ import annotations

import json
from typing import Any

from ccswitch.translate.chat.anthropic_request import JSON_TOOL, build
from ccswitch.translate.chat.anthropic_stream import AnthropicChatStream, finish_reason, usage_from
from ccswitch.translate.chat.common import (
    ChatTranslation,
    chat_id,
    completion,
    include_usage,
    list_of,
    text_of,
)
from ccswitch.translate.chat.models import json_tool_mode, upstream_model
from ccswitch.wire.exchange import ClientRequest, json_or_none

__all__ = ["ChatToAnthropic"]


class ChatToAnthropic(ChatTranslation):
    protocol = "anthropic"

    def convert_request(self, body: dict[str, Any], req: ClientRequest, upstream, rules) -> dict[str, Any]:
        return build(body, req, upstream, rules)

    def convert_response(self, body: bytes, req: ClientRequest, upstream) -> dict[str, Any]:
        message = json_or_none(body)
        if not isinstance(message, dict):
            message = {}
        json_tool = _json_tool(req, upstream)
        texts: list[str] = []
        thoughts: list[str] = []
        blocks: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        answered = False
        for block in list_of(message.get("content")):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(text_of(block.get("text")))
            elif kind == "tool_use" and json_tool and block.get("name") == json_tool:
                if not answered:    # the first is the answer: two run together would be no JSON
                    texts.append(json.dumps(block.get("input") or {}, ensure_ascii=False))
                    answered = True
            elif kind == "tool_use":
                calls.append({"id": text_of(block.get("id")), "type": "function",
                              "function": {"name": text_of(block.get("name")),
                                           "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}})
            elif kind == "thinking":
                thoughts.append(text_of(block.get("thinking")))
                blocks.append({"type": "thinking", "thinking": text_of(block.get("thinking")),
                               "signature": text_of(block.get("signature"))})
            elif kind == "redacted_thinking":
                blocks.append({"type": "redacted_thinking", "data": text_of(block.get("data"))})
            # server_tool_use, web_search_tool_result and unknown blocks: skipped
        out: dict[str, Any] = {"role": "assistant",
                               "content": "".join(texts) or (None if calls else ""),
                               "refusal": None}
        if calls:
            out["tool_calls"] = calls
        if thoughts:
            out["reasoning_content"] = "".join(thoughts)
        if blocks:
            out["thinking_blocks"] = blocks
        return completion(text_of(message.get("model")) or upstream_model(req, upstream), out,
                          finish_reason(message.get("stop_reason"), len(calls)),
                          usage_from(message.get("usage")), chat_id(message.get("id")))

    def stream(self, req: ClientRequest, upstream) -> AnthropicChatStream:
        return AnthropicChatStream(upstream_model(req, upstream), include_usage(req), _json_tool(req, upstream))


def _json_tool(req: ClientRequest, upstream) -> str | None:
    """The forced response_format tool's name when the request used it (its input is the answer)."""
    return JSON_TOOL if json_tool_mode(req.json or {}, upstream_model(req, upstream)) else None
