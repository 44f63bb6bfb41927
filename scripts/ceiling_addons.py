"""The least addons of three designs, for scripts/bench_ceiling.py: what any addon built that way
can reach, with none of ccswitch's work (no rules, no parsing, no ledger).

    mitmdump -s scripts/ceiling_addons.py --set ceiling_design=forward --set ceiling_upstream=PORT ...

`answer`: every request answered from the request hook with a fixed body, no upstream at all:
    the floor for any answer an addon gives from its request hook (mitmproxy then runs the
    responseheaders and response hooks, each with its update pass, before it writes a byte).
`forward`: the request sent from the request hook over the addon's own kept-alive sockets (a
    bare pool, raw bytes, Content-Length only) and its answer set on the flow: ccswitch's design
    for non-streamed requests (its own dialer, so a refused connect can fail over).
`relay`: the request hook starts that exchange as a task and points the flow at a loopback
    server in the addon, which writes the task's answer back; the answer streams through
    mitmproxy (its response hook runs after the client has the body), and mitmproxy's pass
    after the request hook and its hop to the relay overlap the upstream's time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from mitmproxy import ctx, exceptions, http

log = logging.getLogger(__name__)
DESIGNS = ("answer", "forward", "relay")
_HOP_BY_HOP = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})
_JOB = "x-ceiling-job"


async def exchange(pool: list, port: int, path: str, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One POST over a pooled socket to 127.0.0.1:`port`: (status, headers, body)."""
    reader, writer = pool.pop() if pool else await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
    lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in lines[1:] if line]
    length = next(int(value) for name, value in headers if name.lower() == b"content-length")
    content = await reader.readexactly(length)
    pool.append((reader, writer))
    return int(lines[0].split()[1]), [h for h in headers if h[0].lower() not in _HOP_BY_HOP], content


class _RelayConnection(asyncio.Protocol):
    """mitmproxy's connection to the relay: each request names its job; the job's answer is written whole."""

    def __init__(self, jobs: dict[str, asyncio.Task]) -> None:
        self.jobs, self.buffer, self.transport = jobs, b"", None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            fields = {name.lower(): value for name, value in (line.split(": ", 1) for line in head[1:])}
            length = int(fields.get("content-length", 0))
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.jobs.pop(fields[_JOB]).add_done_callback(self._answer)

    def _answer(self, job: asyncio.Task) -> None:
        status, headers, body = job.result()
        head = b"".join(b"%s: %s\r\n" % field for field in headers)
        self.transport.write(b"HTTP/1.1 %d OK\r\n%scontent-length: %d\r\n\r\n%s" % (status, head, len(body), body))


class Ceiling:
    def __init__(self) -> None:
        self.pool: list = []
        self.jobs: dict[str, asyncio.Task] = {}
        self.ids = itertools.count()
        self.relay_port = 0

    def load(self, loader) -> None:
        loader.add_option("ceiling_design", str, "forward", f"One of {', '.join(DESIGNS)}.")
        loader.add_option("ceiling_upstream", int, 0, "The mock upstream's port on 127.0.0.1.")

    def configure(self, updated) -> None:
        if ctx.options.ceiling_design not in DESIGNS:
            raise exceptions.OptionsError(f"ceiling_design must be one of {', '.join(DESIGNS)}")

    async def running(self) -> None:
        server = await asyncio.get_running_loop().create_server(lambda: _RelayConnection(self.jobs), "127.0.0.1", 0)
        self.relay_port = server.sockets[0].getsockname()[1]

    async def request(self, flow: http.HTTPFlow) -> None:
        design, port = ctx.options.ceiling_design, ctx.options.ceiling_upstream
        if design == "answer":
            flow.response = http.Response.make(200, b'{"type":"message"}', {"content-type": "application/json"})
        elif design == "forward":
            status, headers, body = await exchange(self.pool, port, flow.request.path, flow.request.raw_content)
            flow.response = http.Response.make(status, body, headers)
        elif not self.relay_port:      # a request before `running` has opened the relay
            flow.response = http.Response.make(503, b"relay not yet listening")
        else:
            token = str(next(self.ids))
            self.jobs[token] = asyncio.ensure_future(exchange(self.pool, port, flow.request.path,
                                                              flow.request.raw_content))
            flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", self.relay_port
            flow.request.headers[_JOB] = token
            flow.request.content = b""

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if ctx.options.ceiling_design == "relay":
            flow.response.stream = True


addons = [Ceiling()]
