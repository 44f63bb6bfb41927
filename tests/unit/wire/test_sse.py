import json
import random
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccswitch.wire.sse import SSEError, SSEParser, _split_block, _split_lines, format_event, is_event_stream

STREAM = (
    b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
    b": a comment keeps proxies awake\n\n"
    b"event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\r\ndata: \"x\":1}\r\n\r\n"
    b"data: [DONE]\n\n"
)


def parse_all(chunks):
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.flush())
    return events


def summary(events):
    return [(e.event, e.data, e.raw) for e in events]


def test_parses_events_comments_and_crlf():
    events = parse_all([STREAM])
    assert [e.event for e in events] == ["message_start", "", "content_block_delta", "message"]
    assert events[0].json() == {"type": "message_start"}
    assert events[2].data == '{"type":"content_block_delta",\n"x":1}'
    assert events[3].data == "[DONE]" and events[3].json() is None
    assert b"".join(e.raw for e in events) == STREAM  # raw bytes survive for pass-through


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_split_point_gives_the_same_events(cut):
    assert summary(parse_all([STREAM[:cut], STREAM[cut:]])) == summary(parse_all([STREAM]))


def test_random_multi_splits():
    rng = random.Random(7)
    whole = summary(parse_all([STREAM * 20]))
    data = STREAM * 20
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(2, 30)))
        pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        assert summary(parse_all(pieces)) == whole


MIXED = (   # line ends of all three kinds, and empty lines of another kind than the line before
    b"data: {\"n\":1}\n\r"
    b"data: {\"n\":2}\r\n\r"
    b"data: {\"n\":3}\r\r"
    b"data: {\"n\":4}\n\r\n"
    b"data: {\"n\":5}\r\n\n"
    b"data: {\"n\":6}\n\n"
)


def test_an_empty_line_of_any_kind_ends_an_event_however_the_stream_is_cut():
    whole = parse_all([MIXED])
    assert [e.json() for e in whole] == [{"n": n} for n in range(1, 7)]
    assert b"".join(e.raw for e in whole) == MIXED
    for cut in range(1, len(MIXED)):
        assert summary(parse_all([MIXED[:cut], MIXED[cut:]])) == summary(whole)


def test_type_prefers_json_over_event_line():
    (event,) = parse_all([b'data: {"type":"response.completed"}\n\n'])
    assert event.event == "message" and event.type == "response.completed"


@pytest.mark.parametrize(("data", "expected"), [
    ('{"type":"content_block_delta","index":0}', "content_block_delta"),
    ('{ "type" : "ping" }', "ping"),
    ('{"index":0,"type":"content_block_stop"}', "content_block_stop"),   # not first: the JSON's
    ('{"type":"a\\u0062c","index":0}', "abc"),                              # an escape: the JSON's
    ('{"type":"unclosed', "the-line"),                                    # not JSON: the event line
])
def test_the_type_read_from_the_leading_member_is_the_jsons(data, expected):
    (event,) = parse_all([f"event: the-line\ndata: {data}\n\n".encode()])
    assert event.type == expected


def test_a_leading_type_costs_no_parse_and_the_json_is_still_there():
    (event,) = parse_all([b'event: x\ndata: {"type":"content_block_delta","delta":{"text":"hi"}}\n\n'])
    assert event.type == "content_block_delta"
    assert not event._parsed
    assert event.json()["delta"] == {"text": "hi"}


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_unicode_line_separator_inside_the_data_is_text_not_a_line_end(separator):
    data = json.dumps({"type": "content_block_delta", "delta": {"text": f"A{separator}B"}}, ensure_ascii=False)
    (event,) = parse_all([f"event: content_block_delta\r\ndata: {data}\r\n\r\n".encode()])
    assert event.json()["delta"]["text"] == f"A{separator}B"


def test_an_empty_event_name_is_a_message_not_a_comment():
    (event,) = parse_all([b'event:\ndata: {"a":1}\n\n'])
    assert event.event == "message" and event.json() == {"a": 1}


def test_flush_returns_an_unterminated_final_event():
    parser = SSEParser()
    assert parser.feed(b"event: message_stop\ndata: {}") == []
    (event,) = parser.flush()
    assert event.event == "message_stop"


