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
from collections.abc import Hashable
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
    """The sealed reasoning items each account has refused, so that the turns after a refusal
    leave them out before sending instead of being refused once more each.  Codex resends every
    earlier reasoning item on each turn over HTTPS: without this memory, every turn after a
    failover would cost a refused round trip, and its retry would also drop the reasoning the
    serving account sealed since.  An account is whatever key the caller gives (an upstream's
    name and identity: a reload that gives the name another key starts afresh); per account,
    the `per_account` items refused or left out most recently."""

    def __init__(self, per_account: int = 4096) -> None:
        self.per_account = per_account
        self._refused: dict[Hashable, OrderedDict[int, None]] = {}

    def __bool__(self) -> bool:
        return bool(self._refused)

    def learn(self, account: Hashable, items: list[Any]) -> None:
        """`account` refused a request whose input held `items`: remember its sealed ones."""
        seen = self._refused.setdefault(account, OrderedDict())
        for item in items:
            if (seal := _seal(item)) is not None:
                seen[seal] = None
                seen.move_to_end(seal)
        while len(seen) > self.per_account:
            seen.popitem(last=False)

    def leave_out(self, account: Hashable, body: Any) -> dict | None:
        """`body` without the sealed items `account` has refused before; None when it has none."""
        seen = self._refused.get(account)
        items = body.get("input") if seen and isinstance(body, dict) else None
        if not isinstance(items, list):
            return None
        kept = []
        for item in items:
            if (seal := _seal(item)) is not None and seal in seen:
                seen.move_to_end(seal)      # still sent by a live conversation: kept longest
            else:
                kept.append(item)
        return {**body, "input": kept} if len(kept) < len(items) else None


def _seal(item: Any) -> int | None:
    """A sealed item's fingerprint: a hash, not the text (it runs to kilobytes, and a collision
    only costs the model a reasoning step it takes again).  None for any other item, and for a
    seal that is no string (no account writes one: it is passed on as it is)."""
    if not is_encrypted_reasoning(item) or not isinstance(content := item["encrypted_content"], str):
        return None
    return hash(content)
