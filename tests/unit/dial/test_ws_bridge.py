"""The WebSocket bridge on its own, driven by a wsproto client over loopback: the handshake
(ticket, permessage-deflate), pings, the warm-up answered locally, in-band errors."""

import asyncio
import json

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from ccswitch.dial.dialer import Dialer
from ccswitch.dial.job import CLIENT_CLOSED, Job
from ccswitch.dial.relay import run_guarded
from ccswitch.dial.render import OutgoingRequest
from ccswitch.dial.shutdown import SHUTTING_DOWN, Shutdown
from ccswitch.dial.ws_bridge import TICKET_HEADER, Ticket, WsBridge
from ccswitch.dial.ws_errors import Refusal, error_frame, refusal_frame
from ccswitch.routing.health import HealthBoard
from ccswitch.vocab import Endpoint, Protocol, Route
from ccswitch.wire.exchange import ClientRequest
from ccswitch.wire.protocols import own_error
from ccswitch.wire.ws_chain import Chain
from tests.support.helpers import eventually
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import hang_before_headers, stall_after
from tests.unit.dial.test_dialer_websocket import rules_for


class Client:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def connect(cls, port, token, deflate=True):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        extensions = [PerMessageDeflate()] if deflate else []
        writer.write(client.ws.send(Request(host="127.0.0.1", target="/v1/responses", extensions=extensions,
                                            extra_headers=[(TICKET_HEADER.encode(), token.encode())])))
        return client

    async def events(self, until):
        seen = []
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            self.ws.receive_data(data or None)
            seen += list(self.ws.events())
            if until(seen) or not data:
                return seen

    def send(self, event):
        self.writer.write(self.ws.send(event))


async def open_socket(bridge) -> Client:
    """A client socket on a started bridge, its handshake accepted."""
    ticket = Ticket()
    bridge.register(ticket)
    client = await Client.connect(bridge.port, ticket.token, deflate=False)
    await client.events(lambda seen: any(isinstance(e, AcceptConnection) for e in seen))
    return client


LOST = json.dumps({"type": "response.create", "model": "m", "input": [], "previous_response_id": "resp_from_another_socket"})


async def bridge_with(make_job):
    done = []
    bridge = WsBridge(make_job, run_job=None, on_done=done.append)
    await bridge.start()
    return bridge, done


def frame_model(row: dict):
    """The model of the frame a refusal's row is for (None when it could not be read)."""
    frame = row.get("frame")
    return frame.get("model") if isinstance(frame, dict) else None


async def recording_bridge(max_message: int):
    """A started bridge whose turns are all refused (503), with a registered ticket: (bridge,
    ticket, the turns' bodies, the refusals as (turn, status, message))."""
    turns, refusals = [], []

    def make_job(ticket, turn):
        turns.append(turn.body)
        return Refusal(503, "no upstream")

    def refuse(ticket, status, message, **row):
        refusals.append((ticket.turns, status, message))
        return Refusal(status, message)
    bridge = WsBridge(make_job, run_job=None, on_done=[].append, refuse=refuse, max_message=lambda: max_message)
    await bridge.start()
    ticket = Ticket()
    bridge.register(ticket)
    return bridge, ticket, turns, refusals


async def test_handshake_deflate_ping_warm_up_and_in_band_errors():
    refused = []

    def make_job(ticket, turn):
        refused.append(turn.body)
        return Refusal(503, "no upstream available for the codex route")

    bridge, _ = await bridge_with(make_job)
    ticket = Ticket()
    bridge.register(ticket)
    try:
        client = await Client.connect(bridge.port, ticket.token)
        accepted = await client.events(lambda seen: any(isinstance(e, AcceptConnection) for e in seen))
        accept = next(e for e in accepted if isinstance(e, AcceptConnection))
        assert [type(x) for x in accept.extensions] == [PerMessageDeflate]      # offered, so taken
        client.send(Ping(b"hi"))
        assert any(isinstance(e, Pong) and e.payload == b"hi" for e in await client.events(
            lambda seen: any(isinstance(e, Pong) for e in seen)))
        # the warm-up is answered here: no upstream is planned for it
        client.send(TextMessage(json.dumps({"type": "response.create", "model": "m", "generate": False,
                                            "input": [{"type": "message", "role": "user", "content": "x"}]})))
        frames = await client.events(lambda seen: sum(isinstance(e, TextMessage) for e in seen) >= 2)
        kinds = [json.loads(e.data)["type"] for e in frames if isinstance(e, TextMessage)]
        assert kinds == ["response.created", "response.completed"] and refused == []
        # a real turn that ccswitch answers itself: an in-band error, the socket stays open
        client.send(TextMessage(json.dumps({"type": "response.create", "model": "m", "input": []})))
        frames = await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
        error = json.loads(next(e for e in frames if isinstance(e, TextMessage)).data)
        assert error == {"type": "error", "status": 503,
                         "error": {"type": "server_error", "message": "no upstream available for the codex route",
                                   "param": None, "code": None},
                         "headers": {"x-should-retry": "true"}}
        client.send(TextMessage("not json"))
        frames = await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
        assert json.loads(next(e for e in frames if isinstance(e, TextMessage)).data)["status"] == 400
        client.send(CloseConnection(code=1000))
        closed = await client.events(lambda seen: any(isinstance(e, CloseConnection) for e in seen))
        assert any(isinstance(e, CloseConnection) for e in closed)
    finally:
        await bridge.stop()


