"""Sealed reasoning in a Responses request, and an account's refusal of another's (pure)."""

import json

import pytest

from ccswitch.wire.reasoning import (
    FOREIGN_REASONING,
    RefusedSeals,
    refuses_foreign_reasoning,
    without_encrypted_reasoning,
)

SEALED = {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA"}
PLAIN = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}]}
USER = {"type": "message", "role": "user", "content": "hi"}


def test_only_sealed_reasoning_is_left_out_and_nothing_else_of_the_body_changes():
    body = {"model": "m", "input": [USER, SEALED, PLAIN, USER], "include": ["reasoning.encrypted_content"]}
    assert without_encrypted_reasoning(body) == {**body, "input": [USER, PLAIN, USER]}
    assert body["input"] == [USER, SEALED, PLAIN, USER]      # a copy: the client's own body stays


@pytest.mark.parametrize("body", [{"input": [USER, PLAIN]}, {"input": "a string"}, {"messages": []}, None,
                                  {"input": [{**SEALED, "encrypted_content": ""}]}])
def test_a_body_with_no_sealed_reasoning_has_nothing_to_leave_out(body):
    assert without_encrypted_reasoning(body) is None


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
    seals = RefusedSeals()
    seals.learn("b", [USER, sealed("A-1"), PLAIN, sealed("A-2")])
    later = {"model": "m", "input": [USER, sealed("A-1"), sealed("A-2"), sealed("B-1"), PLAIN, USER]}
    assert seals.leave_out("b", later) == {**later, "input": [USER, sealed("B-1"), PLAIN, USER]}
    assert seals.leave_out("a", later) is None                     # another upstream refused nothing
    assert seals.leave_out("b", {"input": [USER, sealed("B-1")]}) is None
    assert seals.leave_out("b", {"input": "text"}) is None and seals.leave_out("b", None) is None


def test_the_memory_keeps_each_account_s_most_recently_refused_or_left_out_items():
    seals = RefusedSeals(per_account=2)
    seals.learn("b", [sealed("old"), sealed("mid")])
    seals.learn("b", [sealed("old"), sealed("new")])     # refused again: the most recent
    body = {"input": [sealed("old"), sealed("mid"), sealed("new")]}
    assert seals.leave_out("b", body)["input"] == [sealed("mid")]
    seals.leave_out("b", {"input": [sealed("old")]})     # left out again: kept longest
    seals.learn("b", [sealed("newest")])
    assert seals.leave_out("b", body)["input"] == [sealed("mid"), sealed("new")]


def test_a_seal_that_is_no_string_is_never_remembered_nor_read_deeply():
    deep = "[" * 1400 + "]" * 1400          # json.loads takes it; str() of it would recurse too deep
    seals = RefusedSeals()
    seals.learn("b", [sealed(json.loads(deep)), sealed({"a": 1}), sealed("A-1")])
    body = {"input": [sealed(json.loads(deep)), sealed({"a": 1}), sealed("A-1"), USER]}
    assert len(seals.leave_out("b", body)["input"]) == 3
