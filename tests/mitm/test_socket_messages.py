"""A bridged Codex socket's flow keeps its newest messages, up to a size, not every message of
its life, and none of Codex's quoting an upstream's key; other sockets' flows are mitmproxy's as ever."""

import json
import logging
from types import SimpleNamespace

from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from ccswitch.mitm import make_addons
from ccswitch.mitm.socket_messages import KEPT_BYTES, SocketMessages
from ccswitch.vocab import Endpoint, Route
from tests.support.helpers import KEY_A, KEY_B, rules_for

GATEWAY = SimpleNamespace(rules=rules_for(("relay-a", "anthropic", "https://a.example"),
                                          ("relay-b", "openai-responses", "https://b.example"),
                                          routes={"claude": ["relay-a"], "codex": ["relay-b"]}))


def bridged_flow():
    flow = tflow.twebsocketflow()
    flow.websocket.messages.clear()
    flow.metadata["ccswitch"] = {"route": Route.CODEX, "endpoint": Endpoint.WEBSOCKET}
    return flow


def receive(addon, flow, size):
    flow.websocket.messages.append(WebSocketMessage(Opcode.TEXT, False, b"x" * size))
    addon.websocket_message(flow)


def test_a_long_codex_socket_keeps_only_its_newest_messages():
    addon, flow = SocketMessages(GATEWAY), bridged_flow()
    with taddons.context(addon):
        for _ in range(200):                      # turns of 1 MB each way: 400 MB over its life
            receive(addon, flow, 1024 * 1024)
            receive(addon, flow, 100)
        sizes = [len(m.content) for m in flow.websocket.messages]
        assert sum(sizes) <= KEPT_BYTES and len(sizes) >= 4 and sizes[-1] == 100
        receive(addon, flow, 3 * KEPT_BYTES)      # one bigger than the limit: kept, alone
        assert [len(m.content) for m in flow.websocket.messages] == [3 * KEPT_BYTES]
        receive(addon, flow, 10)
        assert [len(m.content) for m in flow.websocket.messages] == [10]


def test_other_sockets_keep_every_message():
    addon, flow = SocketMessages(GATEWAY), tflow.twebsocketflow()
    with taddons.context(addon):
        for _ in range(10):
            receive(addon, flow, 1024 * 1024)
        assert len(flow.websocket.messages) == 13


def test_the_addon_is_in_ccswitch():
    assert any(isinstance(addon, SocketMessages) for addon in make_addons())


def test_a_codex_frame_quoting_an_upstreams_key_goes_on_and_stays_on_the_flow_as_redacted(caplog):
    # the bridge, and so every upstream tried and the chain's later turns, got it as it was; and
    # mitmdump -w saved it
    caplog.set_level(logging.WARNING, "ccswitch")
    addon, flow = SocketMessages(GATEWAY), bridged_flow()
    frame = json.dumps({"type": "response.create", "model": "m", "input": [
        {"type": "message", "role": "user", "content": f"keys: {KEY_A} and {KEY_B}, é"}]}, ensure_ascii=False)
    # and KEY_B with every letter escaped, as any JSON reader reads it
    frame = frame.replace(KEY_B, "".join(f"\\u{ord(c):04x}" if c.isalnum() else c for c in KEY_B))
    with taddons.context(addon):
        for _ in range(2):
            flow.websocket.messages.append(WebSocketMessage(Opcode.TEXT, True, frame.encode()))
            addon.websocket_message(flow)
        echoed = WebSocketMessage(Opcode.TEXT, False, frame.encode())     # the upstream's words: the bridge's to scrub
        flow.websocket.messages.append(echoed)
        addon.websocket_message(flow)
    sent = [json.loads(m.text) for m in flow.websocket.messages if m.from_client]
    assert [m["input"][0]["content"] for m in sent] == ["keys: [redacted] and [redacted], é"] * 2
    assert echoed.content == frame.encode()
    assert caplog.text.count("a Codex frame quoted an upstream's key") == 1