@pytest.mark.parametrize("status", [400, 401, 413, 429, 500, 502, 503, 504])
@pytest.mark.parametrize("headers", [(), (("retry-after", "20"),), (("retry-after", "36000"),)])
def test_an_own_error_frame_has_the_error_the_same_answer_over_https_to_codex_has(status, headers):
    """Codex reads a frame's error as it reads an HTTP answer's: a 429 is rate_limit_error on both,
    and a budget spent until tomorrow is the `usage_limit_reached` it stops on, on both."""
    https_headers, body = own_error(Protocol.RESPONSES, status, "over the daily budget", headers, codex=True)
    frame = json.loads(refusal_frame(Refusal(status, "over the daily budget", headers)))
    error = json.loads(body)["error"]
    resets = frame["error"].pop("resets_at", None), error.pop("resets_at", None)
    assert (None not in resets) == (status == 429 and headers == (("retry-after", "36000"),))
    assert abs(resets[0] - resets[1]) <= 1 if None not in resets else True
    # and the headers that say when to try again (Codex reads a frame's `headers` as an answer's)
    told = {k: v for k, v in https_headers if k in ("retry-after", "x-should-retry")}
    assert told and frame == {"type": "error", "status": status, "error": error, "headers": told}
    assert json.loads(error_frame(status, "x")) == {"type": "error", "status": status,
                                                    "error": json.loads(own_error(Protocol.RESPONSES, status, "x")[1])["error"]}


async def test_an_unknown_ticket_is_refused_and_a_stale_chain_closes_before_any_output():
    bridge, _ = await bridge_with(lambda ticket, turn: Refusal(500, "unused"))
    try:
        client = await Client.connect(bridge.port, "not-a-ticket", deflate=False)
        events = await client.events(lambda seen: any(isinstance(e, RejectConnection) for e in seen))
        assert next(e for e in events if isinstance(e, RejectConnection)).status_code == 403
        client = await open_socket(bridge)
        client.send(TextMessage(LOST))
        events = await client.events(lambda seen: any(isinstance(e, CloseConnection) for e in seen))
        assert not any(isinstance(e, TextMessage) for e in events)
        assert next(e for e in events if isinstance(e, CloseConnection)).code == 1011
    finally:
        await bridge.stop()


