"""Turns sent over an upstream's own WebSocket: the incremental/full choice (pure), one socket
per upstream kept across turns, and the socket's events read as an HTTP response (an SSE
stream, or an error status before any event)."""

import asyncio
import json

import pytest

from ccswitch.dial.render import OutgoingRequest
from ccswitch.dial.ws_upstream import UpstreamSockets, create_frame
from ccswitch.net import http1
from ccswitch.wire.sse import SSEParser
from ccswitch.wire.ws_chain import Chain, Turn
from tests.support.mock_upstream import cut_after, stall_after, status


def user(text):
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


BODY = {"model": "gpt-5-codex", "instructions": "be brief", "input": [user("one"), user("two")],
        "stream": True, "store": False}


def test_incremental_only_on_the_socket_that_issued_the_previous_response():
    turn = Turn(BODY, BODY["input"], "a", new_input=[user("two")], previous="resp_1")
    incremental = create_frame(BODY, turn, issued="resp_1")
    assert incremental == {**BODY, "type": "response.create", "input": [user("two")], "previous_response_id": "resp_1"}
    for issued in (None, "resp_0"):        # a new socket, or one whose last response is another
        full = create_frame(BODY, turn, issued)
        assert full == {**BODY, "type": "response.create"} and "previous_response_id" not in full
    # a full frame from the client stays full, whatever the socket issued
    fresh = Turn(BODY, BODY["input"], None, new_input=BODY["input"], previous=None)
    assert create_frame(BODY, fresh, issued="resp_1") == {**BODY, "type": "response.create"}
    # a Turn made before new_input/previous existed is always sent in full
    assert "previous_response_id" not in create_frame(BODY, Turn(BODY, BODY["input"], "a"), issued=None)
    assert BODY["input"] == [user("one"), user("two")]     # the rendered body is not changed


def outgoing(mock, body, key="Bearer k"):
    return OutgoingRequest("POST", mock.base_url + "/v1/responses",
                           [("authorization", key), ("content-type", "application/json")],
                           json.dumps(body).encode(), body["model"])


async def read_events(response):
    return [e.json() for e in SSEParser().feed(await response.aread())]


async def run_turn(sockets, mock, chain, frame, upstream="a", key="Bearer k"):
    turn = chain.prepare(frame)
    response = await sockets.send(upstream, outgoing(mock, turn.body, key), turn, tls=None, connect_timeout=2)
    try:
        events = await read_events(response) if response.status_code == 200 else None
    finally:
        await response.aclose()
    for event in events or []:
        chain.observe(event, upstream)
    return response, events


async def test_turns_reuse_one_socket_and_continue_the_response_it_issued(mock_a):
    sockets, chain = UpstreamSockets(), Chain()
    try:
        response, events = await run_turn(sockets, mock_a, chain, {"type": "response.create", "model": "gpt-5-codex",
                                                                     "input": [user("one")]})
        assert response.status_code == 200 and response.header("Content-Type") == "text/event-stream"
        assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
        first_id = events[-1]["response"]["id"]
        await run_turn(sockets, mock_a, chain, {"type": "response.create", "model": "gpt-5-codex",
                                                "input": [user("two")], "previous_response_id": first_id})
        frames = mock_a.frames()
        assert [f.socket for f in frames] == [1, 1] and len(sockets) == 1
        assert "previous_response_id" not in frames[0].json and frames[0].json["input"] == [user("one")]
        assert frames[1].json["previous_response_id"] == first_id and frames[1].json["input"] == [user("two")]
        assert all(f.json["type"] == "response.create" and f.json["stream"] is True for f in frames)
        upgrade = next(r for r in mock_a.requests if r.method == "GET")
        assert upgrade.headers["authorization"] == "Bearer k" and "content-type" not in upgrade.headers
    finally:
        sockets.close()


async def test_a_closed_or_changed_socket_is_replaced_and_sent_the_full_input(mock_a):
    sockets, chain = UpstreamSockets(), Chain()
    try:
        _, events = await run_turn(sockets, mock_a, chain, {"type": "response.create", "model": "m",
                                                            "input": [user("one")]})
        first_id = events[-1]["response"]["id"]
        # the upstream closed the idle socket between turns: a new one, which cannot know first_id
        for conn in list(mock_a._server.conns):
            conn.shutdown(2)
        for _ in range(100):
            if not sockets._open["a"].client.idle():
                break
            await asyncio.sleep(0.01)
        _, events = await run_turn(sockets, mock_a, chain, {"type": "response.create", "model": "m",
                                                            "input": [user("two")], "previous_response_id": first_id})
        second_id = events[-1]["response"]["id"]
        # a changed key (rules reloaded): another socket again, full input again
        await run_turn(sockets, mock_a, chain, {"type": "response.create", "model": "m", "input": [user("three")],
                                                "previous_response_id": second_id}, key="Bearer other")
        frames = mock_a.frames()
        assert [f.socket for f in frames] == [1, 2, 3]
        assert all("previous_response_id" not in f.json for f in frames)
        assert [len(f.json["input"]) for f in frames] == [1, 3, 5]
    finally:
        sockets.close()


