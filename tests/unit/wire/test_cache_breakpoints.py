"""cache_breakpoints: the first N cache_control markers are kept (system, then messages, blocks in
order, then tools), later ones removed, nothing else changed, the input never mutated."""

from __future__ import annotations

import copy
import json

import pytest

from ccswitch.wire.cache_breakpoints import count_cache_breakpoints, keep_cache_breakpoints

EPHEMERAL = {"type": "ephemeral"}


def marked(text: str) -> dict:
    return {"type": "text", "text": text, "cache_control": dict(EPHEMERAL)}


def body_with_six() -> dict:
    """Markers, in the order they are kept: system s1, message 0's m0, the tool_result r1 and the
    block n1 nested in it, message 2's m2, tool t2 (and a string system elsewhere)."""
    return {
        "model": "claude-x", "max_tokens": 10, "stream": True, "metadata": {"user_id": "u"},
        "messages": [
            {"role": "user", "content": [marked("m0"), {"type": "text", "text": "plain"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "cache_control": dict(EPHEMERAL),
                                          "content": [marked("n1"), {"type": "text", "text": "n2"}]}]},
            {"role": "user", "content": [marked("m2")]},
            {"role": "assistant", "content": "a string has no marker"},
        ],
        "system": [{"type": "text", "text": "s0"}, marked("s1")],
        "tools": [{"name": "t1", "input_schema": {}},
                  {"name": "t2", "input_schema": {}, "cache_control": dict(EPHEMERAL)}],
    }


def kept(body: dict) -> list[str]:
    """Where the markers are, in the order they are kept."""
    system = body.get("system")
    out = [b["text"] for b in (system if isinstance(system, list) else []) if "cache_control" in b]

    def blocks(items):
        for block in items:
            if isinstance(block, dict):
                if "cache_control" in block:
                    out.append(block.get("text") or block.get("type"))
                if isinstance(block.get("content"), list):
                    blocks(block["content"])
    for message in body["messages"]:
        if isinstance(message["content"], list):
            blocks(message["content"])
    return out + [t["name"] for t in body.get("tools", []) if "cache_control" in t]


@pytest.mark.parametrize("keep, expected", [
    (0, []),
    (1, ["s1"]),
    (2, ["s1", "m0"]),
    (3, ["s1", "m0", "tool_result"]),
    (4, ["s1", "m0", "tool_result", "n1"]),
    (5, ["s1", "m0", "tool_result", "n1", "m2"]),
])
def test_the_first_n_markers_are_kept_system_messages_then_tools(keep, expected):
    body = body_with_six()
    trimmed = keep_cache_breakpoints(body, keep)
    assert kept(trimmed) == expected and count_cache_breakpoints(trimmed) == keep


def test_only_markers_are_removed_and_the_body_given_is_never_changed():
    body = body_with_six()
    before = copy.deepcopy(body)
    trimmed = keep_cache_breakpoints(body, 2)
    assert body == before                                   # not mutated, not even deep inside
    assert count_cache_breakpoints(body) == 6

    def without_markers(value):
        if isinstance(value, dict):
            return {k: without_markers(v) for k, v in value.items() if k != "cache_control"}
        if isinstance(value, list):
            return [without_markers(v) for v in value]
        return value
    assert without_markers(trimmed) == without_markers(body)      # everything else as it was
    assert list(trimmed) == list(body)                            # key order too (the JSON sent)
    assert trimmed["system"] is body["system"] and trimmed["messages"][3] is body["messages"][3]   # shared


@pytest.mark.parametrize("keep", [6, 7, 100])
def test_a_body_within_the_limit_is_returned_as_it_came(keep):
    body = body_with_six()
    assert keep_cache_breakpoints(body, keep) is body


def test_odd_shapes_are_left_alone():
    body = {"model": "m", "system": "a string", "messages": "not a list", "tools": None}
    assert keep_cache_breakpoints(body, 0) is body and count_cache_breakpoints(body) == 0
    body = {"messages": [{"role": "user", "content": [1, None, {"type": "text", "text": "x", "cache_control": None}]}]}
    assert keep_cache_breakpoints(body, 0) is body        # a null cache_control is no marker
    assert json.dumps(keep_cache_breakpoints({"messages": []}, 4)) == '{"messages": []}'
