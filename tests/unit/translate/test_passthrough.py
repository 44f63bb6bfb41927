"""Client and upstream of one protocol: each event as it came, an Anthropic one named."""

import pytest

from ccswitch.config.models import Upstream
from ccswitch.translate.base import Passthrough
from ccswitch.wire.sse import SSEParser

ANTHROPIC = Upstream(name="a", protocol="anthropic", base_url="https://relay.example", api_key="k")
RESPONSES = Upstream(name="r", protocol="openai-responses", base_url="https://relay.example/v1", api_key="k")


def fed(upstream: Upstream, raw: bytes) -> bytes:
    stream = Passthrough().stream(None, upstream)
    return b"".join(stream.feed(event) for event in SSEParser().feed(raw))


def test_an_anthropic_event_without_its_name_gets_it_from_its_type():
    assert fed(ANTHROPIC, b'data: {"type":"message_stop"}\n\n') == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    named = b'event: ping\ndata: {"type":"ping"}\n\n'
    assert fed(ANTHROPIC, named) == named
    unnamed = b'data: {"type":"response.completed"}\n\n'
    assert fed(RESPONSES, unnamed) == unnamed          # the OpenAI SDKs go by the JSON


@pytest.mark.parametrize("raw", [
    b'data: {"type":"\\ud800"}\n\n',                     # no text a header line can hold
    b'data: {"type":"a\\n\\ndata: {}"}\n\n',             # it would split the event in two
    b'data: {"type":"' + b"x" * 200 + b'"}\n\n',
    b'data: [1, 2]\n\n', b': a comment\n\n',
])
def test_a_type_no_event_line_can_hold_leaves_the_event_as_it_came(raw):
    assert fed(ANTHROPIC, raw) == raw


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_upstream_is_not_sent_the_sealed_reasoning_ccswitch_gave_the_client(stream):
    """`reasoning_items` is ccswitch's own field, sealed for one Responses account: a Chat upstream
    reads none of it, and some refuse a field they do not know; the rest of the body is the client's."""
    from ccswitch.translate.base import ChatPassthrough
    from ccswitch.wire.exchange import ClientRequest
    chat = Upstream(name="c", protocol="openai-chat", base_url="https://relay.example/v1", api_key="k")
    sealed = [{"index": 0, "type": "reasoning", "summary": [], "encrypted_content": "E"}]
    body = {"model": "m", "stream": stream, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "x", "reasoning_items": sealed, "thinking_blocks": []}, "not a message"]}
    req = ClientRequest(route="chat", endpoint="chat", method="POST", url="http://x/v1/chat/completions", headers=[],
                        body=b"", json=body, model="m", stream=stream, client_protocol="openai-chat")
    sent = ChatPassthrough().request(req, chat)
    assert sent["messages"][1] == {"role": "assistant", "content": "x", "thinking_blocks": []}
    assert sent["messages"][::2] == body["messages"][::2] and body["messages"][1]["reasoning_items"] == sealed
    plain = ClientRequest(route="chat", endpoint="chat", method="POST", url="http://x/v1/chat/completions",
                          headers=[], body=b"", json={"model": "m", "messages": []}, model="m", stream=False,
                          client_protocol="openai-chat")
    assert ChatPassthrough().request(plain, chat) is None      # nothing to leave out: the client's bytes go


@pytest.mark.parametrize("messages", [None, "hi", {"role": "user"}])
def test_a_chat_body_without_a_messages_list_goes_as_it_came(messages):
    """No list, nothing of ccswitch's to leave out: the upstream says what is wrong with it."""
    from ccswitch.translate.base import ChatPassthrough
    from ccswitch.wire.exchange import ClientRequest
    chat = Upstream(name="c", protocol="openai-chat", base_url="https://relay.example/v1", api_key="k")
    body = {"model": "m"} if messages is None else {"model": "m", "messages": messages}
    req = ClientRequest(route="chat", endpoint="chat", method="POST", url="http://x/v1/chat/completions", headers=[],
                        body=b"", json=body, model="m", stream=False, client_protocol="openai-chat")
    assert ChatPassthrough().request(req, chat) is None
