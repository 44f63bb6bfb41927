"""The upstream WebSocket client against the mock upstream's Responses WebSocket and small
wsproto servers on loopback: handshake (headers, permessage-deflate, TLS, an outgoing proxy
through http1.opener), messages, pings, closes, and failures in the terms the dialer classifies."""

import asyncio
import json
import re
import ssl
import time

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Pong, Request, TextMessage

from ccswitch.dial.outcome import network_failure
from ccswitch.net import http1
from ccswitch.net.proxy import parse_proxy
from ccswitch.net.ws_client import HandshakeRefused, WsClient
from tests.support.helpers import localhost_tls_server_context
from tests.support.mock_upstream import MockUpstream, cut_after
from tests.support.tunnel_proxies import ConnectProxy, Socks5Proxy


async def events_until_completed(client):
    kinds = []
    while not kinds or kinds[-1] not in ("response.completed", "error"):
        kinds.append(json.loads(await asyncio.wait_for(client.receive(), 5))["type"])
    return kinds


async def test_a_turn_over_the_mock_upstream_with_headers_and_deflate(mock_a):
    client = await WsClient.open(mock_a.base_url + "/v1/responses?x=1", [("authorization", "Bearer k"),
                                 ("openai-beta", "responses_websockets=2026-02-06")], tls=None, timeout=2)
    try:
        await client.send(json.dumps({"type": "response.create", "model": "m", "input": []}))
        kinds = await events_until_completed(client)
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert client.idle() and client.poll() is None
        upgrade = mock_a.requests[0]
        assert upgrade.method == "GET" and upgrade.path == "/v1/responses" and upgrade.query == {"x": "1"}
        assert upgrade.headers["authorization"] == "Bearer k"
        assert upgrade.headers["host"] == f"127.0.0.1:{mock_a.port}"
        assert upgrade.headers["sec-websocket-extensions"].startswith("permessage-deflate")
        assert [f.json["model"] for f in mock_a.frames()] == ["m"] and mock_a.frames()[0].socket == 1
    finally:
        client.close()


async def test_a_refused_handshake_names_its_status(mock_a):
    mock_a.refuse_websocket = 401
    with pytest.raises(HandshakeRefused) as caught:
        await WsClient.open(mock_a.base_url + "/v1/responses", [], tls=None, timeout=2)
    assert caught.value.status == 401
    failure = network_failure("a", caught.value, "switch", "first_byte")
    assert failure.reason == "WebSocket handshake refused with HTTP 401" and failure.counts


async def test_nobody_listening_is_a_refused_connection():
    url = f"http://127.0.0.1:{MockUpstream.closed_port()}/v1/responses"
    with pytest.raises(http1.ConnectError) as caught:
        await WsClient.open(url, [], tls=None, timeout=2)
    assert network_failure("a", caught.value, "switch", "first_byte").reason == "connection refused"


async def test_a_server_that_never_answers_the_upgrade_is_a_connect_timeout():
    async def silent(reader, writer):
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/responses"
        with pytest.raises(http1.ConnectTimeout):
            await WsClient.open(url, [], tls=None, timeout=0.2)
    finally:
        server.close()


