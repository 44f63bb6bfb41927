"""mitmproxy's connections to the relay, made in memory: through mitmproxy's own connection
handler (its `server_event`, its tasks, its reading loop), with a layer that stands in for its
HTTP layers and sends one request."""

import asyncio
import gc

import pytest
from mitmproxy import connection, options
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.server import ConnectionHandler

from ccswitch.dial.relay import JOB_HEADER, Relay
from ccswitch.mitm.relay_link import link_relay, link_relays_in_memory, unlink_relay
from tests.support.helpers import eventually, make_job, rules_for

SSE = [("content-type", "text/event-stream")]


class OneRequest:
    """Opens the flow's server, sends it a request once open, keeps what comes back."""

    def __init__(self, server: connection.Server, request: bytes) -> None:
        self.server, self.request = server, request
        self.events: list[events.Event] = []
        self.received = b""

    def handle_event(self, event):
        self.events.append(event)
        if isinstance(event, events.Start):
            yield commands.OpenConnection(self.server)
        elif isinstance(event, events.OpenConnectionCompleted) and event.reply is None:
            yield commands.SendData(self.server, self.request)
        elif isinstance(event, events.DataReceived):
            self.received += event.data

    def completed(self) -> events.OpenConnectionCompleted | None:
        return next((e for e in self.events if isinstance(e, events.OpenConnectionCompleted)), None)


class Handler(ConnectionHandler):
    """mitmproxy's connection handler, its hooks noted (and `kill` run in `server_connect`)."""

    def __init__(self, layer: OneRequest, kill: str | None = None) -> None:
        client = connection.Client(peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 8080), timestamp_start=0)
        super().__init__(Context(client, options.Options()))
        self.layer = layer
        self.hooks: list[str] = []
        self.kill = kill

    async def handle_hook(self, hook: commands.StartHook) -> None:
        self.hooks.append(hook.name)
        if hook.name == "server_connect" and self.kill:
            hook.args()[0].server.error = self.kill


@pytest.fixture
async def relay():
    """A linked relay whose jobs answer with two events; mitmproxy's tasks start eagerly, as under
    mitmproxy (its entry point sets the eager task factory)."""
    link_relays_in_memory()     # for the rest of the process, as under mitmproxy: inert while no relay is linked

    async def answer(job, sink):
        await sink.start(200, SSE, None)
        await sink.write(b"event: ping\ndata: {}\n\n")
        await sink.write(b"event: pong\ndata: {}\n\n")
        await sink.end()
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    relay = Relay(answer)
    await relay.start()
    link_relay(relay.address, relay.link)
    yield relay
    unlink_relay(relay.address)
    await relay.stop()
    loop.set_task_factory(None)


def request_for(relay: Relay) -> tuple[connection.Server, bytes]:
    job = make_job(rules_for(("a", "anthropic", "http://127.0.0.1:9")))
    relay.register(job)
    head = (f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\n{JOB_HEADER}: {job.token}\r\n"
            "content-length: 0\r\n\r\n").encode()
    return connection.Server(address=relay.address), head


async def test_a_connection_to_the_relay_is_made_in_memory_with_mitmproxys_hooks_around_it(relay):
    server, head = request_for(relay)
    layer = OneRequest(server, head)
    handler = Handler(layer)
    await handler.server_event(events.Start())
    await eventually(lambda: layer.received.endswith(b"0\r\n\r\n"))
    assert layer.completed().reply is None
    assert layer.received.startswith(b"HTTP/1.1 200 OK\r\n") and b"event: pong" in layer.received
    # no socket of its own: no port on this side
    assert (server.peername, server.sockname, server.state) == (relay.address, ("127.0.0.1", 0),
                                                                  connection.ConnectionState.OPEN)
    assert handler.hooks == ["server_connect", "server_connected"]
    handler.transports[server].handler.cancel()          # the client left: mitmproxy ends its servers
    await eventually(lambda: server not in handler.transports and not relay._connections)
    assert handler.hooks == ["server_connect", "server_connected", "server_disconnected"]
    assert server.timestamp_start <= server.timestamp_tcp_setup <= server.timestamp_end


async def test_an_addon_killing_the_connection_before_it_opens_is_heard_as_by_mitmproxy(relay):
    server, head = request_for(relay)
    layer = OneRequest(server, head)
    handler = Handler(layer, kill="killed by a script")
    await handler.server_event(events.Start())
    await eventually(layer.completed)
    assert layer.completed().reply == "Connection killed: killed by a script"
    assert handler.hooks == ["server_connect", "server_connect_error"] and not relay._connections


