"""Sealed reasoning in a Responses request, and an account's refusal of another's (pure)."""

import json

import pytest

from ccswitch.wire.reasoning import (
    FOREIGN_REASONING,
    SealMemory,
    carried_reasoning,
    refuses_foreign_reasoning,
    seal_of,
    seals_in,
)

SEALED = {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA"}
PLAIN = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}]}
USER = {"type": "message", "role": "user", "content": "hi"}


def test_a_refusal_leaves_out_only_sealed_reasoning_and_nothing_else_of_the_input():
    items = [USER, SEALED, PLAIN, USER]
    assert SealMemory().refusal("a", items) == [USER, PLAIN, USER]
    assert items == [USER, SEALED, PLAIN, USER]      # a copy: the client's own body stays


@pytest.mark.parametrize("items", [[USER, PLAIN], [], [{**SEALED, "encrypted_content": ""}]])
def test_an_input_with_no_sealed_reasoning_has_nothing_to_leave_out(items):
    memory = SealMemory()
    assert memory.refusal("a", items) is None and not memory


def error(code, status=400):
    return status, json.dumps({"error": {"message": "m", "type": "invalid_request_error", "code": code}}).encode()


@pytest.mark.parametrize(("answer", "refused"), [
    (error(FOREIGN_REASONING), True),
    (error(FOREIGN_REASONING, status=401), False),
    (error("invalid_value"), False),
    ((400, b"invalid_encrypted_content, said an HTML page"), False),
    ((400, json.dumps({"error": [FOREIGN_REASONING]}).encode()), False),
    ((400, json.dumps(["invalid_encrypted_content"]).encode()), False),
])
def test_only_a_400_with_openai_s_code_for_it_is_such_a_refusal(answer, refused):
    assert refuses_foreign_reasoning(*answer) is refused


def sealed(text):
    return {**SEALED, "encrypted_content": text}


def test_what_an_upstream_refused_is_left_out_of_its_later_bodies_and_nothing_else():
    seals = SealMemory()
    assert seals.refusal("b", [USER, sealed("A-1"), PLAIN, sealed("A-2")]) == [USER, PLAIN]
    later = {"model": "m", "input": [USER, sealed("A-1"), sealed("A-2"), sealed("B-1"), PLAIN, USER]}
    assert seals.leave_out("b", later) == {**later, "input": [USER, sealed("B-1"), PLAIN, USER]}
    assert seals.leave_out("a", later) is None                     # another upstream refused nothing
    assert seals.leave_out("b", {"input": [USER, sealed("B-1")]}) is None
    assert seals.leave_out("b", {"input": "text"}) is None and seals.leave_out("b", None) is None


def test_the_memory_keeps_each_account_s_most_recently_refused_or_left_out_items():
    seals = SealMemory(per_account=2)
    seals.refusal("b", [sealed("old"), sealed("mid")])
    seals.refusal("b", [sealed("old"), sealed("new")])     # refused again: the most recent
    body = {"input": [sealed("old"), sealed("mid"), sealed("new")]}
    assert seals.leave_out("b", body)["input"] == [sealed("mid")]
    seals.leave_out("b", {"input": [sealed("old")]})     # left out again: kept longest
    seals.refusal("b", [sealed("newest")])
    assert seals.leave_out("b", body)["input"] == [sealed("mid"), sealed("new")]


def test_a_seal_that_is_no_string_is_never_remembered_nor_read_deeply():
    deep = "[" * 1400 + "]" * 1400          # json.loads takes it; str() of it would recurse too deep
    seals = SealMemory()
    seals.refusal("b", [sealed(json.loads(deep)), sealed({"a": 1}), sealed("A-1")])
    body = {"input": [sealed(json.loads(deep)), sealed({"a": 1}), sealed("A-1"), USER]}
    assert len(seals.leave_out("b", body)["input"]) == 3


def test_a_refusal_keeps_what_the_account_sealed_itself_and_remembers_only_the_rest():
    seals = SealMemory()
    seals.made("a", [seal_of(sealed("A-1"))])
    seals.made("b", [seal_of(sealed("B-1"))])
    assert seals.refusal("a", [USER, sealed("A-1"), sealed("B-1"), sealed("C-1")]) == [USER, sealed("A-1")]
    later = {"input": [sealed("A-1"), sealed("B-1"), sealed("C-1"), sealed("A-2")]}
    assert seals.leave_out("a", later)["input"] == [sealed("A-1"), sealed("A-2")]