async def test_a_101_with_a_wrong_accept_key_is_named_a_broken_handshake():
    # the attempts table read a bare "ConnectError", where every other handshake failure says why
    async def wrong_accept(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: not-the-right-one\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(wrong_accept, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/responses"
        with pytest.raises(http1.ConnectError) as caught:
            await WsClient.open(url, [], tls=None, timeout=2)
        reason = network_failure("a", caught.value, "switch", "first_byte").reason
        assert reason == "the upstream's WebSocket handshake is broken (Bad accept token)"
    finally:
        server.close()


@pytest.mark.parametrize("mute", ["the proxy", "the upstream", "the upstream's TLS"])
async def test_an_upgrade_that_times_out_names_the_proxy_only_when_the_proxy_was_mute(mock_a, mute):
    # a proxy that never opens the tunnel: the failure says it went through it (what the ledger,
    # the flow's comment and a reload's cooldown rule read); a tunnel opened to an upstream that
    # never answers the upgrade is the upstream's own silence
    async def silent(reader, writer):
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    silent_port = server.sockets[0].getsockname()[1]
    try:
        with ConnectProxy() as proxy:
            proxied = parse_proxy(f"http://127.0.0.1:{silent_port}" if mute == "the proxy" else proxy.url())
            scheme = "https" if mute == "the upstream's TLS" else "http"
            url = f"{scheme}://127.0.0.1:{9 if mute == 'the proxy' else silent_port}/v1/responses"
            with pytest.raises(http1.ConnectTimeout) as caught:
                await WsClient.open(url, [], tls=None, timeout=0.3, open_transport=http1.opener(proxied, 0.3),
                                    through=proxied.shown)
    finally:
        server.close()
    said = network_failure("a", caught.value, "failover", "connect").reason
    assert said == {"the proxy": f"connect timeout (through proxy {proxied.shown})", "the upstream": "connect timeout",
                    # the proxy opened the tunnel; the TLS handshake inside it got no answer
                    "the upstream's TLS": f"TLS handshake timeout (through proxy {proxied.shown}, which had "
                                          "opened the tunnel)"}[mute]


async def test_an_upstream_that_closes_mid_turn_is_a_transport_error(mock_a):
    mock_a.script(cut_after(3))
    client = await WsClient.open(mock_a.base_url + "/v1/responses", [], tls=None, timeout=2)
    await client.send(json.dumps({"type": "response.create", "model": "m", "input": []}))
    for _ in range(3):
        json.loads(await asyncio.wait_for(client.receive(), 5))
    with pytest.raises(http1.TransportError):
        await asyncio.wait_for(client.receive(), 5)
    assert client.closed and not client.idle()
    with pytest.raises(http1.WriteError):
        await client.send("{}")


async def upgrade_asked(reader) -> WSConnection:
    """A server side of a WebSocket, once its client's upgrade request is read."""
    ws = WSConnection(ConnectionType.SERVER)
    while True:
        ws.receive_data(await reader.read(65536))
        if any(isinstance(e, Request) for e in ws.events()):
            return ws


class PingingServer:
    """A wsproto server (TLS when given a context) that pings, then sends one message."""

    def __init__(self, context=None):
        self.context, self.pongs = context, []

    async def serve(self, reader, writer):
        ws = await upgrade_asked(reader)
        writer.write(ws.send(AcceptConnection(extra_headers=[(b"x-models-etag", b"abc")])))
        writer.write(ws.send(Ping(b"are you there")))
        while not self.pongs:
            ws.receive_data(await reader.read(65536))
            self.pongs += [e.payload for e in ws.events() if isinstance(e, Pong)]
        writer.write(ws.send(TextMessage(data='{"type": "hello"}')))
        await writer.drain()
        await reader.read()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0, ssl=self.context)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc):
        self.server.close()


async def test_pings_are_answered_while_nobody_reads_and_the_101_headers_are_kept():
    server = PingingServer()
    async with server as port:
        client = await WsClient.open(f"http://127.0.0.1:{port}/v1/responses", [], tls=None, timeout=2)
        try:
            assert json.loads(await asyncio.wait_for(client.receive(), 5)) == {"type": "hello"}
            assert server.pongs == [b"are you there"]
            assert ("x-models-etag", "abc") in client.headers
        finally:
            client.close()


async def test_https_is_verified_with_the_context_given(tmp_path):
    server_context, cert = localhost_tls_server_context(tmp_path)
    server = PingingServer(server_context)
    async with server as port:
        url = f"https://localhost:{port}/v1/responses"
        with pytest.raises(http1.ConnectError) as caught:     # certifi's roots do not know it
            await WsClient.open(url, [], tls=None, timeout=2)
        reason = network_failure("a", caught.value, "switch", "first_byte").reason
        assert re.fullmatch(r"TLS error: certificate verify failed: self[- ]signed certificate", reason)
        trusting = ssl.create_default_context(cafile=str(cert))
        client = await WsClient.open(url, [], tls=trusting, timeout=2)
        try:
            assert json.loads(await asyncio.wait_for(client.receive(), 5)) == {"type": "hello"}
        finally:
            client.close()


@pytest.mark.parametrize("kind", [ConnectProxy, Socks5Proxy])
async def test_through_the_upstream_s_proxy(mock_a, kind):
    with kind(auth=("me", "secret")) as proxy:
        client = await WsClient.open(mock_a.base_url + "/v1/responses", [], tls=None, timeout=2,
                                     open_transport=http1.opener(parse_proxy(proxy.url("me", "secret")), 2))
        try:
            await client.send(json.dumps({"type": "response.create", "model": "m", "input": []}))
            assert (await events_until_completed(client))[-1] == "response.completed"
        finally:
            client.close()
        assert proxy.tunnels == 1 and proxy.targets == [("127.0.0.1", mock_a.port)]
        with pytest.raises(http1.ProxyFailure) as caught:
            await WsClient.open(mock_a.base_url + "/v1/responses", [], tls=None, timeout=2,
                                open_transport=http1.opener(parse_proxy(proxy.url("me", "wrong")), 2))
        reason = network_failure("a", caught.value, "switch", "first_byte").reason
        assert reason.startswith(f"proxy {kind.scheme}://127.0.0.1:{proxy.port}: ") and "wrong" not in reason
    assert mock_a.websockets == 1