async def test_a_relay_that_stopped_refuses_the_connection(relay):
    server, head = request_for(relay)
    await relay.stop()
    layer = OneRequest(server, head)
    handler = Handler(layer)
    await handler.server_event(events.Start())
    await eventually(layer.completed)
    assert "is not listening" in layer.completed().reply and "is not listening" in server.error
    assert handler.hooks == ["server_connect", "server_connect_error"]


async def test_any_other_server_is_connected_by_mitmproxy_itself(relay):
    listening = await asyncio.start_server(lambda r, w: w.write(b"hello"), "127.0.0.1", 0)
    server = connection.Server(address=listening.sockets[0].getsockname()[:2])
    layer = OneRequest(server, b"")
    handler = Handler(layer)
    try:
        await handler.server_event(events.Start())
        await eventually(lambda: layer.received == b"hello")
        assert server.sockname[1] != 0      # a socket of its own
    finally:
        handler.transports[server].handler.cancel()
        listening.close()
    await eventually(lambda: "server_disconnected" in handler.hooks)


@pytest.mark.parametrize("in_memory", [False, True], ids=["socket", "in memory"])
async def test_a_connection_cancelled_while_being_opened_is_heard_as_by_mitmproxy(relay, in_memory):
    # mitmproxy's own, cancelled while it connects (the client left, a CloseConnection for it),
    # runs `server_connect_error` and completes the OpenConnection with the cancellation's message
    server, head = request_for(relay)
    if not in_memory:     # the same relay, reached by mitmproxy's own open_connection
        server = connection.Server(address=("127.0.0.2", relay.port))
    layer = OneRequest(server, head)
    handler = Handler(layer)
    await handler.server_event(events.Start())     # eager: the task now waits in its connect
    task = handler.transports[server].handler
    assert not task.done()
    task.cancel("closed by command")
    await asyncio.wait([task])
    assert task.cancelled() and handler.hooks == ["server_connect", "server_connect_error"]
    assert layer.completed().reply == server.error == "closed by command"


async def _paused_then_client_gone(in_memory: bool) -> int:
    """A stream mitmproxy stops reading (the relay pauses), then its client leaves: the bytes
    live stream readers still hold once the test let go of its own references, with no
    collection of cycles meanwhile."""
    async def endless(job, sink):
        await sink.start(200, SSE, None)
        while True:
            await sink.write(b"x" * 16384)
    relay = Relay(endless)
    await relay.start()
    try:
        server, head = request_for(relay)
        if in_memory:
            reader, writer = relay.link()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(head)
        await eventually(lambda: any(c._paused for c in relay._connections))
        writer.close()
        await eventually(lambda: not relay._connections and relay.running == 0)
        del reader, writer
        return sum(len(o._buffer) for o in gc.get_objects() if isinstance(o, asyncio.StreamReader))
    finally:
        await relay.stop()


@pytest.mark.parametrize("in_memory", [False, True], ids=["socket", "in memory"])
async def test_a_closed_hop_lets_go_of_what_mitmproxy_left_unread_at_once(in_memory):
    gc.collect()
    gc.disable()
    try:
        assert await _paused_then_client_gone(in_memory) == 0
    finally:
        gc.enable()


class ConcurrentRequests:
    """An HTTP/2 client's concurrent streams, each routed: a server connection to the relay each."""

    def __init__(self, servers_and_heads) -> None:
        self.heads = dict(servers_and_heads)
        self.opened = 0

    def handle_event(self, event):
        if isinstance(event, events.Start):
            for server in self.heads:
                yield commands.OpenConnection(server)
        elif isinstance(event, events.OpenConnectionCompleted) and event.reply is None:
            self.opened += 1
            yield commands.SendData(event.command.connection, self.heads[event.command.connection])


@pytest.mark.parametrize("in_memory", [False, True], ids=["socket", "in memory"])
async def test_a_clients_sixth_concurrent_stream_does_not_wait_for_one_of_the_first_five(relay, in_memory):
    # mitmproxy holds five connections at a time from one client connection to one address, for
    # each connection's whole life: over the socket, the sixth waited for one of the five to end
    if not in_memory:
        unlink_relay(relay.address)
    layer = ConcurrentRequests([request_for(relay) for _ in range(6)])
    handler = Handler(layer)
    try:
        await handler.server_event(events.Start())
        await eventually(lambda: layer.opened >= 5)
        await asyncio.sleep(0.2)
        assert layer.opened == (6 if in_memory else 5)
    finally:
        tasks = [io.handler for io in handler.transports.values()]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
