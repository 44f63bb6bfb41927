"""A bridged Codex socket's flow keeps its newest messages, up to a size, not every message of
its life; other sockets' flows are mitmproxy's as ever."""

from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from ccswitch.mitm import make_addons
from ccswitch.mitm.socket_messages import KEPT_BYTES, SocketMessages
from ccswitch.vocab import Endpoint, Route


def bridged_flow():
    flow = tflow.twebsocketflow()
    flow.websocket.messages.clear()
    flow.metadata["ccswitch"] = {"route": Route.CODEX, "endpoint": Endpoint.WEBSOCKET}
    return flow


def receive(addon, flow, size):
    flow.websocket.messages.append(WebSocketMessage(Opcode.TEXT, False, b"x" * size))
    addon.websocket_message(flow)


def test_a_long_codex_socket_keeps_only_its_newest_messages():
    addon, flow = SocketMessages(), bridged_flow()
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
    addon, flow = SocketMessages(), tflow.twebsocketflow()
    with taddons.context(addon):
        for _ in range(10):
            receive(addon, flow, 1024 * 1024)
        assert len(flow.websocket.messages) == 13


def test_the_addon_is_in_ccswitch():
    assert any(isinstance(addon, SocketMessages) for addon in make_addons())
