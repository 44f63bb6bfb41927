"""The loopback relay on its own: its status line, and how the shutdown ends its jobs; each over a
loopback socket and over the in-memory connection mitmproxy is given (`Relay.link`)."""

import asyncio
import json

import h11
import pytest

from ccswitch.dial.relay import JOB_HEADER, Relay, send_whole
from tests.support.helpers import make_job, rules_for

SSE = [("content-type", "text/event-stream")]


class Exchange:
    """A raw HTTP/1.1 client of the relay (what mitmproxy is to it)."""

    in_memory = False     # set by the `served` fixture: connect through `Relay.link`, not a socket

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.conn = h11.Connection(h11.CLIENT)
        self.response: h11.Response | None = None
        self.body = b""

    async def send(self, token: str) -> "Exchange":
        if self.in_memory:
            self.reader, self.writer = self.relay.link()
        else:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.relay.port)
        self.writer.write(self.conn.send(h11.Request(method="POST", target="/v1/messages", headers=[
            ("host", "relay"), (JOB_HEADER, token), ("content-length", "0")])))
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        return self

    async def read_until(self, wanted) -> None:
        """Read events until `wanted(self)` holds or the answer ends."""
        while not wanted(self):
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await asyncio.wait_for(self.reader.read(65536), 5))
            elif isinstance(event, h11.Response):
                self.response = event
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def read_all(self) -> None:
        await self.read_until(lambda _: False)

    def header(self, name: str) -> str | None:
        return next((v.decode() for k, v in self.response.headers if k == name.encode()), None)


async def soon(condition) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


@pytest.fixture(params=["socket", "in memory"])
async def served(request, monkeypatch):
    """Starts relays: `await served(run_job, recorded)` serves jobs with `run_job` and appends
    each finished job to `recorded`; every relay is stopped after the test."""
    monkeypatch.setattr(Exchange, "in_memory", request.param == "in memory")
    relays = []

    async def make(run_job, recorded):
        relay = Relay(run_job, on_done=recorded.append)
        await relay.start()
        relays.append(relay)
        return relay
    yield make
    for relay in relays:
        await relay.stop()


def new_job():
    return make_job(rules_for(("a", "anthropic", "http://127.0.0.1:9")))


@pytest.mark.parametrize("status,line", [(200, b"200 OK"), (429, b"429 Too Many Requests"), (599, b"599 ")])
async def test_the_status_line_names_the_standard_reason(served, status, line):
    async def answer(job, sink):
        await sink.start(status, SSE, None)
        await sink.end()
    relay = await served(answer, [])
    job = new_job()
    relay.register(job)
    exchange = await Exchange(relay).send(job.token)
    raw = await asyncio.wait_for(exchange.reader.readuntil(b"\r\n"), 5)
    assert raw == b"HTTP/1.1 " + line + b"\r\n"


@pytest.mark.parametrize("again", [False, True])
async def test_a_stream_cut_by_the_shutdown_ends_with_its_error_event_and_is_recorded(served, again):
    async def endless(job, sink):
        job.status = 200
        await sink.start(200, SSE, None)
        await sink.write(b"event: ping\ndata: {}\n\n")
        await asyncio.Event().wait()
    recorded = []
    relay = await served(endless, recorded)
    job = new_job()
    relay.register(job)
    exchange = await Exchange(relay).send(job.token)
    await exchange.read_until(lambda e: b"ping" in e.body)
    relay.shutdown.cutting = True
    if again:      # a second stop ended the grace period early: the row does not say it ran out
        relay.shutdown.cut_reason = "shutdown: ended at once when asked again to stop"
    relay.cut()
    await exchange.read_all()
    assert exchange.response.status_code == 200
    assert exchange.body.startswith(b"event: ping") and exchange.body.endswith(b"\n\n")
    error = exchange.body.split(b"event: error\ndata: ")[1]
    assert "ccswitch is shutting down" in json.loads(error)["error"]["message"]
    await soon(lambda: recorded)
    assert recorded == [job] and (job.status, job.error) == (200, relay.shutdown.cut_reason)
    assert job.error.startswith("shutdown: ended at once" if again else "shutdown: not finished within")


