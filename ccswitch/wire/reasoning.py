"""Reasoning that one account encrypted, in a Responses request another account is sent.

Codex sends each turn's whole input back, its earlier reasoning items among them, each sealed
(`encrypted_content`) by the account that produced it.  Another account cannot decrypt them and
refuses the whole request (400, `invalid_encrypted_content`): after a failover, or a session
moved by affinity, a conversation would end there.  Without those items the request is valid,
and the model reasons again.
"""

from __future__ import annotations

import json
from collections import OrderedDict
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


class RefusedSeals:
    """The sealed reasoning items each upstream has refused, so that the turns after a refusal
    leave them out before sending instead of being refused once more each.  Codex resends every
    earlier reasoning item on each turn over HTTPS: without this memory, every turn after a
    failover would cost a refused round trip, and its retry would also drop the reasoning the
    serving account sealed itself.  Per upstream, the most recent `per_upstream` items."""

    def __init__(self, per_upstream: int = 4096) -> None:
        self.per_upstream = per_upstream
        self._refused: dict[str, OrderedDict[int, None]] = {}

    def learn(self, upstream: str, items: list[Any]) -> None:
        """`upstream` refused a request whose input held `items`: remember its sealed ones."""
        seen = self._refused.setdefault(upstream, OrderedDict())
        for item in items:
            if is_encrypted_reasoning(item):
                seal = _seal(item)
                seen[seal] = None
                seen.move_to_end(seal)
        while len(seen) > self.per_upstream:
            seen.popitem(last=False)

    def leave_out(self, upstream: str, body: Any) -> dict | None:
        """`body` without the sealed items `upstream` has refused before; None when it has none."""
        seen = self._refused.get(upstream)
        items = body.get("input") if seen and isinstance(body, dict) else None
        if not isinstance(items, list):
            return None
        kept = [item for item in items if not (is_encrypted_reasoning(item) and _seal(item) in seen)]
        return {**body, "input": kept} if len(kept) < len(items) else None


def _seal(item: dict) -> int:
    # a hash, not the text: the sealed text runs to kilobytes, and a collision only costs the
    # model a reasoning step it takes again
    return hash(str(item["encrypted_content"]))