def test_end_completes_a_whole_unterminated_final_event():
    parser = SSEParser()
    assert parser.feed(b"event: message_stop\ndata: {}\n") == []
    (event,) = parser.end()
    assert event.event == "message_stop" and event.raw == b"event: message_stop\ndata: {}\n\n"
    parser.feed(b"data: [DONE]")
    assert [e.raw for e in parser.end()] == [b"data: [DONE]\n\n"]


@pytest.mark.parametrize("fragment", [b'event: content_block_delta\ndata: {"type":"content_block_del',
                                      b": keep-alive", b"event: ping\n"])
def test_end_drops_a_fragment(fragment):
    parser = SSEParser()
    assert parser.feed(b"data: {}\n\n" + fragment)[0].raw == b"data: {}\n\n"
    assert parser.end() == [] and parser.pending == b""


def test_oversized_event_is_an_error():
    parser = SSEParser()
    with pytest.raises(SSEError):
        parser.feed(b"data: " + b"x" * (17 * 1024 * 1024))


def test_format_event_round_trips():
    raw = format_event({"a": "b\nc"}, "error") + format_event("line1\nline2")
    events = parse_all([raw])
    assert events[0].event == "error" and events[0].json() == {"a": "b\nc"}
    assert events[1].data == "line1\nline2"


def test_an_event_stream_is_known_by_its_media_type_in_any_letter_case():
    for typed in ("text/event-stream", "Text/Event-Stream", "TEXT/EVENT-STREAM; charset=UTF-8"):
        assert is_event_stream(typed)
    for other in (None, "", "application/json", "text/plain"):
        assert not is_event_stream(other)


# lines of every kind a block may hold: the usual two, and what the usual reading must leave alone
LINES = st.sampled_from([
    b"event: message_start", b"event: a:b", b"event: ", b"event:", b"event:x", b"data: {\"t\":1}", b"data: x",
    b"data:", b"data:x", b"data:  two", b": a comment", b":", b"id: 7", b"retry: 10", b"data: \xe2\x80\xa8",
    b"data: \xff\xfe", b" data: x", b"DATA: x", b"event: e\rdata: x", b"data: [DONE]",
])


@given(st.lists(LINES, max_size=4))
def test_a_block_read_the_quick_way_reads_as_line_by_line(lines):
    block = b"\n".join(lines)
    assert _split_block(block) == _split_lines(block)


@given(st.lists(st.lists(LINES, min_size=1, max_size=3), max_size=8), st.data())
def test_a_stream_of_lf_blocks_gives_the_same_events_in_any_chunks(blocks, data):
    """Whole chunks without a CR take the quick split; one byte at a time, every boundary is
    found by the scan: both must give the same events, raw bytes and all."""
    stream = b"".join(b"\n".join(lines) + b"\n\n" for lines in blocks)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    pieces = [stream[a:b] for a, b in pairwise(sorted({0, len(stream), *cuts}))]
    byte_by_byte = summary(parse_all([stream[i:i + 1] for i in range(len(stream))]))
    assert summary(parse_all([stream])) == byte_by_byte
    assert summary(parse_all(pieces)) == byte_by_byte


def test_a_pending_event_over_the_limit_is_an_error_on_the_quick_path_too(monkeypatch):
    import ccswitch.wire.sse as sse
    monkeypatch.setattr(sse, "_MAX_PENDING", 10)
    parser = SSEParser()
    assert [e.data for e in parser.feed(b"data: 1\n\n")] == ["1"]
    with pytest.raises(SSEError):
        parser.feed(b"data: 2\n\ndata: an event with no end yet")


@pytest.mark.parametrize(("block", "not_json"), [
    (b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"hi"}}\n\n', False),
    (b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_de\n\n', True),
    (b'data: [DONE]\n\n', False),
    (b'data: hello there\n\n', True),
    (b'event: ping\ndata: \n\n', False),                # no data at all is not counted
    (b'data: {"choices": []} \n\n', False),
])
def test_an_events_data_that_is_surely_not_json_is_told_without_parsing_a_delta(block, not_json):
    [event] = SSEParser().feed(block)
    assert event.type            # as the judge reads it: a delta's JSON is not parsed for it
    assert event.not_json() is not_json
    event.json()
    assert event.not_json() is not_json     # parsed: the same answer


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_an_empty_event_name_is_a_message(newline):
    [event] = SSEParser().feed(b"event: " + newline + b'data: {"a":1}' + newline + newline)
    assert event.event == "message" and event.data == '{"a":1}'
