"""How openai-node (`ChatCompletionStream`, 6.x) assembles a streamed chat message: the fields it
knows are gathered (content, refusal, tool_calls by index), every other field of a delta is set
on the message with `Object.assign`, so a list sent in pieces keeps only its last piece."""
from __future__ import annotations

from typing import Any

KNOWN = ("content", "refusal", "function_call", "role", "tool_calls")


def node_message(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            message.update({key: value for key, value in delta.items() if key not in KNOWN})
            for key in ("content", "refusal"):
                if delta.get(key):
                    message[key] = (message.get(key) or "") + delta[key]
    return message
