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
from http import HTTPStatus

import h11

from ccswitch.dial.job import CLIENT_CLOSED, Job
from ccswitch.dial.shutdown import RETRY_AFTER, SHUTTING_DOWN, Shutdown
from ccswitch.wire.headers import to_wire
from ccswitch.wire.protocols import own_error, stream_error_event

log = logging.getLogger("ccswitch.relay")

JOB_HEADER = "x-ccswitch-job"
_READ = 64 * 1024


class ClientGone(ConnectionError):
    pass


class H11Sink:
    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        self.conn, self.writer = conn, writer
        self.started = False
        self.broken = False
        self._chunked = False   # the body goes out in chunks framed here, not by h11

    async def _send(self, event) -> None:
        await self._write(self.conn.send(event))

    async def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ClientGone("the proxy closed the relay connection")
        self.writer.write(data)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ClientGone(str(exc)) from exc

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
            await _shutdown_error(job, sink)
            return
        await run_job(job, sink)
    except ClientGone:
        raise
    except asyncio.CancelledError:
        if shutdown is None or not shutdown.cutting:
            raise
        await _shutdown_error(job, sink)
    except Exception as exc:
        await _internal_error(job, sink, exc)


async def _internal_error(job: Job, sink, exc: BaseException) -> None:
    log.error("ccswitch: request %s failed inside the gateway: %r", job.flow_id, exc, exc_info=exc)
    job.error = f"internal error: {type(exc).__name__}"
    await _end_with_error(job, sink, 500, f"ccswitch internal error: {type(exc).__name__}")


async def _shutdown_error(job: Job, sink) -> None:
    job.error = "shutdown: not finished within the grace period"
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
        else:
            await sink.write(stream_error_event(job.request.client_protocol, message))
            await sink.end()
    except (ClientGone, h11.LocalProtocolError):
        sink.broken = True


class Relay:
    def __init__(self, run_job, on_done=None, shutdown: Shutdown | None = None) -> None:
        self._run_job = run_job          # async (job, sink) -> None
        self._on_done = on_done          # (job) -> None, once per job the relay ran
        self.shutdown = shutdown or Shutdown()
        self._jobs: dict[str, Job] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        log.debug("relay listening on 127.0.0.1:%d", self.port)

    @property
    def running(self) -> int:
        """Jobs being served now."""
        return len(self._tasks)

    def cut(self) -> None:
        """Cancel the jobs being served; with the shutdown cutting, each ends in its protocol."""
        for task in list(self._tasks):
            task.cancel()

    async def stop(self) -> None:
        """Stop listening, cut the jobs still served (each leaves its usage row), close the connections."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.shutdown.cutting = True
        self.cut()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # idle keep-alive connections too: a connection task still open when the event loop
        # stops is cancelled, and Python 3.12.1 logs that as an exception
        for writer in list(self._connections.values()):
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def register(self, job: Job) -> None:
        self._jobs[job.token] = job

    def forget(self, job: Job) -> bool:
        """Drop a job; True if it was still waiting (never reached the relay)."""
        return self._jobs.pop(job.token, None) is not None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1024 * 1024)
        leftover = b""
        me = asyncio.current_task()
        self._connections[me] = writer
        try:
            while True:
                request = await self._read_request(conn, reader, leftover)
                if request is None:
                    return
                leftover = await self._answer(conn, reader, writer, request)
                if leftover is None or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError, OSError) as exc:
            log.debug("relay connection ended: %s", exc)
        finally:
            self._connections.pop(me, None)
            writer.close()

    @staticmethod
    async def _read_request(conn: h11.Connection, reader, leftover: bytes) -> h11.Request | None:
        if leftover:
            conn.receive_data(leftover)
        request = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(_READ)
                conn.receive_data(data)
                if not data and request is None:
                    return None
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(self, conn, reader, writer, request: h11.Request) -> bytes | None:
        """Run the job; returns bytes read ahead of the next request, None to close."""
        token = next((v.decode() for k, v in request.headers if k == JOB_HEADER.encode()), "")
        job = self._jobs.pop(token, None)
        sink = H11Sink(conn, writer)
        if job is None:
            await send_whole(sink, 403, [("content-type", "application/json")],
                             b'{"error":"unknown or expired ccswitch job"}')
            return b""
        return await self._run(job, reader, sink)

    async def _job(self, job: Job, sink: H11Sink) -> None:
        """One job, start to usage row: the row is reported however the job ends."""
        try:
            await run_guarded(self._run_job, job, sink, self.shutdown)
        except ClientGone:
            job.client_left()
            sink.broken = True
        finally:
            if self._on_done is not None:
                self._on_done(job)

    async def _run(self, job: Job, reader, sink: H11Sink) -> bytes | None:
        task = start_now(self._job(job, sink))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        ahead = b""   # bytes mitmproxy sent early (it does not pipeline, but be safe)
        try:
            while not task.done():
                watcher = asyncio.ensure_future(reader.read(_READ))
                await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    if not watcher.done():
                        watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)   # let the read really end
                    if not watcher.cancelled() and not watcher.exception():
                        if watcher.result() == b"":
                            return None
                        ahead += watcher.result()
                    break
                data = None if watcher.exception() else watcher.result()
                if not data:          # EOF or reset: the client is gone, stop the upstream request now
                    task.cancel()
                    job.client_left()
                    await asyncio.gather(task, return_exceptions=True)
                    return None
                ahead += data
        finally:
            if not task.done():
                task.cancel()
        return None if sink.broken or task.cancelled() else ahead