async def test_an_error_frame_before_any_event_is_an_http_error_and_the_socket_stays(mock_a):
    mock_a.script(status(429))
    sockets, chain = UpstreamSockets(), Chain()
    try:
        response, _ = await run_turn(sockets, mock_a, chain, {"type": "response.create", "model": "m", "input": []})
        assert response.status_code == 429 and response.header("content-type") == "application/json"
        assert json.loads(await response.aread())["error"]["code"] == "rate_limit_exceeded"
        await run_turn(sockets, mock_a, chain, {"type": "response.create", "model": "m", "input": []})
        assert [f.socket for f in mock_a.frames()] == [1, 1]
    finally:
        sockets.close()


async def test_a_turn_left_before_its_end_closes_the_socket(mock_a):
    # its first event, then nothing: a turn answered whole may be read whole by the first read
    # (every frame already in), and ends there, its socket fit for the next turn
    mock_a.script(stall_after(1, 5))
    sockets = UpstreamSockets()
    turn = Chain().prepare({"type": "response.create", "model": "m", "input": []})
    try:
        response = await sockets.send("a", outgoing(mock_a, turn.body), turn, tls=None, connect_timeout=2)
        assert SSEParser().feed(await response.__anext__())[0].type == "response.created"
        await response.aclose()                  # the pump gave up (idle timeout, client gone)
        assert len(sockets) == 0
    finally:
        sockets.close()


async def test_a_socket_that_closes_before_the_first_event_is_a_transport_error(mock_a):
    mock_a.script(cut_after(0))
    sockets = UpstreamSockets()
    turn = Chain().prepare({"type": "response.create", "model": "m", "input": []})
    with pytest.raises(http1.TransportError):
        await sockets.send("a", outgoing(mock_a, turn.body), turn, tls=None, connect_timeout=2)
    assert len(sockets) == 0


async def test_a_socket_that_times_out_through_the_upstream_s_proxy_names_the_proxy():
    # the dialer hands the proxy as shown (`through`): a proxy that never answers is the proxy's
    # path's timeout, not the upstream's own silence (its cooldown ends when the proxy changes: routing.health)
    from ccswitch.dial.outcome import network_failure
    from ccswitch.net.proxy import parse_proxy

    async def silent(reader, writer):
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)        # the proxy, mute
    sockets = UpstreamSockets()
    fresh = Turn(BODY, BODY["input"], None, new_input=BODY["input"], previous=None)
    request = OutgoingRequest("POST", "http://127.0.0.1:9/v1/responses",
                              [("authorization", "Bearer k")], json.dumps(BODY).encode(), BODY["model"])
    proxied = parse_proxy(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        with pytest.raises(http1.ConnectTimeout) as caught:
            await sockets.send("a", request, fresh, tls=None, connect_timeout=0.3,
                               open_transport=http1.opener(proxied, 0.3), through=proxied.shown)
    finally:
        server.close()
    assert network_failure("a", caught.value, "failover", "connect").reason == \
        f"connect timeout (through proxy {proxied.shown})"


async def test_a_socket_that_closes_mid_turn_fails_the_read(mock_a):
    mock_a.script(cut_after(4))
    sockets = UpstreamSockets()
    turn = Chain().prepare({"type": "response.create", "model": "m", "input": []})
    response = await sockets.send("a", outgoing(mock_a, turn.body), turn, tls=None, connect_timeout=2)
    with pytest.raises(http1.TransportError):
        async for _ in response.aiter_bytes():
            pass
    await response.aclose()
    assert len(sockets) == 0


def test_an_upstream_that_said_it_has_no_websocket_is_asked_again_later_or_with_another_account():
    from ccswitch.config.load import parse_rules
    from ccswitch.dial.ws_upstream import RECHECK_AFTER, WithoutWebSocket
    from ccswitch.net.ws_client import HandshakeRefused
    now = [100.0]
    rules = parse_rules("""
upstreams:
  - {name: a, protocol: openai-responses, base_url: 'http://127.0.0.1:9/v1', api_key: key-a-00000000, websocket: true}
""")
    upstream = rules.upstreams[0]
    memory = WithoutWebSocket(clock=lambda: now[0])
    assert not memory.learn(upstream, HandshakeRefused(503))        # a failure, not "none here"
    assert memory.learn(upstream, HandshakeRefused(404)) and memory.known(upstream)
    assert not memory.known(upstream.model_copy(update={"base_url": "http://127.0.0.1:8/v1"}))
    now[0] += RECHECK_AFTER                                            # a 404 of a moment is not for good
    assert not memory.known(upstream)
