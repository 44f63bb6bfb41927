"""How a flow ends that no hook tells an addon of: killed in mitmproxy (mitmweb's kill button,
`flow.kill`) or left by its client, and the watches that notice it for ccswitch's requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.flow import Error


def killed(flow: http.HTTPFlow) -> bool:
    """Someone killed the flow in mitmproxy (mitmweb's kill button, `flow.kill`)."""
    return flow.error is not None and flow.error.msg == Error.KILLED_MESSAGE


def client_gone(flow: http.HTTPFlow) -> bool:
    """The flow's client has left.  A replay has no client of its own: its client_conn is the
    replayed flow's, long gone."""
    return flow.client_conn.timestamp_end is not None and not flow.is_replay


#: how mitmproxy's errors begin when the client left: its HTTP/1 connection closed, or an HTTP/2
#: client cancelled the one request (its stream reset, its connection kept)
_CLIENT_LEFT = ("client disconnected", "stream reset by client")


def client_left(flow: http.HTTPFlow) -> bool:
    """The client has left: gone already, or the flow's error says so (mitmproxy runs the error
    hook before it marks the client's connection closed)."""
    return client_gone(flow) or (flow.error is not None and flow.error.msg.lower().startswith(_CLIENT_LEFT))


def answer_reaches_client(flow: http.HTTPFlow) -> bool:
    """An answer mitmproxy writes now reaches the client: no error ended the flow, and the
    client's connection is still open for writing (a replay's answer goes to mitmproxy itself)."""
    return flow.error is None and (flow.is_replay is not None or bool(flow.client_conn.state & ConnectionState.CAN_WRITE))


def gone_meanwhile(flow: http.HTTPFlow) -> bool:
    """While a request hook waited (for the start, the spend, the user): killed, or its client left."""
    return flow.error is not None or not flow.live or client_gone(flow)


def goes_nowhere(flow: http.HTTPFlow) -> None:
    """A flow the router leaves because its client left is killed, not left to mitmproxy, which
    would send it on as it came (the client's key and all) unless it has seen the client go."""
    if flow.killable and flow.error is None and not flow.response and client_gone(flow):
        flow.kill()


class ClientWatch:
    """Cancels `task` once the flow's client has gone or the flow was killed, checked every
    `every` seconds (mitmproxy cancels no hook for either); `fired` tells that cancellation from
    others; `on_kill` is called before a kill's cancellation."""

    def __init__(self, flow: http.HTTPFlow, task: asyncio.Task, every: float = 0.1,
                 on_kill: Callable[[], None] | None = None) -> None:
        self.flow, self.task, self.every, self.on_kill = flow, task, every, on_kill
        self.fired = False
        self._timer = asyncio.get_running_loop().call_later(every, self._check)

    def _check(self) -> None:
        if killed(self.flow):
            if self.on_kill is not None:
                self.on_kill()      # before the cancellation: the attempt it cuts is labelled by it
        elif not client_gone(self.flow):
            self._timer = asyncio.get_running_loop().call_later(self.every, self._check)
            return
        self.fired = True
        self.task.cancel()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class KilledStreams:
    """Finds the streams whose flow someone killed in mitmproxy: a flow killed in transit stays
    open to its end (mitmproxy's kill acts at its next hook, and mitmweb's tells no addon), so
    the open ones are looked at every `every` seconds and `on_killed` stops each one found."""

    def __init__(self, on_killed: Callable[[http.HTTPFlow], None], every: float = 0.25) -> None:
        self.on_killed, self.every = on_killed, every
        self.flows: dict[str, http.HTTPFlow] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, flow: http.HTTPFlow) -> None:
        self.flows[flow.id] = flow
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.every, self._look)

    def discard(self, flow_id: str) -> None:
        self.flows.pop(flow_id, None)

    def _look(self) -> None:
        self._timer = None
        for flow in [flow for flow in self.flows.values() if killed(flow)]:
            del self.flows[flow.id]
            self.on_killed(flow)
        if self.flows:
            self._timer = asyncio.get_running_loop().call_later(self.every, self._look)