async def test_a_job_cut_before_it_answered_is_a_503_in_its_format(served):
    started = asyncio.Event()

    async def waiting(job, sink):
        started.set()
        await asyncio.Event().wait()
    recorded = []
    relay = await served(waiting, recorded)
    job = new_job()
    relay.register(job)
    exchange = await Exchange(relay).send(job.token)
    await asyncio.wait_for(started.wait(), 5)
    relay.shutdown.cutting = True
    relay.cut()
    await exchange.read_all()
    assert (exchange.response.status_code, exchange.header("retry-after")) == (503, "10")
    assert json.loads(exchange.body)["type"] == "error"
    await soon(lambda: recorded)
    assert recorded == [job] and job.status == 503 and job.latency_ms is not None


def noting(ran: list):
    """A job that only notes it was run (the tests want it not to be)."""
    async def run(job, sink):
        ran.append(job)
    return run


async def test_a_job_that_arrives_once_the_shutdown_is_cutting_is_answered_at_once(served):
    ran, recorded = [], []
    relay = await served(noting(ran), recorded)
    relay.shutdown.cutting = True
    job = new_job()
    relay.register(job)
    exchange = await Exchange(relay).send(job.token)
    await exchange.read_all()
    await soon(lambda: recorded)
    assert exchange.response.status_code == 503 and not ran and recorded == [job]


async def test_stop_closes_idle_keep_alive_connections(served):
    async def answer(job, sink):
        await send_whole(sink, 200, [("content-type", "application/json")], b"{}")
    relay = await served(answer, [])
    job = new_job()
    relay.register(job)
    exchange = await Exchange(relay).send(job.token)
    await exchange.read_all()
    assert exchange.body == b"{}"    # the connection stays open for the next request
    await asyncio.wait_for(relay.stop(), 5)
    assert await asyncio.wait_for(exchange.reader.read(), 5) == b""


async def test_a_streamed_answer_is_chunked_as_h11_reads_it_and_the_connection_serves_the_next(served):
    pieces = [b"event: ping\ndata: {}\n\n", b"x" * 70_000, b"", b"data: [DONE]\n\n"]

    async def streamed(job, sink):
        await sink.start(200, SSE, None)
        for piece in pieces:
            await sink.write(piece)
        await sink.end()
    relay = await served(streamed, [])
    first, second = new_job(), new_job()
    relay.register(first)
    relay.register(second)
    exchange = await Exchange(relay).send(first.token)
    await exchange.read_all()
    assert exchange.header("transfer-encoding") == "chunked" and exchange.body == b"".join(pieces)
    # the same connection, as mitmproxy keeps it: h11 on both ends agrees the first answer ended
    exchange.conn.start_next_cycle()
    exchange.response, exchange.body = None, b""
    exchange.writer.write(exchange.conn.send(h11.Request(method="POST", target="/v1/messages", headers=[
        ("host", "relay"), (JOB_HEADER, second.token), ("content-length", "0")])))
    exchange.writer.write(exchange.conn.send(h11.EndOfMessage()))
    await exchange.read_all()
    assert exchange.response.status_code == 200 and exchange.body == b"".join(pieces)


def endless_stream(cancelled: asyncio.Event):
    """A job that starts a stream and waits for ever; once cancelled it ends as the dialer does."""
    async def run(job, sink):
        await sink.start(200, SSE, None)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            job.client_left()
            raise
    return run


