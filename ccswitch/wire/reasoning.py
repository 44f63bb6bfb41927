"""Reasoning that one account encrypted, in a Responses request another account is sent.

Codex sends each turn's whole input back, its earlier reasoning items among them, each sealed
(`encrypted_content`) by the account that produced it.  Another account cannot decrypt them and
refuses the whole request (400, `invalid_encrypted_content`): after a failover, or a session
moved by affinity, a conversation would end there.  Without those items the request is valid,
and the model reasons again.
"""

from __future__ import annotations

import json
from typing import Any

#: OpenAI's error code for reasoning this account did not encrypt
FOREIGN_REASONING = "invalid_encrypted_content"


def is_encrypted_reasoning(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "reasoning" and bool(item.get("encrypted_content"))


def unsealed(items: list[Any]) -> list[Any]:
    """`items` without the encrypted reasoning ones."""
    return [item for item in items if not is_encrypted_reasoning(item)]


def without_encrypted_reasoning(body: Any) -> dict | None:
    """`body` with its input's encrypted reasoning items left out; None when it has none."""
    items = body.get("input") if isinstance(body, dict) else None
    if not isinstance(items, list) or not any(is_encrypted_reasoning(item) for item in items):
        return None
    return {**body, "input": unsealed(items)}


def refuses_foreign_reasoning(status: int | None, body: bytes) -> bool:
    """Whether an answer refuses reasoning this account did not encrypt (only a 400's body is read)."""
    if status != 400 or FOREIGN_REASONING.encode() not in body:
        return False
    try:
        error = json.loads(body).get("error")
    except (ValueError, RecursionError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") == FOREIGN_REASONING