async def test_an_upgrade_that_is_not_a_websocket_handshake_gets_a_400_not_a_cut():
    bridge, _ = await bridge_with(lambda ticket, turn: Refusal(500, "unused"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
        writer.write(b"GET /v1/responses HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n")
        head = await asyncio.wait_for(reader.read(1024), 5)
        assert head.startswith(b"HTTP/1.1 400")
        writer.close()
    finally:
        await bridge.stop()


async def test_the_upstream_sockets_close_with_the_client_socket(mock_a):
    bridge, _ = await bridge_with(lambda ticket, turn: Refusal(500, "unused"))
    ticket = Ticket()
    bridge.register(ticket)
    turn = Chain().prepare({"type": "response.create", "model": "m", "input": []})
    outgoing = OutgoingRequest("POST", mock_a.base_url + "/v1/responses", [], json.dumps(turn.body).encode(), "m")
    try:
        response = await ticket.upstream_sockets.send("a", outgoing, turn, tls=None, connect_timeout=2)
        await response.aread()                       # a turn on a websocket: true upstream, done
        assert len(ticket.upstream_sockets) == 1
        client = await Client.connect(bridge.port, ticket.token, deflate=False)
        await client.events(lambda seen: any(isinstance(e, AcceptConnection) for e in seen))
        client.send(CloseConnection(code=1000))
        await client.events(lambda seen: any(isinstance(e, CloseConnection) for e in seen))
        for _ in range(200):
            if len(ticket.upstream_sockets) == 0:
                break
            await asyncio.sleep(0.01)
        assert len(ticket.upstream_sockets) == 0
    finally:
        await bridge.stop()


class Dialled:
    """A bridge whose turns go to the mock upstreams a, b (in that order) through a real dialer."""

    def __init__(self, a, b) -> None:
        self.rules = rules_for(a, b, a_ws=False, b_ws=False)       # first_byte: 2 s
        self.health, self.shutdown, self.done, self.refused = HealthBoard(), Shutdown(), [], []
        self.dialer = Dialer(self.health, allow_url=loopback_url)
        self.bridge = WsBridge(self._job, lambda job, sink: run_guarded(self.dialer.run, job, sink, self.shutdown),
                               on_done=self.done.append, refuse=self._refuse)

    def _refuse(self, ticket, status, message, **row):
        self.refused.append((ticket.turns, status, message, frame_model(row)))
        return Refusal(status, message)

    def _job(self, ticket, turn):
        req = ClientRequest(route=Route.CODEX, endpoint=Endpoint.WEBSOCKET, method="POST",
                            url="https://api.openai.com/v1/responses", headers=[], body=json.dumps(turn.body).encode(),
                            json=turn.body, model="gpt-5-codex", stream=True, client_protocol=Protocol.RESPONSES)
        return Job(request=req, rules=self.rules, candidates=list(self.rules.upstreams),
                   upstream_sockets=ticket.upstream_sockets, turn=turn)

    async def client(self) -> Client:
        await self.bridge.start()
        client = await open_socket(self.bridge)
        client.send(TextMessage(json.dumps({"type": "response.create", "model": "gpt-5-codex", "input": []})))
        return client

    async def hanging_turn(self, a) -> Client:
        """A client whose first turn hangs on `a` (3 s before its answer's head)."""
        a.script(hang_before_headers(3))
        client = await self.client()
        await eventually(lambda: self.bridge.running == 1 and a.requests)
        return client

    async def close(self) -> None:
        await self.bridge.stop()
        await self.dialer.aclose()


async def test_a_client_that_leaves_mid_turn_stops_it_at_once_with_no_failover_and_no_failure(mock_a, mock_b):
    mock_a.script(hang_before_headers(3))
    bridged = Dialled(mock_a, mock_b)
    try:
        client = await bridged.client()
        await eventually(lambda: bridged.bridge.running == 1 and mock_a.requests)
        [turning] = bridged.bridge.turning.values()             # the live page's: this turn, on a
        assert turning.running_attempt.upstream == "a"
        client.writer.close()                                   # before a's first byte (2 s away)
        await eventually(lambda: bridged.done, timeout=1.0)
        job = bridged.done[0]
        assert job is turning and job.error == CLIENT_CLOSED and [a.upstream for a in job.attempts] == ["a"]
        assert bridged.health.get("a").failures == 0 and not mock_b.requests and bridged.bridge.running == 0
        assert bridged.bridge.turning == {}
    finally:
        await bridged.close()


async def test_a_client_that_leaves_mid_turn_with_its_next_frame_sent_early_stops_it_at_once(mock_a, mock_b):
    # the socket was no longer read while the early frame waited for the turn: the client's close
    # went unseen, the turn ran on to its idle timeout (counted as the upstream's failure), and the
    # waiting frame was then sent upstream for a client long gone, with no row of its own
    bridged = Dialled(mock_a, mock_b)
    try:
        client = await bridged.hanging_turn(mock_a)
        client.send(TextMessage(json.dumps({"type": "response.create", "model": "gpt-5-next", "input": []})))
        client.send(TextMessage(json.dumps({"type": "response.processed"})))
        await asyncio.sleep(0.1)                                # the early frames are in
        client.writer.close()                                   # before a's first byte (2 s away)
        await eventually(lambda: bridged.done and bridged.refused, timeout=1.0)
        [job] = bridged.done
        assert job.error == CLIENT_CLOSED and [a.upstream for a in job.attempts] == ["a"]
        assert bridged.refused == [(2, 499, CLIENT_CLOSED, "gpt-5-next")]      # its row; the ack is none
        await asyncio.sleep(0.3)
        assert len(mock_a.requests) == 1 and not mock_b.requests and bridged.health.get("a").failures == 0
    finally:
        await bridged.close()


async def test_a_client_that_sends_more_than_a_few_messages_ahead_of_their_turn_is_cut_off(mock_a, mock_b):
    # they queued without end while a turn ran: 100 messages of 32 MiB held 3 GB of the gateway
    from ccswitch.dial.ws_bridge import MAX_WAITING
    bridged = Dialled(mock_a, mock_b)
    try:
        client = await bridged.hanging_turn(mock_a)
        for n in range(MAX_WAITING + 1):
            client.send(TextMessage(json.dumps({"type": "response.create", "model": f"m{n}", "input": []})))
        seen = await client.events(lambda seen: any(isinstance(e, CloseConnection) for e in seen))
        assert next(e for e in seen if isinstance(e, CloseConnection)).code == 1008
        await eventually(lambda: bridged.done and len(bridged.refused) == MAX_WAITING + 1, timeout=2.0)
        assert bridged.done[0].error == CLIENT_CLOSED and bridged.health.get("a").failures == 0
        assert {(status, model) for _, status, _, model in bridged.refused} == \
            {(429, f"m{n}") for n in range(MAX_WAITING + 1)}
        assert len(mock_a.requests) == 1 and not mock_b.requests
    finally:
        await bridged.close()


async def test_frames_left_waiting_at_a_stop_say_so_and_a_warm_up_has_no_row(mock_a, mock_b):
    bridged = Dialled(mock_a, mock_b)
    try:
        client = await bridged.hanging_turn(mock_a)
        client.send(TextMessage(json.dumps({"type": "response.create", "model": "later", "input": []})))
        client.send(TextMessage(json.dumps({"type": "response.create", "generate": False, "model": "w"})))
        await asyncio.sleep(0.1)
        await bridged.bridge.stop()
        assert [(status, model) for _, status, _, model in bridged.refused] == [(503, "later")]
    finally:
        await bridged.close()


async def test_a_frame_sent_while_a_turn_runs_is_served_after_it_in_order(mock_a, mock_b):
    bridged = Dialled(mock_a, mock_b)
    try:
        client = await bridged.client()
        client.send(TextMessage(json.dumps({"type": "response.create", "model": "gpt-5-codex", "input": []})))
        events = await client.events(lambda seen: sum(isinstance(e, TextMessage) and '"response.completed"' in e.data
                                                      for e in seen) == 2)
        assert sum(isinstance(e, TextMessage) and '"response.completed"' in e.data for e in events) == 2
        # a turn's row follows its last frame: the dialer reads the body to its end first
        await eventually(lambda: len(bridged.done) == 2, timeout=2.0)
        assert len(mock_a.requests) == 2 and bridged.refused == []
    finally:
        await bridged.close()


async def test_a_frame_whose_chain_is_lost_has_its_row_before_the_socket_closes():
    refused = []

    def refuse(ticket, status, message, **row):
        refused.append((ticket.turns, status, frame_model(row)))
        return Refusal(status, message)
    bridge = WsBridge(lambda ticket, turn: Refusal(500, "unused"), run_job=None, on_done=[].append, refuse=refuse)
    await bridge.start()
    try:
        client = await open_socket(bridge)
        client.send(TextMessage(LOST))
        await client.events(lambda seen: any(isinstance(e, CloseConnection) for e in seen))
        assert refused == [(1, 409, "m")]
    finally:
        await bridge.stop()


@pytest.mark.parametrize("leaving", ["close", "reset"])
async def test_a_client_that_leaves_once_its_turn_completed_with_its_next_frame_sent_has_that_frame_unserved(
        mock_a, mock_b, leaving):
    # the turn was served and runs on to its body's end; the frame sent before the client left
    # then went upstream for a client long gone, and had no row of its own (a connection reset
    # ends the reading with an error, not with a close event)
    import socket
    import struct

    from tests.support.mock_upstream import stall_after
    mock_a.script(stall_after(100, 0.5))            # every event, then the body's end 0.5 s later
    bridged = Dialled(mock_a, mock_b)
    try:
        client = await bridged.client()
        await client.events(lambda seen: any(isinstance(e, TextMessage) and "response.completed" in e.data
                                              for e in seen))
        client.send(TextMessage(json.dumps({"type": "response.create", "model": "gpt-5-next", "input": []})))
        if leaving == "reset":
            await asyncio.sleep(0.1)                # the frame is read, waiting for the turn to end
            client.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                              struct.pack("ii", 1, 0))
        client.writer.close()
        await eventually(lambda: bridged.done and bridged.refused, timeout=2.0)
        await asyncio.sleep(0.3)
        [job] = bridged.done
        assert job.error is None and len(mock_a.requests) == 1 and not mock_b.requests
        assert bridged.refused == [(2, 499, CLIENT_CLOSED, "gpt-5-next")]
    finally:
        await bridged.close()


async def test_a_frame_sent_behind_one_whose_chain_is_lost_is_not_served_on_the_closed_socket():
    # the socket is closed (1011) for Codex to send its whole input again on a new one: a frame
    # already behind the lost one went on to be made a turn and sent upstream all the same
    made, rows = [], []

    def make_job(ticket, turn):
        made.append(turn.body)
        return Refusal(503, "no upstream")

    def refuse(ticket, status, message, **row):
        rows.append((ticket.turns, status, message))
        return Refusal(status, message)
    bridge = WsBridge(make_job, run_job=None, on_done=[].append, refuse=refuse)
    await bridge.start()
    try:
        client = await open_socket(bridge)
        lost = client.ws.send(TextMessage(LOST))
        behind = client.ws.send(TextMessage(json.dumps({"type": "response.create", "model": "m", "input": []})))
        client.writer.write(lost + behind)                              # one read: both in before either is served
        seen = await client.events(lambda seen: any(isinstance(e, CloseConnection) for e in seen))
        assert any(isinstance(e, CloseConnection) and e.code == 1011 for e in seen)
        await asyncio.sleep(0.1)
        assert made == []
        # ccswitch closed the socket, not the client: the frame's row says so, not client_closed
        assert [(n, status) for n, status, _ in rows] == [(1, 409), (2, 409)]
        assert rows[1][2].startswith("the socket was closed, its conversation state lost")
    finally:
        await bridge.stop()


async def test_a_frame_that_arrives_as_the_turn_before_it_ends_is_served_all_the_same():
    # the task serving the frames is done but its done-callback has not run yet (the same turn of the
    # loop): a frame appended then waited for a next frame to start a task, or for ever
    from ccswitch.dial.ws_bridge import _Socket

    class Writer:
        def write(self, data):
            pass

        async def drain(self):
            pass

        def close(self):
            pass
    bridge = WsBridge(lambda ticket, turn: Refusal(503, "unused"), run_job=None, on_done=[].append)
    socket = _Socket(bridge, None, Writer())
    socket.ticket = Ticket()
    ended = asyncio.get_running_loop().create_future()
    ended.set_result(None)                          # over, no callback run
    socket.turn = ended
    await socket._piece(json.dumps({"type": "response.processed"}), True)
    await asyncio.sleep(0)
    assert not socket.frames                        # served (an acknowledgement: nothing to answer)


async def test_a_message_of_exactly_the_limit_is_served_and_one_a_byte_over_is_refused():
    bridge, ticket, turns, refusals = await recording_bridge(1000)
    try:
        client = await Client.connect(bridge.port, ticket.token, deflate=False)
        await client.events(lambda seen: any(isinstance(e, AcceptConnection) for e in seen))
        head = json.dumps({"type": "response.create", "model": "m", "input": ""})
        at_limit = head[:-2] + "x" * (1000 - len(head)) + head[-2:]
        assert len(at_limit.encode()) == 1000
        for frame in (at_limit, at_limit[:-2] + "x" + at_limit[-2:]):
            client.send(TextMessage(frame))
            await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
        assert len(turns) == 1 and [(n, status) for n, status, _ in refusals] == [(2, 413)]
    finally:
        await bridge.stop()


async def test_a_turn_cancelled_the_moment_it_is_made_still_ends_with_its_row(mock_a, mock_b):
    # a task not yet started when cancelled never runs its `finally`: the turn went unrecorded
    # wherever tasks are not started eagerly (mitmproxy's loop starts them so, this one not)
    mock_a.script(hang_before_headers(3))
    bridged = Dialled(mock_a, mock_b)
    track = bridged.bridge._track

    def cancelled_at_once(task):
        track(task)
        task.cancel()
    bridged.bridge._track = cancelled_at_once
    try:
        await bridged.client()
        await eventually(lambda: bridged.done, timeout=2.0)
        assert bridged.bridge.running == 0 and bridged.bridge.turning == {}
    finally:
        await bridged.close()


async def test_a_turn_counts_as_in_flight_and_a_shutdown_cut_ends_it_in_band(mock_a, mock_b):
    mock_a.script(hang_before_headers(3))
    bridged = Dialled(mock_a, mock_b)
    try:
        client = await bridged.client()
        await eventually(lambda: bridged.bridge.running == 1)
        bridged.shutdown.cutting = True                         # the grace period is over
        bridged.bridge.cut()
        seen = await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
        frame = json.loads(next(e.data for e in seen if isinstance(e, TextMessage)))
        assert frame["type"] == "error" and frame["status"] == 503 and SHUTTING_DOWN in frame["error"]["message"]
        await eventually(lambda: bridged.done and bridged.bridge.running == 0)
        assert bridged.done[0].error.startswith("shutdown")
        await bridged.bridge.stop()
        # then a close frame, "going away": Codex reconnects, where a cut socket reads as 1006
        seen = await client.events(lambda seen: any(isinstance(e, CloseConnection) for e in seen))
        closed = next(e for e in seen if isinstance(e, CloseConnection))
        assert (closed.code, closed.reason) == (1001, "ccswitch is shutting down")
    finally:
        await bridged.close()


async def cut_once_streaming(bridged: Dialled) -> tuple[str, dict]:
    """A turn cut by the shutdown once its stream has content: (the id its response.created gave,
    its response.failed)."""
    client = await bridged.client()
    seen = await client.events(lambda seen: any(isinstance(e, TextMessage) and "output_text.delta" in e.data
                                                for e in seen))
    frames = [json.loads(e.data) for e in seen if isinstance(e, TextMessage)]
    began = next(f["response"]["id"] for f in frames if f["type"] == "response.created")
    bridged.shutdown.cutting = True
    bridged.bridge.cut()
    seen = await client.events(lambda seen: any(isinstance(e, TextMessage) and "response.failed" in e.data
                                                for e in seen))
    return began, next(json.loads(e.data) for e in seen if isinstance(e, TextMessage) and "response.failed" in e.data)


async def test_a_turn_cut_by_the_shutdown_after_its_first_events_fails_its_own_response(mock_a, mock_b):
    # its response.failed named a response of ccswitch's own, not the one response.created began
    mock_a.script(stall_after(5, 3))                        # created, in_progress, item, part, a delta
    bridged = Dialled(mock_a, mock_b)
    try:
        began, failed = await cut_once_streaming(bridged)
        assert failed["response"]["id"] == began and SHUTTING_DOWN in failed["response"]["error"]["message"]
        assert failed["sequence_number"] == 5                   # after the five it had
    finally:
        await bridged.close()


async def test_a_turn_cut_by_the_shutdown_after_a_failover_fails_the_response_of_the_upstream_that_streamed(
        mock_a, mock_b):
    # the failed response was read from the first attempt (the one that failed over, with no id and
    # no events), not from the one whose stream was cut
    from tests.support.mock_upstream import status
    mock_a.script(status(503))
    mock_b.script(stall_after(5, 3))
    bridged = Dialled(mock_a, mock_b)
    try:
        began, failed = await cut_once_streaming(bridged)
        assert failed["response"]["id"] == began and failed["sequence_number"] == 5
    finally:
        await bridged.close()


async def test_a_ticket_whose_upgrade_never_came_can_be_forgotten():
    bridge, _ = await bridge_with(lambda ticket, turn: Refusal(500, "unused"))
    ticket = Ticket()
    bridge.register(ticket)
    try:
        assert bridge.forget(ticket.token) and not bridge.forget(ticket.token)
        client = await Client.connect(bridge.port, ticket.token, deflate=False)
        seen = await client.events(lambda seen: any(isinstance(e, RejectConnection) for e in seen))
        assert any(isinstance(e, RejectConnection) and e.status_code == 403 for e in seen)
    finally:
        await bridge.stop()


async def test_a_turn_whose_upstreams_all_failed_in_their_streams_is_recorded_with_the_status_it_was_told():
    # the client gets `status: 500` in-band for a server_error event under a 200 head; its ledger
    # row says the same, not the 200 the upstream's stream began with
    from types import SimpleNamespace

    from ccswitch.dial.ws_bridge import WsSink
    from ccswitch.wire.ws_chain import Chain
    from tests.support.helpers import make_job
    nowhere = SimpleNamespace(base_url="http://127.0.0.1:9")
    job = make_job(rules_for(nowhere, nowhere), path="/v1/responses",
                   body={"model": "gpt-5", "input": "hi", "stream": True})
    job.status = 200
    sent = []

    async def send(text):
        sent.append(json.loads(text))
    sink = WsSink(send, Chain(), job)
    failed = {"type": "response.failed", "response": {"id": "resp_1", "status": "failed",
                                                      "error": {"code": "server_error", "message": "boom"}}}
    await sink.start(200, [("content-type", "text/event-stream")], 0)      # held back whole
    await sink.write(f"event: response.failed\ndata: {json.dumps(failed)}\n\n".encode())
    await sink.end()
    assert [frame["status"] for frame in sent] == [500] and job.status == 500
    # with the type the documented frame has (an upstream's `response.failed` says only its code)
    assert sent[0]["error"] == {"type": "server_error", "code": "server_error", "message": "boom"}
    sent.clear()
    await sink._event({"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "sequence_number": 3})
    assert sent == [{"type": "error", "status": 429, "error": {"type": "rate_limit_error",
                                                                "code": "rate_limit_exceeded", "message": "slow down"}}]


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_a_large_message_or_one_in_several_frames_is_one_turn_and_one_over_the_limit_is_refused(deflate):
    """Codex sends the whole input on a new socket (instructions, tool output, files): hundreds of
    KB, which wsproto hands over in pieces; a client may also split a message into frames."""
    import random
    import string
    bridge, ticket, turns, refusals = await recording_bridge(600_000)
    try:
        client = await Client.connect(bridge.port, ticket.token, deflate=deflate)
        await client.events(lambda seen: any(isinstance(e, AcceptConnection) for e in seen))
        text = "".join(random.choices(string.ascii_letters, k=400_000))     # compresses poorly, as real input
        frame = json.dumps({"type": "response.create", "model": "m", "input": [
            {"type": "message", "role": "user", "content": text}]})
        client.send(TextMessage(frame))
        await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
        client.send(TextMessage(frame[:1000], message_finished=False))      # one message, three frames
        client.send(TextMessage(frame[1000:2000], message_finished=False))
        client.send(TextMessage(frame[2000:]))
        await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
        assert [t["input"][0]["content"] for t in turns] == [text, text]
        client.send(TextMessage(frame.replace(text, text + text)))          # 800,000 characters
        frames = await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
        error = json.loads(next(e for e in frames if isinstance(e, TextMessage)).data)
        assert error["status"] == 413 and "600000" in error["error"]["message"] and len(turns) == 2
        client.send(TextMessage("not json"))
        await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
        assert [(n, status) for n, status, _ in refusals] == [(3, 413), (4, 400)]   # each its own row
    finally:
        await bridge.stop()


async def test_the_message_limit_counts_bytes_and_a_frame_nested_too_deeply_is_a_400_not_a_dead_socket():
    """As a request body: a text message's limit is in UTF-8 bytes, not characters; a frame
    deeper than the JSON parser goes gets its in-band 400 and its row, and the socket stays."""
    bridge, ticket, turns, refusals = await recording_bridge(10_000)
    try:
        client = await Client.connect(bridge.port, ticket.token)
        await client.events(lambda seen: any(isinstance(e, AcceptConnection) for e in seen))
        emoji = json.dumps({"type": "response.create", "model": "m", "input": "\U0001F600" * 3000}, ensure_ascii=False)
        assert len(emoji) < 10_000 < len(emoji.encode())
        for frame in (emoji, "[" * 3000 + "]" * 3000, '{"type": "response.create", "temperature": NaN}'):
            client.send(TextMessage(frame))
            frames = await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
            assert json.loads(next(e for e in frames if isinstance(e, TextMessage)).data)["type"] == "error"
        assert [(status, message) for _, status, message in refusals] == [
            (413, "a message over 10000 bytes (ccswitch_max_body)"), (400, "a frame nested too deeply"),
            (400, "a frame that is not JSON")]
        client.send(TextMessage(json.dumps({"type": "response.create", "model": "m", "input": "\u00e9" * 100},
                                           ensure_ascii=False)))      # 200 bytes: within the limit, served
        await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
        assert len(turns) == 1 and not client.ws.state.name.endswith("CLOSED")
    finally:
        await bridge.stop()


async def test_a_frame_refused_once_read_hands_its_row_the_frame():
    # its model and `prompt_cache_key` belong in the row; the row had neither
    refused = []

    def refuse(ticket, status, message, **row):
        refused.append((status, row.get("frame")))
        return Refusal(status, message)
    bridge = WsBridge(lambda ticket, turn: Refusal(500, "unused"), run_job=None, on_done=[].append, refuse=refuse)
    await bridge.start()
    try:
        client = await open_socket(bridge)
        odd = {"type": "response.create", "model": "m", "input": 7, "prompt_cache_key": "pck-1"}
        client.send(TextMessage(json.dumps(odd)))
        await client.events(lambda seen: any(isinstance(e, TextMessage) for e in seen))
        assert refused == [(400, odd)]
    finally:
        await bridge.stop()


async def test_a_stop_with_sockets_open_closes_them_and_reports_no_error():
    """Each open socket gets its close frame; none ends as an error for the loop to report (Python
    3.12.1's servers took a cancelled connection task for one: a traceback per socket at every stop)."""
    reported = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    bridge, _ = await bridge_with(lambda ticket, turn: Refusal(503, "none"))
    clients = []
    try:
        for _ in range(2):
            ticket = Ticket()
            bridge.register(ticket)
            client = await Client.connect(bridge.port, ticket.token)
            await client.events(lambda seen: any(isinstance(e, AcceptConnection) for e in seen))
            clients.append(client)
        assert await bridge.stop() is True
        for client in clients:
            closed = await client.events(lambda seen: any(isinstance(e, CloseConnection) for e in seen))
            assert any(isinstance(e, CloseConnection) and e.code == 1001 for e in closed)
        await asyncio.sleep(0.05)
        assert reported == []
    finally:
        loop.set_exception_handler(None)


async def test_a_client_that_leaves_once_its_turn_completed_leaves_it_served(mock_a, mock_b):
    """`codex exec` closes its socket on `response.completed`; the upstream's body ends a moment
    later. The turn was served: no `client_closed` attempt, and the connection goes back."""
    from tests.support.mock_upstream import stall_after
    mock_a.script(stall_after(100, 0.3))            # every event, then the body's end 0.3 s later
    bridged = Dialled(mock_a, mock_b)
    try:
        client = await bridged.client()
        await client.events(lambda seen: any(isinstance(e, TextMessage) and "response.completed" in e.data
                                              for e in seen))
        client.writer.close()
        await eventually(lambda: bridged.done, timeout=2.0)
        job = bridged.done[0]
        assert job.error is None and [(a.upstream, a.error) for a in job.attempts] == [("a", None)]
        assert bridged.dialer.client.connection_counts() != {}     # kept for the next request
    finally:
        await bridged.close()


def test_an_upstream_error_without_a_message_is_told_by_its_body_cut_at_500_characters():
    from ccswitch.dial.ws_errors import message_of
    assert message_of({"message": "quota"}, b"ignored") == "quota"
    assert message_of({"code": "x"}, b"plain text") == "plain text"
    assert message_of(None, b"y" * 600) == "y" * 500


def test_an_upstream_error_frame_carries_the_answers_retry_and_limit_headers():
    headers = [("content-type", "application/json"), ("Retry-After", "7"), ("x-ratelimit-remaining-requests", "0"),
               ("set-cookie", "s=1"), ("x-codex-primary-used-percent", "100")]
    frame = json.loads(error_frame(429, "slow down", None, headers))
    assert frame["headers"] == {"retry-after": "7", "x-ratelimit-remaining-requests": "0",
                                "x-codex-primary-used-percent": "100"}
    assert "headers" not in json.loads(error_frame(500, "x", None, [("content-type", "application/json")]))


@pytest.mark.parametrize("held", [False, True])
async def test_an_error_told_in_the_upstreams_stream_carries_its_heads_retry_headers(held):
    """An in-stream 429 (an `error` event under a 200) as it comes, or held back whole once every
    attempt failed so: the frame has the stream head's `retry-after`, as an answer's would."""
    from ccswitch.config.load import parse_rules
    from ccswitch.dial.ws_bridge import WsSink
    from ccswitch.wire.ws_chain import Chain
    from tests.support.helpers import make_job
    rules = parse_rules("upstreams: [{name: a, protocol: openai-responses, base_url: 'http://127.0.0.1:9/v1', "
                        "api_key: k-1}]\nroutes: {codex: [a]}\n")
    sent = []

    async def send(text):
        sent.append(json.loads(text))

    job = make_job(rules, path="/v1/responses", body={"model": "m", "input": "hi", "stream": True})
    sink = WsSink(send, Chain(), job)
    body = (b'event: error\ndata: {"type": "error", "code": "rate_limit_exceeded", '
            b'"message": "slow down", "sequence_number": 0}\n\n')
    await sink.start(200, [("content-type", "text/event-stream"), ("retry-after", "3")], len(body) if held else None)
    await sink.write(body)
    await sink.end()
    [frame] = sent
    assert frame["type"] == "error" and frame["status"] == 429 and frame["headers"] == {"retry-after": "3"}


async def test_a_whole_error_answer_told_in_band_carries_its_retry_and_limit_headers():
    # the upstream's own 429 (not one of ccswitch's refusals): Codex waits out its retry-after
    from types import SimpleNamespace

    from ccswitch.dial.ws_bridge import WsSink
    from tests.support.helpers import make_job
    nowhere = SimpleNamespace(base_url="http://127.0.0.1:9")
    job = make_job(rules_for(nowhere, nowhere), path="/v1/responses",
                   body={"model": "gpt-5", "input": "hi", "stream": True})
    sent = []

    async def send(text):
        sent.append(json.loads(text))
    sink = WsSink(send, Chain(), job)
    body = b'{"error": {"message": "slow down", "type": "rate_limit_error"}}'
    await sink.start(429, [("content-type", "application/json"), ("Retry-After", "2"),
                           ("x-ratelimit-remaining-requests", "0")], len(body))
    await sink.write(body)
    await sink.end()
    [frame] = sent
    assert frame["status"] == 429 and frame["error"]["message"] == "slow down"
    assert frame["headers"] == {"retry-after": "2", "x-ratelimit-remaining-requests": "0"}


async def test_a_socket_closed_for_a_lost_chain_ends_even_if_the_client_ignores_the_close():
    # the close frame went out, but the socket was still read, for as long as the client kept it
    bridge, _ = await bridge_with(lambda ticket, turn: Refusal(500, "unused"))
    try:
        client = await open_socket(bridge)
        client.send(TextMessage(LOST))
        rest = b""
        while chunk := await asyncio.wait_for(client.reader.read(65536), 2):   # never answering the close
            rest += chunk
        assert rest                                             # its close frame, then the end
    finally:
        await bridge.stop()
