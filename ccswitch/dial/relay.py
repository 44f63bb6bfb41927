"""A small HTTP/1.1 server on loopback that mitmproxy sends routed flows to.

mitmproxy can only stream a response body that comes from a server connection,
so the request hook points each routed flow here, tagged with a one-time job
token; this server hands the job to the dialer and writes back whatever the
dialer streams.  When mitmproxy drops the connection (the client went away) the
dialer's task is cancelled at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus

import h11

from ccswitch.dial.job import CLIENT_CLOSED, Job
from ccswitch.dial.relay_pipe import ProxyEnd, RelayPipe
from ccswitch.dial.shutdown import RETRY_AFTER, SHUTTING_DOWN, Serving, Shutdown
from ccswitch.wire.headers import to_wire
from ccswitch.wire.protocols import own_error, stream_error_event

log = logging.getLogger("ccswitch.relay")

JOB_HEADER = "x-ccswitch-job"


class ClientGone(ConnectionError):
    pass


class H11Sink:
    """The answer to one relay request, written on its connection."""

    __slots__ = ("_chunked", "broken", "conn", "connection", "started")

    def __init__(self, connection: RelayConnection) -> None:
        self.connection, self.conn = connection, connection.h11
        self.started = False
        self.broken = False
        self._chunked = False   # the body goes out in chunks framed here, not by h11

    async def _send(self, event) -> None:
        await self.connection.write(self.conn.send(event))

    async def _write(self, data: bytes) -> None:
        await self.connection.write(data)

    async def start(self, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        head = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")]
        if length is not None:
            head.append(("content-length", str(length)))
        else:
            head.append(("transfer-encoding", "chunked"))
        self.started = True
        await self._send(h11.Response(status_code=status, headers=to_wire(head), reason=reason_phrase(status)))
        # the framing h11 itself chose for an HTTP/1.1 peer (mitmproxy; only POSTs are routed)
        self._chunked = length is None and self.conn.their_http_version == b"1.1" and status not in (204, 304)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._chunked:
            # the bytes h11 would write, without its per-event bookkeeping: a stream's every
            # piece passes here; h11 still writes the head and the last chunk, so its state holds
            await self._write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase (clients and logs show "HTTP/1.1 200 OK", not "200 ")."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class BufferSink:
    """Collects a whole response (for requests answered without the relay)."""

    started = False      # nothing reaches the client before the end: a later start replaces all
    broken = False

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []

    async def start(self, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        self.status = status
        self.headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")]
        self.chunks = []

    async def write(self, data: bytes) -> None:
        self.chunks.append(data)

    async def end(self) -> None:
        pass

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


async def send_whole(sink, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    """A whole response in one go."""
    await sink.start(status, headers, len(body))
    if body:
        await sink.write(body)
    await sink.end()


def start_now(coro) -> asyncio.Task:
    """A task that is already inside `coro` (started eagerly, as under mitmproxy): a cancellation
    always lands inside its try blocks, so a job cut by the shutdown still answers and is recorded."""
    return asyncio.eager_task_factory(asyncio.get_running_loop(), coro)


async def run_guarded(run_job, job: Job, sink, shutdown: Shutdown | None = None) -> None:
    """Run a job; a bug of ours ends in an error in the client's format, never a silent cut,
    and so does a job that the shutdown cuts (or that arrives once it is cutting)."""
    try:
        if shutdown is not None and shutdown.cutting:   # it arrived after the grace period
            await _shutdown_error(job, sink, shutdown.cut_reason)
            return
        await run_job(job, sink)
    except ClientGone:
        raise
    except asyncio.CancelledError:
        if shutdown is None or not shutdown.cutting:
            raise
        await _shutdown_error(job, sink, shutdown.cut_reason)
    except Exception as exc:
        await _internal_error(job, sink, exc)


async def _internal_error(job: Job, sink, exc: BaseException) -> None:
    log.error("ccswitch: request %s failed inside the gateway: %r", job.flow_id, exc, exc_info=exc)
    job.error = f"internal error: {type(exc).__name__}"
    await _end_with_error(job, sink, 500, f"ccswitch internal error: {type(exc).__name__}")


async def _shutdown_error(job: Job, sink, reason: str) -> None:
    job.error = reason
    if job.attempts and job.attempts[-1].error == CLIENT_CLOSED:
        job.attempts[-1].error = "shutdown"   # the dialer takes every cancellation for a client gone
    await _end_with_error(job, sink, 503, f"{SHUTTING_DOWN}; the request did not finish in time",
                          (("retry-after", RETRY_AFTER),))
    job.latency_ms = job.elapsed_ms()


async def _end_with_error(job: Job, sink, status: int, message: str,
                          headers: tuple[tuple[str, str], ...] = ()) -> None:
    """An error answer in the client's protocol, or the stream's error event once it started."""
    try:
        if not sink.started:
            job.status = status
            await send_whole(sink, status, *own_error(job.request.client_protocol, status, message, headers))
        else:   # the stream's own response fails, numbered after its events (a Responses stream)
            last = job.attempts[-1] if job.attempts else None
            await sink.write(stream_error_event(job.request.client_protocol, message, status,
                                                last.events if last else 0, last.response_id if last else None))
            await sink.end()
    except (ClientGone, h11.LocalProtocolError):
        sink.broken = True


class Relay(Serving):
    def __init__(self, run_job, on_done=None, shutdown: Shutdown | None = None) -> None:
        super().__init__()
        self._run_job = run_job          # async (job, sink) -> None
        self._on_done = on_done          # (job) -> None, once per job the relay ran
        self.shutdown = shutdown or Shutdown()
        self._jobs: dict[str, Job] = {}
        self._served: dict[str, asyncio.Task] = {}   # token -> the task serving it, while it runs
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[RelayConnection] = set()
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: RelayConnection(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        log.debug("relay listening on 127.0.0.1:%d", self.port)

    async def stop(self) -> None:
        """Stop listening, cut the jobs still served (each leaves its usage row), close the connections."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.shutdown.cutting = True
        self.cut()
        await asyncio.gather(*self._serving, return_exceptions=True)
        for connection in list(self._connections):   # idle keep-alive connections too
            connection.transport.close()
        await asyncio.sleep(0)    # their connection_lost

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def link(self, pace: Callable[[], bool] | None = None) -> tuple[asyncio.StreamReader, ProxyEnd]:
        """A connection from mitmproxy made in memory (`relay_pipe`): its reader and its writer;
        `pace`: whether mitmproxy's client is too far behind for mitmproxy to read on."""
        if self._server is None:
            raise ConnectionRefusedError(f"ccswitch's relay on 127.0.0.1:{self.port} is not listening")
        pipe = RelayPipe(RelayConnection(self), self.address, pace)
        return pipe.reader, pipe.proxy_end

    def register(self, job: Job) -> None:
        self._jobs[job.token] = job

    def forget(self, job: Job) -> bool:
        """Drop a job; True if it was still waiting (never reached the relay)."""
        return self._jobs.pop(job.token, None) is not None

    def serve(self, request: h11.Request, sink: H11Sink) -> tuple[asyncio.Task, Job | None]:
        """The task answering one request (its job's, or a 403 for an unknown token) and the job."""
        token = next((v.decode() for k, v in request.headers if k == _JOB_HEADER), "")
        job = self._jobs.pop(token, None)
        if job is None:
            return start_now(_refuse(sink)), None
        task = start_now(self._job(job, sink))
        self._track(task)
        self._served[job.token] = task
        task.add_done_callback(lambda _: self._served.pop(job.token, None))
        return task, job

    def cancel(self, job: Job) -> bool:
        """Stop a job being served now (its flow was killed): True if one was."""
        task = self._served.get(job.token)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def _job(self, job: Job, sink: H11Sink) -> None:
        """One job, start to usage row: the row is reported however the job ends."""
        try:
            if job.killed:      # killed in mitmproxy on its way here (mitmproxy stops no flow in transit)
                job.client_left()
                sink.broken = True      # no answer: the connection ends, and mitmproxy ends the flow
                return
            await run_guarded(self._run_job, job, sink, self.shutdown)
        except ClientGone:
            job.client_left()
            sink.broken = True
        finally:
            if self._on_done is not None:
                self._on_done(job)