def test_an_account_that_refuses_only_its_own_seals_is_sent_none_and_forgets_them():
    seals = SealMemory()
    seals.made("a", [seal_of(sealed("A-1")), seal_of(sealed("A-2"))])
    assert seals.refusal("a", [USER, sealed("A-1"), sealed("A-2")]) == [USER]
    assert seals.refusal("a", [USER, sealed("A-2"), sealed("B-1")]) == [USER]    # A-2 is no more its own
    assert seals.leave_out("a", {"input": [sealed("A-1"), sealed("A-2"), USER]})["input"] == [USER]


def test_the_seals_an_account_made_are_kept_for_its_most_recent_items():
    seals = SealMemory(per_account=2)
    seals.made("a", [seal_of(sealed(text)) for text in ("A-1", "A-2", "A-3")])
    assert seals.refusal("a", [sealed("A-1"), sealed("A-2"), sealed("A-3")]) == [sealed("A-2"), sealed("A-3")]


def test_the_seals_of_a_body_s_list_are_those_of_its_sealed_reasoning_items():
    output = [SEALED, PLAIN, USER, {**SEALED, "encrypted_content": {"not": "text"}}, sealed("A-2")]
    assert seals_in({"output": output}, "output") == [seal_of(SEALED), seal_of(sealed("A-2"))]
    assert seals_in({"input": output}, "input") == seals_in({"output": output}, "output")
    assert seals_in({"output": "x"}, "output") == [] == seals_in(None, "input") == seals_in({}, "output")


def test_a_refusal_without_sealed_items_forgets_nothing():
    seals = SealMemory()
    seals.made("a", [seal_of(sealed("A-1"))])
    assert seals.refusal("a", [USER, PLAIN]) is None
    assert seals.refusal("a", [sealed("A-1"), sealed("B-1")]) == [sealed("A-1")]


def test_a_refusal_of_some_of_its_own_forgets_only_those():
    """One conversation's bad seal does not cost another conversation its own reasoning."""
    seals = SealMemory()
    seals.made("a", [seal_of(sealed(text)) for text in ("A-1", "A-2")])
    assert seals.refusal("a", [USER, sealed("A-1")]) == [USER]
    assert seals.refusal("a", [USER, sealed("A-2"), sealed("B-1")]) == [USER, sealed("A-2")]


def test_a_compaction_is_sealed_as_reasoning_is():
    """Codex has an account compact its history into one sealed item: another account refuses it."""
    compaction = {"type": "compaction", "id": "cmp_1", "encrypted_content": "A-compacted"}
    seals = SealMemory()
    seals.made("a", seals_in({"output": [compaction]}, "output"))
    assert seals_in({"output": [compaction]}, "output") == [seal_of(compaction)]
    assert seals.refusal("b", [USER, compaction]) == [USER]
    assert seals.refusal("a", [USER, compaction, sealed("B-1")]) == [USER, compaction]
    assert seal_of({"type": "compaction_trigger"}) is None and seal_of({**compaction, "type": "message"}) is None


@pytest.mark.parametrize("item", [
    {"type": "compaction", "encrypted_content": "gAAAA"},       # a compacted history is no turn's reasoning
    {"type": "reasoning", "summary": [], "encrypted_content": ""},
    {"type": "reasoning", "summary": []}, "reasoning", None,
])
def test_only_a_sealed_reasoning_item_is_carried_to_the_client(item):
    assert carried_reasoning(item) is None


def test_a_carried_item_keeps_its_summary_s_parts_and_seal_and_nothing_else():
    part = {"type": "summary_text", "text": "thought"}
    item = {"type": "reasoning", "id": "rs_1", "summary": [part, "junk", None], "encrypted_content": "gAAAA"}
    assert carried_reasoning(item) == {"type": "reasoning", "summary": [part], "encrypted_content": "gAAAA"}
    assert carried_reasoning({**item, "summary": "junk"})["summary"] == []
