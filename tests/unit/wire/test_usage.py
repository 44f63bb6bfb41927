"""Usage extraction per protocol, including the classic bugs peers shipped."""

from ccswitch.wire.sse import SSEParser, format_event
from ccswitch.wire.usage import UsageTap, answer_of_body, from_body


def feed(protocol, events):
    tap = UsageTap(protocol)
    for event in SSEParser().feed(b"".join(events)):
        tap.feed(event)
    return tap.usage


def test_anthropic_stream_input_known_only_from_message_start_and_deltas_overwrite():
    usage = feed("anthropic", [
        format_event({"type": "message_start", "message": {"usage": {
            "input_tokens": 20, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 4000,
            "output_tokens": 1, "cache_creation": {"ephemeral_1h_input_tokens": 100}}}}, "message_start"),
        format_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}),
        format_event({"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 10}}),
        format_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 31}}),
        format_event({"type": "message_stop"}, "message_stop"),
    ])
    # input comes from message_start although message_delta never repeats it (the seed read 0)
    assert usage.input_tokens == 20
    # cumulative output: overwrite (31), never add (42)
    assert usage.output_tokens == 31
    # cache tokens counted once, not again inside input
    assert (usage.cache_creation_tokens, usage.cache_read_tokens, usage.cache_creation_1h_tokens) == (300, 4000, 100)


def test_the_events_without_usage_are_passed_by_unparsed_and_the_usage_still_found():
    delta = format_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}})
    anthropic = SSEParser().feed(b"".join([
        b'data: {"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}\n\n',  # no event line
        format_event({"type": "ping"}, "ping"), delta, delta,
        format_event({"type": "message_delta", "usage": {"output_tokens": 12}}, "message_delta"),
    ]))
    responses = SSEParser().feed(b"".join([
        format_event({"type": "response.output_text.delta", "delta": "x"}, "response.output_text.delta"),
        format_event({"type": "response.completed", "response": {"usage": {"input_tokens": 3, "output_tokens": 4}}},
                     "response.completed"),
    ]))
    for protocol, events, usage in (("anthropic", anthropic, (7, 12)), ("openai-responses", responses, (3, 4))):
        tap = UsageTap(protocol)
        for event in events:
            tap.feed(event)
        assert (tap.usage.input_tokens, tap.usage.output_tokens) == usage
        skipped = [e for e in events if e.type in ("ping", "content_block_delta") or e.type.endswith(".delta")]
        assert skipped and not any(e._parsed for e in skipped)


