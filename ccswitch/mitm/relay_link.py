"""mitmproxy's connections to ccswitch's relay, made in memory.

A routed stream reaches its client through mitmproxy, which streams a body only from a server
connection: the router points the flow at the relay, a loopback server of this process.  Over a
socket pair every event of a stream costs a send, a wake of the selector and a receive, and each
stream a connection set up and torn down on both sides.  mitmproxy 12 opens every server
connection in `ConnectionHandler.open_connection`, with `asyncio.open_connection` and no hook to
hand it another transport, so ccswitch wraps that method: a connection to a relay of this
process gets the relay's in-memory pipe (`Relay.link`), with the same hooks around it
(`server_connect`, `server_connected`, `server_disconnected`, `server_connect_error`) and the
same state on the flow's server connection (for an HTTP/2 client, a pipe whose reads wait while
the client is far behind on the stream it serves: `h2_pace`); mitmproxy opens every other
connection itself.  The relay still listens on its loopback port (the relay's own tests reach it
there, and so would mitmproxy, were this wrapper ever not installed).

Left out: mitmproxy's "server connect 127.0.0.1:…" and "server disconnect" lines for the hop,
which named a port of ccswitch's own; and mitmproxy's limit of five connections at a time from
one client connection to one address, which made an HTTP/2 client's sixth concurrent stream wait
for one of the first five to end (upstreams have ccswitch's own limits, `max_connections`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.server import ConnectionHandler, ConnectionIO
from mitmproxy.proxy.server_hooks import (
    ServerConnectedHook,
    ServerConnectErrorHook,
    ServerConnectHook,
    ServerConnectionHookData,
    ServerDisconnectedHook,
)

from ccswitch.mitm.h2_pace import behind, pace_http2_clients
from ccswitch.mitm.wrapped import mitmproxys, wrap

#: (host, port) -> the relay's opener, `(pace) -> (reader, writer)`, while it runs in this process
_relays: dict[tuple[str, int], Callable] = {}


def link_relay(address: tuple[str, int], opener: Callable) -> None:
    _relays[address] = opener


def unlink_relay(address: tuple[str, int]) -> None:
    _relays.pop(address, None)


_original_open_connection = mitmproxys(ConnectionHandler, "open_connection")


async def _open_connection(self: ConnectionHandler, command: commands.OpenConnection) -> None:
    opener = _relays.get(command.connection.address)
    if opener is None or command.connection.transport_protocol != "tcp":
        await _original_open_connection(self, command)
    else:
        await _open_in_memory(self, command, opener)


async def _open_in_memory(handler: ConnectionHandler, command: commands.OpenConnection, opener: Callable) -> None:
    """What mitmproxy's `open_connection` does for a TCP connection, the relay's pipe for its socket."""
    server = command.connection
    hook_data = ServerConnectionHookData(client=handler.client, server=server)
    await handler.handle_hook(ServerConnectHook(hook_data))
    if err := server.error:   # an addon killed it before it opened
        await handler.handle_hook(ServerConnectErrorHook(hook_data))
        await handler.server_event(events.OpenConnectionCompleted(command, f"Connection killed: {err}"))
        return
    server.timestamp_start = time.time()
    try:
        # a connect suspends: mitmproxy records this task as the connection's handler once the
        # task first does, after which the connection's reader and writer may be set (under
        # mitmproxy's eager tasks, a task that never suspended would find its entry replaced)
        await asyncio.sleep(0)
        reader, writer = opener(behind(handler.client, server))   # an HTTP/2 client far behind holds the hop back
    except (OSError, asyncio.CancelledError) as exc:
        # the relay stopped (the proxy is shutting down), or the client left meanwhile: heard
        # as mitmproxy tells of a connect that failed or was cancelled
        server.error = str(exc) or "connection cancelled"
        await handler.handle_hook(ServerConnectErrorHook(hook_data))
        await handler.server_event(events.OpenConnectionCompleted(command, server.error))
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    server.timestamp_tcp_setup = time.time()
    server.state = ConnectionState.OPEN
    server.peername = writer.get_extra_info("peername")
    server.sockname = writer.get_extra_info("sockname")
    handler.transports[server] = ConnectionIO(handler=asyncio.current_task(), reader=reader, writer=writer)
    await handler.handle_hook(ServerConnectedHook(hook_data))
    await handler.server_event(events.OpenConnectionCompleted(command, None))
    try:
        await handler.handle_connection(server)
    finally:
        server.timestamp_end = time.time()
        await handler.handle_hook(ServerDisconnectedHook(hook_data))


def link_relays_in_memory() -> None:
    """Make mitmproxy's connections to a linked relay in memory (once per process)."""
    wrap(ConnectionHandler, "open_connection", _open_connection, _original_open_connection)
    pace_http2_clients()
