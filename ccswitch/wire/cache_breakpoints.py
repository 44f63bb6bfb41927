"""Trim an Anthropic Messages request to at most N prompt-cache breakpoints.

Anthropic accepts four `cache_control` markers per request; some relays accept fewer and refuse
the request otherwise.  The markers are counted system first, then messages (each message's
content blocks in order, a block before the blocks nested in it, as in a tool_result's content),
then tools; the first N are kept, later ones removed.  Tools go last: a marker on the system
prompt caches the tools before it too, so theirs is the one least missed.

Pure: the body given is never changed.  What changes is copied along its path, everything else
is shared with the original, and a body with nothing to remove is returned as it came.
"""

from __future__ import annotations

from typing import Any

MARKER = "cache_control"
SECTIONS = ("system", "messages", "tools")   # the order markers are kept in


def keep_cache_breakpoints(body: dict[str, Any], keep: int) -> dict[str, Any]:
    """`body` with only its first `keep` cache_control markers (the same object if no more)."""
    budget = [max(0, keep)]
    out = body
    for section in SECTIONS:
        value = body.get(section)
        if isinstance(value, list):           # a system prompt given as a string has no marker
            trimmed = _items(value, budget)
            if trimmed is not value:
                out = {**out, section: trimmed}
    return out


def count_cache_breakpoints(body: dict[str, Any]) -> int:
    """How many cache_control markers the request carries where they are counted."""
    return sum(_count(body[s]) for s in SECTIONS if isinstance(body.get(s), list))


def _items(items: list, budget: list[int]) -> list:
    """`items` (tools, system blocks, messages or content blocks) with the markers past the
    budget removed; a list with none to remove is returned as it came."""
    out = items
    for index, item in enumerate(items):
        new = _item(item, budget)
        if new is not item:
            if out is items:
                out = list(items)
            out[index] = new
    return out


def _item(item: Any, budget: list[int]) -> Any:
    if not isinstance(item, dict):
        return item
    out = item
    if item.get(MARKER) is not None:
        if budget[0] > 0:
            budget[0] -= 1
        else:
            out = {k: v for k, v in item.items() if k != MARKER}
    nested = item.get("content")    # a message's blocks; the blocks inside a tool_result
    if isinstance(nested, list):
        trimmed = _items(nested, budget)
        if trimmed is not nested:
            out = {**out, "content": trimmed}
    return out


def _count(items: list) -> int:
    total = 0
    for item in items:
        if isinstance(item, dict):
            total += item.get(MARKER) is not None
            if isinstance(item.get("content"), list):
                total += _count(item["content"])
    return total
