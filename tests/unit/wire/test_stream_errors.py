"""How an in-stream error event is named for the ledger, the log and the attempt list: its
type or code, then its message, whichever of the protocols' shapes it comes in."""

import pytest

from ccswitch.vocab import Protocol
from ccswitch.wire.protocols import Kind, classify_event, in_stream_status, is_bare_error, stream_error_message
from ccswitch.wire.sse import SSEParser


def event(text: str):
    [parsed] = SSEParser().feed(text.encode() + b"\n\n")
    return parsed


@pytest.mark.parametrize("text, said", [
    ('event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
     "overloaded_error: Overloaded"),                                                         # Anthropic
    ('event: response.failed\ndata: {"type": "response.failed", "response": {"error": '
     '{"code": "server_is_overloaded", "message": "Busy"}}}', "server_is_overloaded: Busy"),  # Responses, failed
    # Responses' own `error` event: its code at the top level was left out ("Busy" alone)
    ('event: error\ndata: {"type": "error", "code": "server_is_overloaded", "message": "Busy"}',
     "server_is_overloaded: Busy"),
    ('event: error\ndata: {"type": "error", "message": "Busy"}', "Busy"),
    # a failed response without its error: not its whole JSON, cut short in the ledger
    ('event: response.failed\ndata: {"type": "response.failed", "sequence_number": 4, "response": '
     '{"id": "resp_1", "status": "failed", "error": null, "output": [], "usage": null}}',
     "response.failed: the response failed, without an error"),
])
def test_an_error_event_is_named_by_its_type_or_code_and_its_message(text, said):
    assert stream_error_message(event(text)) == said


@pytest.mark.parametrize("protocol", [Protocol.ANTHROPIC, Protocol.RESPONSES])
def test_a_relay_s_bare_error_object_in_a_stream_is_an_error_event(protocol):
    # some relays send `data: {"error": {...}}` with no `event:` line and no type: it was taken
    # for an unknown event, and the attempt failed as "stream ended before its terminal event",
    # the relay's words and the status it stands for (529 here) lost
    bare = event('data: {"error": {"type": "overloaded_error", "message": "upstream overloaded"}}')
    assert classify_event(protocol, bare) is Kind.ERROR
    assert stream_error_message(bare) == "overloaded_error: upstream overloaded"
    assert in_stream_status(bare.json()) == 529
    assert classify_event(protocol, event('data: {"note": "hello"}')) is Kind.OTHER


def test_a_chat_chunk_with_a_null_error_field_is_content_and_one_with_an_error_is_not():
    # some servers put `"error": null` on every chunk; the openai SDK reads only a truthy one
    chunk = '{"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}], "error": %s}'
    assert classify_event(Protocol.CHAT, event("data: " + chunk % "null")) is Kind.CONTENT
    assert classify_event(Protocol.CHAT, event("data: " + chunk % '{"message": "boom"}')) is Kind.ERROR


def test_only_an_unnamed_line_with_an_error_object_is_a_bare_error():
    """The converters end a stream at a bare error before they look at the event's name: a named
    event is judged by its name, whatever else it carries; the bare line's `error` is an object."""
    assert is_bare_error(event('data: {"error": {"message": "upstream overloaded"}}'))
    assert not is_bare_error(event('event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
                                   '"delta": {"type": "text_delta", "text": "hi"}, "error": {"message": "x"}}'))
    assert not is_bare_error(event('data: {"error": "upstream overloaded"}'))