def test_anthropic_message_delta_may_repeat_full_totals():
    usage = feed("anthropic", [
        format_event({"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}),
        format_event({"type": "message_delta", "usage": {"input_tokens": 5, "cache_read_input_tokens": 7,
                                                        "output_tokens": 9}}),
    ])
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (5, 7, 9)


def test_responses_cached_tokens_are_a_subset_of_input():
    usage = feed("openai-responses", [
        format_event({"type": "response.created", "response": {"usage": None}}),
        format_event({"type": "response.completed", "response": {"usage": {
            "input_tokens": 900, "input_tokens_details": {"cached_tokens": 768},
            "output_tokens": 120, "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 1020}}}),
    ])
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens, usage.reasoning_tokens) == \
        (132, 768, 120, 64)
    assert usage.input_tokens + usage.cache_read_tokens + usage.cache_creation_tokens == 900


def test_responses_incomplete_and_failed_report_usage_too():
    for kind in ("response.incomplete", "response.failed"):
        usage = feed("openai-responses", [format_event({"type": kind, "response": {"usage": {
            "input_tokens": 10, "output_tokens": 3}}})])
        assert (usage.input_tokens, usage.output_tokens) == (10, 3)


def test_chat_final_usage_chunk_and_body():
    usage = feed("openai-chat", [
        format_event({"choices": [{"delta": {"content": "hi"}}], "usage": None}),
        format_event({"choices": [], "usage": {"prompt_tokens": 135, "completion_tokens": 8,
                                                "prompt_tokens_details": {"cached_tokens": 100,
                                                                          "cache_write_tokens": 10}}}),
        b"data: [DONE]\n\n",
    ])
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_creation_tokens, usage.output_tokens) == \
        (25, 100, 10, 8)
    body = from_body("openai-chat", {"usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    assert (body.input_tokens, body.output_tokens) == (3, 2)


def test_bodies_and_garbage():
    assert from_body("anthropic", {"usage": {"input_tokens": 4, "output_tokens": 2}}).output_tokens == 2
    assert from_body("anthropic", {"type": "error"}) is None
    assert answer_of_body("anthropic", b"<html>", False)[0] is None
    assert feed("anthropic", [b"data: not json\n\n"]) is None
    weird = from_body("openai-chat", {"usage": {"prompt_tokens": "many", "completion_tokens": -3}})
    assert (weird.input_tokens, weird.output_tokens) == (0, 0)


def test_columns_keep_the_raw_usage_for_audit():
    usage = from_body("anthropic", {"usage": {"input_tokens": 4, "output_tokens": 2}})
    cols = usage.columns()
    assert cols["raw_usage"] == '{"input_tokens":4,"output_tokens":2}' and "raw" not in cols


def test_columns_are_every_count_field_and_the_raw_usage_as_json():
    from dataclasses import fields

    from ccswitch.wire.usage import Usage
    usage = Usage(input_tokens=1, output_tokens=2, cache_creation_tokens=3, cache_creation_1h_tokens=1,
                  cache_read_tokens=5, reasoning_tokens=6, raw={"nested": {"a": [1, 2]}})
    cols = usage.columns()
    assert list(cols) == [f.name for f in fields(Usage) if f.name != "raw"] + ["raw_usage"]
    assert cols["cache_read_tokens"] == 5 and cols["raw_usage"] == '{"nested":{"a":[1,2]}}'
    assert Usage().columns()["raw_usage"] is None


def test_a_count_written_as_a_whole_float_or_as_text_is_its_number_and_nonsense_is_zero():
    usage = from_body("anthropic", {"usage": {"input_tokens": 25.0, "output_tokens": "42", "cache_read_input_tokens": 12.7,
                                              "cache_creation_input_tokens": " 7 "}})
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_creation_tokens) == (25, 42, 13, 7)
    # past any request (and 2**63, which no ledger stores): counted nowhere rather than live only
    for nonsense in (10**20, 2**53 + 1, -5, True, "many", float("nan"), float("inf"), "1e30", [3], None):
        assert from_body("anthropic", {"usage": {"input_tokens": nonsense}}).input_tokens == 0, nonsense
    assert from_body("anthropic", {"usage": {"input_tokens": 2**53}}).input_tokens == 2**53


def test_a_relay_s_null_in_message_delta_keeps_what_message_start_said():
    usage = feed("anthropic", [
        format_event({"type": "message_start", "message": {"usage": {"input_tokens": 100, "output_tokens": 1}}},
                     "message_start"),
        format_event({"type": "message_delta", "usage": {"input_tokens": None, "output_tokens": 50}}, "message_delta"),
    ])
    assert (usage.input_tokens, usage.output_tokens) == (100, 50)


def test_usage_fields_peers_name_otherwise_and_numbers_that_do_not_add_up():
    written = from_body("openai-chat", {"usage": {"prompt_tokens": 100, "completion_tokens": 5,
                                                  "prompt_tokens_details": {"cache_creation_tokens": 40}}})
    assert (written.input_tokens, written.cache_creation_tokens) == (60, 40)
    wrapped = from_body("openai-responses", {"response": {"usage": {"input_tokens": 3, "output_tokens": 2}}})
    assert (wrapped.input_tokens, wrapped.output_tokens) == (3, 2)
    thinking = from_body("anthropic", {"usage": {"output_tokens": 10, "output_tokens_details": {"thinking_tokens": 7}}})
    assert thinking.reasoning_tokens == 7
    odd = from_body("openai-chat", {"usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 20}}})
    assert odd.input_tokens == 0 and odd.cache_read_tokens == 20     # never a negative count (or cost)


def test_a_responses_answer_s_id_is_read_from_its_stream_or_its_body():
    import json

    from ccswitch.vocab import Protocol
    from ccswitch.wire.exchange import UNPARSED

    def response_id_of_body(body, is_sse, parsed=UNPARSED):
        return answer_of_body(Protocol.RESPONSES, body, is_sse, parsed)[1]
    events = [format_event({"type": "response.created", "response": {"id": "resp_1", "usage": None}}),
              format_event({"type": "response.output_text.delta", "delta": "hi"}),
              format_event({"type": "response.completed", "response": {"id": "resp_1", "usage": {}}})]
    tap = UsageTap("openai-responses")
    for event in SSEParser().feed(b"".join(events[:1])):
        tap.feed(event)
    assert tap.response_id == "resp_1"            # known from the first event on
    assert response_id_of_body(b"".join(events), is_sse=True) == "resp_1"
    body = json.dumps({"id": "resp_2", "object": "response"}).encode()
    assert response_id_of_body(body, is_sse=False) == "resp_2"
    assert response_id_of_body(body, is_sse=False, parsed={"id": "resp_3"}) == "resp_3"
    assert response_id_of_body(b"not json", is_sse=False) is None
    assert response_id_of_body(b"[1]", is_sse=False) is None
    assert response_id_of_body(b'{"id": 7}', is_sse=False) is None     # no id to look a stored answer up by


def test_an_anthropic_message_delta_never_lowers_a_count_message_start_gave():
    usage = feed("anthropic", [
        format_event({"type": "message_start", "message": {"usage": {
            "input_tokens": 1500, "cache_read_input_tokens": 800, "output_tokens": 1}}}),
        format_event({"type": "message_delta", "usage": {"input_tokens": 0, "cache_read_input_tokens": 0,
                                                        "output_tokens": 12}}),
    ])
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (1500, 800, 12)


def test_counts_message_start_wrote_as_text_do_not_break_the_deltas_totals():
    # a relay that writes "1" is read (token_count); compared with a delta's 12, it must not raise
    usage = feed("anthropic", [
        format_event({"type": "message_start", "message": {"usage": {"input_tokens": "1500", "output_tokens": "1"}}}),
        format_event({"type": "message_delta", "usage": {"output_tokens": 12}}),
    ])
    assert (usage.input_tokens, usage.output_tokens) == (1500, 12)


def test_a_count_written_as_text_is_not_lowered_by_a_later_zero_either():
    usage = feed("anthropic", [
        format_event({"type": "message_start", "message": {"usage": {"input_tokens": "1500", "output_tokens": 1}}}),
        format_event({"type": "message_delta", "usage": {"input_tokens": 0, "output_tokens": 12}}),
    ])
    assert (usage.input_tokens, usage.output_tokens) == (1500, 12)


def test_a_zeroed_nested_cache_creation_in_message_delta_does_not_lower_the_1h_writes():
    # a count nested in `cache_creation` is never lowered either (the 1-hour writes are priced apart)
    tap = UsageTap("anthropic")
    stream = b"".join([
        format_event({"type": "message_start", "message": {"usage": {
            "input_tokens": 20, "cache_creation_input_tokens": 300, "output_tokens": 1,
            "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100}}}},
            "message_start"),
        format_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {
            "input_tokens": 0, "cache_creation_input_tokens": 0, "output_tokens": 31,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}}},
            "message_delta"),
    ])
    for event in SSEParser().feed(stream):
        tap.feed(event)
    usage = tap.usage
    assert (usage.input_tokens, usage.cache_creation_tokens, usage.output_tokens) == (20, 300, 31)
    assert usage.cache_creation_1h_tokens == 100