class FloodingServer:
    """A wsproto server that sends `messages` (each a list of frames' texts) once the client is in."""

    def __init__(self, *messages, pause: float = 0.0):
        self.messages, self.closed_with, self.pause = messages, [], pause

    async def serve(self, reader, writer):
        ws = await upgrade_asked(reader)
        writer.write(ws.send(AcceptConnection()))
        for frames in self.messages:
            for i, text in enumerate(frames):
                writer.write(ws.send(TextMessage(data=text, message_finished=i == len(frames) - 1)))
                await writer.drain()
            await asyncio.sleep(self.pause)
        while data := await reader.read(65536):
            ws.receive_data(data)
            self.closed_with += [e.code for e in ws.events() if hasattr(e, "code")]

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc):
        self.server.close()


async def test_an_upstream_message_or_unread_backlog_over_the_cap_closes_the_socket(monkeypatch):
    # nothing bounded them: a relay could fill memory, a thousandfold through permessage-deflate
    from ccswitch.net import ws_client

    monkeypatch.setattr(ws_client, "MAX_MESSAGE", 10_000)
    monkeypatch.setattr(ws_client, "MAX_UNREAD", 25_000)
    for server, said in ((FloodingServer(["a" * 6000, "b" * 6000]), "a WebSocket message over"),
                         (FloodingServer(*[["c" * 9000]] * 4), "of WebSocket messages nobody asked for")):
        async with server as port:
            client = await WsClient.open(f"http://127.0.0.1:{port}/v1/responses", [], tls=None, timeout=2)
            try:
                await asyncio.sleep(0.2)                  # nobody reads: the messages pile up
                received = []
                with pytest.raises(http1.RemoteProtocolError, match=said):
                    while True:
                        received.append(await asyncio.wait_for(client.receive(), 5))
                assert all(message == "c" * 9000 for message in received)   # whole ones before the cut
                await asyncio.sleep(0.1)
                assert server.closed_with == [1009]
            finally:
                client.close()


async def test_messages_read_as_they_come_or_a_backlog_under_its_cap_are_never_cut(monkeypatch):
    # the cap is on what waits unread: read messages no longer count, however many came
    from ccswitch.net import ws_client

    monkeypatch.setattr(ws_client, "MAX_MESSAGE", 10_000)
    monkeypatch.setattr(ws_client, "MAX_UNREAD", 25_000)
    for how in ("receive", "poll"):
        async with FloodingServer(*[[f"{i}" * 9000] for i in range(6)], pause=0.05) as port:
            client = await WsClient.open(f"http://127.0.0.1:{port}/v1/responses", [], tls=None, timeout=2)
            try:
                received, deadline = [], time.monotonic() + 5
                while len(received) < 6 and time.monotonic() < deadline:
                    if how == "receive":
                        received.append(await asyncio.wait_for(client.receive(), 5))
                    elif (message := client.poll()) is not None:
                        received.append(message)
                    else:
                        await asyncio.sleep(0.01)
                assert received == [f"{i}" * 9000 for i in range(6)]
            finally:
                client.close()
    async with FloodingServer(["a" * 9000], ["b" * 9000]) as port:     # two unread: 18,000 of 25,000
        client = await WsClient.open(f"http://127.0.0.1:{port}/v1/responses", [], tls=None, timeout=2)
        try:
            await asyncio.sleep(0.2)
            assert [await asyncio.wait_for(client.receive(), 5) for _ in range(2)] == ["a" * 9000, "b" * 9000]
        finally:
            client.close()


async def test_a_message_over_the_cap_is_said_as_it_is_not_as_a_broken_protocol(monkeypatch):
    from ccswitch.net import ws_client

    monkeypatch.setattr(ws_client, "MAX_MESSAGE", 2 ** 20)
    async with FloodingServer(["a" * 2 ** 20, "b"]) as port:
        client = await WsClient.open(f"http://127.0.0.1:{port}/v1/responses", [], tls=None, timeout=2)
        try:
            with pytest.raises(http1.RemoteProtocolError) as caught:
                await asyncio.wait_for(client.receive(), 5)
            assert str(caught.value) == "the upstream sent a WebSocket message over 1 MiB"
        finally:
            client.close()


def test_a_connect_failure_the_classes_do_not_name_says_what_it_met():
    # not refused, reset, DNS or TLS: the attempts table reads the error, not a bare ConnectError
    import errno

    from ccswitch.net.ws_client import _connect_error
    met = OSError(errno.ENETUNREACH, "Network is unreachable")
    error, cause = _connect_error(met, "relay.example", 443, None)
    assert cause is met
    assert network_failure("a", error, "switch", "connect").reason == (
        f"OSError: [Errno {errno.ENETUNREACH}] Network is unreachable")