_JOB_HEADER = JOB_HEADER.encode()


async def _refuse(sink: H11Sink) -> None:
    try:
        await send_whole(sink, 403, [("content-type", "application/json")],
                         b'{"error":"unknown or expired ccswitch job"}')
    except ClientGone:
        sink.broken = True


class RelayConnection(asyncio.Protocol):
    """One connection from mitmproxy: h11 reads its requests as their bytes arrive, each is
    answered by a task of its own, and the connection's end cancels that task at once (the
    client went away).  A protocol, not asyncio streams: an open stream costs no reader, no
    writer, no serving task and no task watching for the next read."""

    __slots__ = ("_drained", "_job", "_lost", "_paused", "_request", "_sink", "_task", "h11", "relay", "transport")

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=1024 * 1024)
        self.transport: asyncio.Transport | None = None
        self._request: h11.Request | None = None
        self._task: asyncio.Task | None = None     # the request being answered
        self._job: Job | None = None
        self._sink: H11Sink | None = None
        self._lost = False
        self._paused = False
        self._drained: asyncio.Future | None = None

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.relay._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        if self._task is None:      # else: mitmproxy's next request waits in h11 (it does not pipeline)
            self._next_request()

    def eof_received(self) -> bool:
        self._gone()
        return False                # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._gone()
        self.relay._connections.discard(self)
        self._sink = None       # it points back here: both go with the job's task, not at a full collection
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # ---------------------------------------------------------------- used by the sink

    async def write(self, data: bytes) -> None:
        if self._lost or self.transport.is_closing():
            raise ClientGone("the proxy closed the relay connection")
        self.transport.write(data)
        if self._paused:            # mitmproxy reads slower than the upstream sends: wait for it
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
            if self._lost:
                raise ClientGone("the proxy closed the relay connection")

    # ---------------------------------------------------------------- requests

    def _next_request(self) -> None:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                log.debug("relay connection ended: %s", exc)
                self.transport.close()
                return
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Request):
                self._request = event
            elif isinstance(event, h11.EndOfMessage):   # (the router sends none: the job has the body)
                self._sink = H11Sink(self)
                request, self._request = self._request, None   # its headers are not kept for the stream's life
                self._task, self._job = self.relay.serve(request, self._sink)
                self._task.add_done_callback(self._answered)
                return
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return

    def _answered(self, task: asyncio.Task) -> None:
        self._task = self._job = None
        if self._lost:
            return
        h = self.h11
        if self._sink.broken or task.cancelled() or h.our_state is not h11.DONE or h.their_state is not h11.DONE:
            self.transport.close()
            return
        h.start_next_cycle()
        self._next_request()        # bytes mitmproxy sent meanwhile

    def _gone(self) -> None:
        """EOF or reset from mitmproxy while answering: the client is gone, stop the upstream request now."""
        if self._job is not None and self._job.delivered:
            return      # it ends on its own in a moment, its upstream connection back in the pool
        if self._task is not None and not self._task.done():
            self._task.cancel()
            if self._job is not None:
                self._job.client_left()
