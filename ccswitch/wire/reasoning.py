"""Reasoning that one account encrypted, in a Responses request another account is sent.

Codex sends each turn's whole input back, its earlier reasoning items among them, each sealed
(`encrypted_content`) by the account that produced it; so is a compaction item, the history
Codex had an account compact.  Another account cannot decrypt them and refuses the whole request
(400, `invalid_encrypted_content`): after a failover, or a session moved by affinity, a
conversation would end there.  Without those items the request is valid: the model reasons
again (and, without a compaction, sees the conversation from there on).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

#: OpenAI's error code for reasoning this account did not encrypt
FOREIGN_REASONING = "invalid_encrypted_content"


#: the Chat assistant message's field for a Responses upstream's sealed reasoning items, which the
#: client sends back with the message (Chat has none of its own; as `thinking_blocks` for Claude)
REASONING_ITEMS = "reasoning_items"

#: input items an account seals: its reasoning, and the history it compacted
SEALED_TYPES = frozenset({"reasoning", "compaction"})


def is_encrypted_reasoning(item: Any) -> bool:
    """A sealed item: reasoning or a compaction, with its `encrypted_content`."""
    return isinstance(item, dict) and isinstance(kind := item.get("type"), str) and kind in SEALED_TYPES \
        and bool(item.get("encrypted_content"))


def carried_reasoning(item: Any) -> dict[str, Any] | None:
    """A sealed reasoning item as a Chat client carries it to its next turn (`reasoning_items` on
    the assistant message) and as it goes back in the input: its summary and its seal, no id or
    index (nothing is stored upstream).  None for anything else."""
    if not (is_encrypted_reasoning(item) and item["type"] == "reasoning"
            and isinstance(item["encrypted_content"], str)):
        return None
    summary = item.get("summary")
    return {"type": "reasoning", "summary": [part for part in summary if isinstance(part, dict)]
            if isinstance(summary, list) else [], "encrypted_content": item["encrypted_content"]}


def refuses_foreign_reasoning(status: int | None, body: bytes) -> bool:
    """Whether an answer refuses reasoning this account did not encrypt (only a 400's body is read)."""
    if status != 400 or FOREIGN_REASONING.encode() not in body:
        return False
    try:
        error = json.loads(body).get("error")
    except (ValueError, RecursionError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") == FOREIGN_REASONING


class SealMemory:
    """Which sealed reasoning items each account made, and which it refused.

    Codex resends every earlier reasoning item on each turn over HTTPS.  Without the refused
    ones, every turn after a failover would cost a refused round trip, and its retry would also
    drop the reasoning the serving account sealed since: the turns after a refusal leave them
    out before sending.  Without the made ones, a conversation that moved from A to B and back
    would lose A's own reasoning at A's refusal of B's: a refusal drops only what the account
    did not make.  An account is whatever key the caller gives (an upstream's name and identity:
    a reload that gives the name another key starts afresh); per account and kind, the
    `per_account` most recent items."""

    def __init__(self, per_account: int = 4096) -> None:
        self.per_account = per_account
        self._refused: dict[Hashable, OrderedDict[int, None]] = {}
        self._made: dict[Hashable, OrderedDict[int, None]] = {}

    def __bool__(self) -> bool:
        return bool(self._refused)

    def made(self, account: Hashable, seals: list[int]) -> None:
        """`account` sealed these items (`seal_of` each) in its own output, or took them in a
        request it answered with a 2xx (so it can read them: they are its own)."""
        self._remember(self._made, account, seals)

    def refusal(self, account: Hashable, items: list[Any]) -> list[Any] | None:
        """`account` refused a request whose input held `items`: the input to send it instead
        (without the sealed items it did not make), None when nothing can be left out.  The
        left-out items are remembered.  An account that refused only items it made (its key
        changed hands at the provider, or a seal went bad) gets none of them, and forgets
        having made those."""
        sealed = {id(item): seal_of(item) for item in items if is_encrypted_reasoning(item)}
        if not sealed:
            return None
        made = self._made.get(account, {})
        if all(seal in made for seal in sealed.values()):
            for seal in sealed.values():
                made.pop(seal, None)
        # (a seal that is no string, None, is never its own: left out, not remembered)
        kept = [item for item in items if id(item) not in sealed or sealed[id(item)] in made]
        self._remember(self._refused, account,
                       [seal for seal in sealed.values() if seal is not None and seal not in made])
        return kept if len(kept) < len(items) else None

    def leave_out(self, account: Hashable, body: Any) -> dict | None:
        """`body` without the sealed items `account` has refused before; None when it has none."""
        seen = self._refused.get(account)
        items = body.get("input") if seen and isinstance(body, dict) else None
        if not isinstance(items, list):
            return None
        kept = []
        for item in items:
            if (seal := seal_of(item)) is not None and seal in seen:
                seen.move_to_end(seal)      # still sent by a live conversation: kept longest
            else:
                kept.append(item)
        return {**body, "input": kept} if len(kept) < len(items) else None

    def _remember(self, memory: dict[Hashable, OrderedDict[int, None]], account: Hashable, seals: list[int]) -> None:
        if not seals:
            return
        seen = memory.setdefault(account, OrderedDict())
        for seal in seals:
            seen[seal] = None
            seen.move_to_end(seal)
        while len(seen) > self.per_account:
            seen.popitem(last=False)


def seal_of(item: Any) -> int | None:
    """A sealed item's fingerprint: a hash, not the text (it runs to kilobytes, and a collision
    only costs the model a reasoning step it takes again).  None for any other item, and for a
    seal that is no string (no account writes one: it is passed on as it is)."""
    if not is_encrypted_reasoning(item) or not isinstance(content := item["encrypted_content"], str):
        return None
    return hash(content)


def seals_in(body: Any, field: str) -> list[int]:
    """The seals of a Responses body's `field` list: a request's `input`, an answer's `output`."""
    items = body.get(field) if isinstance(body, dict) else None
    if not isinstance(items, list):
        return []
    return [seal for item in items if (seal := seal_of(item)) is not None]