async def test_the_proxy_dropping_the_connection_cancels_the_job_at_once_and_records_it(served):
    cancelled = asyncio.Event()
    recorded = []
    relay = await served(endless_stream(cancelled), recorded)
    job = new_job()
    relay.register(job)
    exchange = await Exchange(relay).send(job.token)
    await exchange.read_until(lambda e: e.response is not None)
    exchange.writer.close()
    await asyncio.wait_for(cancelled.wait(), 5)
    await soon(lambda: recorded and relay.running == 0)
    assert recorded == [job] and job.error == "client_closed"


async def test_an_unknown_job_is_refused_and_the_connection_serves_the_next(served):
    async def answer(job, sink):
        await send_whole(sink, 200, [("content-type", "application/json")], b"{}")
    relay = await served(answer, [])
    exchange = await Exchange(relay).send("no-such-token")
    await exchange.read_all()
    assert exchange.response.status_code == 403 and b"unknown or expired" in exchange.body
    job = new_job()
    relay.register(job)
    exchange.conn.start_next_cycle()
    exchange.response, exchange.body = None, b""
    exchange.writer.write(exchange.conn.send(h11.Request(method="POST", target="/v1/messages", headers=[
        ("host", "relay"), (JOB_HEADER, job.token), ("content-length", "0")])))
    exchange.writer.write(exchange.conn.send(h11.EndOfMessage()))
    await exchange.read_all()
    assert (exchange.response.status_code, exchange.body) == (200, b"{}")


async def test_a_client_that_leaves_once_it_has_the_last_event_ended_nothing(served):
    # Codex resets its HTTP/2 stream as soon as it has `response.completed`, while the upstream's
    # body end is still on its way: that turn was served, and is no `client_closed`
    from ccswitch.dial.dialer import Dialer
    from ccswitch.routing.health import HealthBoard
    from tests.support.loopback_guard import loopback_url
    from tests.unit.dial.test_stream_tail import ANTHROPIC

    async def upstream(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        body = b"".join(ANTHROPIC)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"%x\r\n%s\r\n" % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.5)          # the body's end comes a moment after the last event
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    health = HealthBoard()
    dialer = Dialer(health, allow_url=loopback_url)
    recorded = []
    try:
        relay = await served(dialer.run, recorded)
        job = make_job(rules_for(("a", "anthropic", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")))
        relay.register(job)
        exchange = await Exchange(relay).send(job.token)
        await exchange.read_until(lambda e: b"message_stop" in e.body)
        exchange.writer.close()
        await soon(lambda: recorded and relay.running == 0)
    finally:
        await dialer.aclose()
        server.close()
    assert recorded == [job] and job.error is None and job.status == 200
    assert [a.error for a in job.attempts] == [None] and health.get("a").failures == 0


async def test_a_job_being_served_is_cancelled_on_request_and_recorded_as_killed(served):
    cancelled = asyncio.Event()
    recorded = []
    relay = await served(endless_stream(cancelled), recorded)
    job, waiting = new_job(), new_job()
    relay.register(job)
    relay.register(waiting)
    exchange = await Exchange(relay).send(job.token)
    await exchange.read_until(lambda e: e.response is not None)
    assert not relay.cancel(waiting)      # not at the relay yet: nothing to stop there
    job.killed = True                     # as the router marks a flow killed in mitmproxy
    assert relay.cancel(job)
    await asyncio.wait_for(cancelled.wait(), 5)
    await soon(lambda: recorded and relay.running == 0)
    assert recorded == [job] and job.error == "killed" and not relay.cancel(job)


async def test_a_job_killed_on_its_way_to_the_relay_is_not_run_and_is_recorded_as_killed(served):
    ran, recorded = [], []
    relay = await served(noting(ran), recorded)
    job = new_job()
    relay.register(job)
    job.killed = True          # killed in mitmproxy after the request hook, before the relay had it
    exchange = await Exchange(relay).send(job.token)
    with pytest.raises(h11.RemoteProtocolError):      # closed with no answer: mitmproxy ends the flow
        await exchange.read_all()
    await soon(lambda: recorded)
    assert ran == [] and recorded == [job] and job.error == "killed" and exchange.response is None
