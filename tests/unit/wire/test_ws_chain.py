"""Chain reconstruction for Codex's WebSocket: warm-up, incremental turns, a full resend,
an error that drops the chain (pure)."""

import pytest

from ccswitch.wire.ws_chain import Chain, ChainLost, FrameError, for_upstream

TOOLS = [{"type": "function", "name": "shell", "parameters": {}}]


def user(text):
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def create(input_, previous=None, **extra):
    frame = {"type": "response.create", "model": "gpt-5-codex", "instructions": "be brief", "tools": TOOLS,
             "input": input_, "store": False, "stream": True, **extra}
    if previous:
        frame["previous_response_id"] = previous
    return frame


def complete(chain, response_id, items, upstream="a"):
    for item in items:
        chain.observe({"type": "response.output_item.done", "item": item}, upstream)
    chain.observe({"type": "response.completed", "response": {"id": response_id, "output": items}}, upstream)


def test_warm_up_then_three_incremental_turns_rebuild_the_full_input():
    chain = Chain()
    events = chain.warm_up(create([user("system context")], generate=False))
    assert [e["type"] for e in events] == ["response.created", "response.completed"]
    warm_id = events[1]["response"]["id"]
    assert warm_id.startswith("resp_ccswitch_")
    # turn 1 chains off the warm-up with the first real input
    turn = chain.prepare(create([user("list files")], previous=warm_id))
    assert turn.body["input"] == [user("system context"), user("list files")]
    assert "previous_response_id" not in turn.body and "type" not in turn.body and "generate" not in turn.body
    assert turn.body["stream"] is True and turn.body["store"] is False and turn.body["tools"] == TOOLS
    call = {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"}
    complete(chain, "resp_1", [call])
    # turn 2: only the tool's output is new
    result = {"type": "function_call_output", "call_id": "c1", "output": "a.txt"}
    turn = chain.prepare(create([result], previous="resp_1"))
    assert turn.body["input"] == [user("system context"), user("list files"), call, result]
    answer = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a.txt"}]}
    complete(chain, "resp_2", [answer])
    # turn 3
    turn = chain.prepare(create([user("thanks")], previous="resp_2"))
    assert turn.body["input"] == [user("system context"), user("list files"), call, result, answer, user("thanks")]


def test_changed_tools_come_as_a_full_request_which_replaces_the_chain():
    chain = Chain()
    complete_first = chain.prepare(create([user("one")]))
    complete(chain, "resp_1", [{"type": "message", "role": "assistant", "content": []}])
    full = [user("one"), user("two")]
    turn = chain.prepare(create(full, tools=[]))          # no previous_response_id: sent in full
    assert turn.body["input"] == full and turn.body["tools"] == []
    assert complete_first.body["input"] == [user("one")]


def test_an_error_drops_the_chain_and_a_stale_id_is_a_lost_chain():
    chain = Chain()
    chain.prepare(create([user("one")]))
    complete(chain, "resp_1", [])
    chain.prepare(create([user("two")], previous="resp_1"))
    chain.observe({"type": "error", "status": 500, "error": {"message": "boom"}}, "a")
    with pytest.raises(ChainLost):
        chain.prepare(create([user("three")], previous="resp_1"))
    with pytest.raises(ChainLost):
        Chain().prepare(create([user("x")], previous="resp_from_elsewhere"))


def test_a_turn_not_completed_is_not_kept():
    chain = Chain()
    chain.prepare(create([user("one")]))
    complete(chain, "resp_1", [])
    chain.prepare(create([user("two")], previous="resp_1"))
    chain.observe({"type": "response.output_item.done", "item": {"type": "message"}}, "a")   # then the socket broke
    turn = chain.prepare(create([user("two again")], previous="resp_1"))       # still chains off resp_1
    assert turn.body["input"] == [user("one"), user("two again")]


def test_frames_that_are_not_response_create_are_refused():
    with pytest.raises(FrameError):
        Chain().prepare({"type": "response.cancel"})
    with pytest.raises(FrameError):
        Chain().prepare(["not", "an", "object"])
    with pytest.raises(FrameError):
        Chain().prepare(create(42))


def test_encrypted_reasoning_stays_with_the_upstream_that_made_it():
    chain = Chain()
    chain.prepare(create([user("one")]))
    reasoning = {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAA..."}
    complete(chain, "resp_1", [reasoning, {"type": "message", "role": "assistant", "content": []}], upstream="a")
    turn = chain.prepare(create([user("two")], previous="resp_1"))
    assert reasoning in for_upstream(turn, "a")["input"]
    assert reasoning not in for_upstream(turn, "b")["input"] and len(for_upstream(turn, "b")["input"]) == 3


def test_after_a_failover_the_first_upstream_s_reasoning_never_comes_back_to_the_second():
    """Turn 1 on a, turn 2 failed over to b (a's reasoning left out), turn 3 stays on b: what b
    is sent holds b's own reasoning and still none of a's, which b could not decrypt."""
    chain = Chain()
    chain.prepare(create([user("one")]))
    by_a = {"type": "reasoning", "id": "rs_a", "encrypted_content": "ENC-A"}
    complete(chain, "resp_1", [by_a, {"type": "message", "role": "assistant", "content": []}], upstream="a")
    turn = chain.prepare(create([user("two")], previous="resp_1"))
    assert by_a not in for_upstream(turn, "b")["input"]
    by_b = {"type": "reasoning", "id": "rs_b", "encrypted_content": "ENC-B"}
    complete(chain, "resp_2", [by_b, {"type": "message", "role": "assistant", "content": []}], upstream="b")
    sent = for_upstream(chain.prepare(create([user("three")], previous="resp_2")), "b")["input"]
    assert by_b in sent and by_a not in sent
    assert [item.get("role") for item in sent if item.get("type") == "message"] == \
        ["user", "assistant", "user", "assistant", "user"]


def test_a_conversation_back_from_another_upstream_keeps_the_reasoning_its_upstream_made():
    """a → b → a: turn 3 goes back to `a` with a's reasoning of turn 1 and without b's."""
    chain = Chain()
    chain.prepare(create([user("one")]))
    by_a = {"type": "reasoning", "id": "rs_a", "encrypted_content": "ENC-A"}
    complete(chain, "resp_1", [by_a, {"type": "message", "role": "assistant", "content": []}], upstream="a")
    assert by_a not in for_upstream(chain.prepare(create([user("two")], previous="resp_1")), "b")["input"]
    by_b = {"type": "reasoning", "id": "rs_b", "encrypted_content": "ENC-B"}
    complete(chain, "resp_2", [by_b, {"type": "message", "role": "assistant", "content": []}], upstream="b")
    turn = chain.prepare(create([user("three")], previous="resp_2"))
    assert [item for item in for_upstream(turn, "a")["input"] if item["type"] == "reasoning"] == [by_a]
    assert [item for item in for_upstream(turn, "b")["input"] if item["type"] == "reasoning"] == [by_b]
    chain.drop()            # an error: Codex sends its whole input again; who made what stays known
    turn = chain.prepare(create(turn.input))
    assert [item for item in for_upstream(turn, "a")["input"] if item["type"] == "reasoning"] == [by_a]
    assert [item for item in for_upstream(turn, "b")["input"] if item["type"] == "reasoning"] == [by_b]


def test_reasoning_the_client_sent_of_its_own_stays_with_the_upstream_that_read_it():
    """Sealed items of unknown make (the client's whole input on a new socket) that `a` took in
    a turn it completed are `a`'s: never sent to `b`, and still `a`'s once `b` served a turn."""
    chain = Chain()
    theirs = {"type": "reasoning", "id": "rs_x", "encrypted_content": "ENC-X"}
    chain.prepare(create([user("one"), theirs]))
    complete(chain, "resp_1", [{"type": "message", "role": "assistant", "content": []}], upstream="a")
    turn = chain.prepare(create([user("two")], previous="resp_1"))
    assert theirs in for_upstream(turn, "a")["input"] and theirs not in for_upstream(turn, "b")["input"]
    complete(chain, "resp_2", [{"type": "message", "role": "assistant", "content": []}], upstream="b")
    turn = chain.prepare(create([user("three")], previous="resp_2"))
    assert theirs in for_upstream(turn, "a")["input"] and theirs not in for_upstream(turn, "b")["input"]


def test_reasoning_of_unknown_make_an_upstream_was_not_sent_leaves_the_chain_once_it_serves():
    """Sent nowhere yet (the socket's first turn went to `b` after the chain had moved): it would
    come back to `b` on its next turn, which could not read it."""
    chain = Chain()
    chain.prepare(create([user("one")]))
    complete(chain, "resp_1", [{"type": "message", "role": "assistant", "content": []}], upstream="a")
    theirs = {"type": "reasoning", "id": "rs_x", "encrypted_content": "ENC-X"}
    turn = chain.prepare(create([user("two"), theirs], previous="resp_1"))
    assert theirs not in for_upstream(turn, "b")["input"]
    complete(chain, "resp_2", [{"type": "message", "role": "assistant", "content": []}], upstream="b")
    assert theirs not in chain.prepare(create([user("three")], previous="resp_2")).input


def test_a_turn_keeps_the_frame_s_own_items_and_previous_id_for_a_socket_that_holds_the_rest():
    chain = Chain()
    first = chain.prepare(create("one"))          # a string input is one user message
    assert first.previous is None and first.new_input == first.input == [user("one")]
    complete(chain, "resp_1", [{"type": "message", "role": "assistant", "content": []}])
    turn = chain.prepare(create([user("two")], previous="resp_1"))
    assert turn.previous == "resp_1" and turn.new_input == [user("two")]
    assert len(turn.input) == 3 and turn.body["input"] == turn.input
    turn.new_input.append("changed")               # its own list: the body's input is not touched
    assert turn.body["input"] == turn.input and len(turn.input) == 3


@pytest.mark.parametrize("kind", ["error", "response.failed", "response.incomplete"])
def test_a_turn_that_ends_without_completing_drops_the_chain(kind):
    chain = Chain()
    chain.prepare(create([user("one")]))
    complete(chain, "resp_1", [])
    chain.prepare(create([user("two")], previous="resp_1"))
    chain.observe({"type": kind, "response": {"id": "resp_2", "status": kind.removeprefix("response.")}}, "a")
    with pytest.raises(ChainLost):
        chain.prepare(create([user("three")], previous="resp_1"))


def test_reasoning_streamed_by_an_upstream_whose_completed_event_lists_no_output_is_still_its_own():
    """A relay that sends the items only as `output_item.done` (its `response.completed` has an
    empty output): a → b → a still takes a's reasoning back."""
    chain = Chain()
    chain.prepare(create([user("one")]))
    by_a = {"type": "reasoning", "id": "rs_a", "encrypted_content": "ENC-A"}
    for item in (by_a, {"type": "message", "role": "assistant", "content": []}):
        chain.observe({"type": "response.output_item.done", "item": item}, "a")
    chain.observe({"type": "response.completed", "response": {"id": "resp_1", "output": []}}, "a")
    turn = chain.prepare(create([user("two")], previous="resp_1"))
    assert by_a in turn.input and by_a not in for_upstream(turn, "b")["input"]
    complete(chain, "resp_2", [{"type": "message", "role": "assistant", "content": []}], upstream="b")
    turn = chain.prepare(create([user("three")], previous="resp_2"))
    assert [item for item in for_upstream(turn, "a")["input"] if item["type"] == "reasoning"] == [by_a]
