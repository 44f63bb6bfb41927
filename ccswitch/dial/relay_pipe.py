"""A connection to the relay made in memory: no socket pair, no system call per piece.

mitmproxy reads a relay connection as it reads any server: an `asyncio.StreamReader` and a
writer with the few methods of `asyncio.StreamWriter` it calls.  The relay's protocol sees a
transport.  What one end writes the other receives, in order, as it would over loopback TCP:
the relay's pieces go straight into mitmproxy's reader (a loopback socket would cost a send, a
wake of the selector and a receive for each event of a stream); mitmproxy's request head
reaches the relay one loop turn later, as a socket's would (mitmproxy writes from inside its
layer, and the relay starts a job on what it reads).  Back-pressure holds too: once mitmproxy's
reader holds more than `BUFFER_LIMIT` twice over (its client reads slowly), the relay is told to
pause writing, and to resume once it has read most of it.  Where mitmproxy itself keeps what
its client does not take yet without reading slower (an HTTP/2 client's flow-control window),
`pace` says when to hold mitmproxy's reads back: the reader then fills, and the relay pauses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: mitmproxy reads 64 KiB at a time; the relay is paused beyond twice this (a socket's buffers
#: and its transport's high-water mark hold about as much)
BUFFER_LIMIT = 64 * 1024
#: how often a read held back by `pace` looks again (only while its client is that far behind)
PACE_POLL = 0.01


class RelayPipe:
    """Both ends of one in-memory connection between mitmproxy and a relay protocol."""

    __slots__ = ("_closed", "_flow", "_loop", "_protocol", "_relay_reads", "proxy_end", "reader", "relay_end")

    def __init__(self, protocol: asyncio.Protocol, peername: tuple[str, int],
                 pace: Callable[[], bool] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._protocol = protocol
        self._closed = False        # by either end: nothing more is written
        self._relay_reads = True    # until the relay closed its end or lost the connection
        self.reader: asyncio.StreamReader | None = (
            asyncio.StreamReader(limit=BUFFER_LIMIT, loop=self._loop) if pace is None
            else PacedReader(pace, limit=BUFFER_LIMIT, loop=self._loop))
        self._flow = _ReadFlow(protocol)
        self.reader.set_transport(self._flow)
        self.relay_end = RelayEnd(self)
        self.proxy_end = ProxyEnd(self, peername)
        protocol.connection_made(self.relay_end)

    @property
    def closed(self) -> bool:
        return self._closed

    def to_proxy(self, data: bytes) -> None:
        if not self._closed:
            self.reader.feed_data(data)

    def to_relay(self, data: bytes) -> None:
        if not self._closed:
            self._loop.call_soon(self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        if self._relay_reads:     # what mitmproxy wrote before it closed still arrives, as on a socket
            self._protocol.data_received(data)

    def proxy_eof(self) -> None:
        """mitmproxy half-closed its end: the relay sees an end of file."""
        if not self._closed:
            self._loop.call_soon(self._eof)

    def _eof(self) -> None:
        if self._relay_reads and not self._protocol.eof_received():
            self.relay_closed()     # as a transport does when its protocol does not keep a half-open connection

    def close(self) -> None:
        """mitmproxy closed its end: mitmproxy reads to the end of what it had, the relay gets
        what was written before, then loses its connection."""
        if self._closed:
            return
        self._closed = True
        self.reader.feed_eof()
        self._loop.call_soon(self._lose)

    def relay_closed(self) -> None:
        """The relay closed its end: as a transport, it reads nothing more."""
        self._relay_reads = False
        self.close()

    def _lose(self) -> None:
        self._relay_reads = False
        protocol, self._protocol = self._protocol, None
        protocol.connection_lost(None)
        # the pipe, its reader and the relay's protocol point at each other: let them go (and
        # what mitmproxy's reader holds unread) as soon as mitmproxy lets go of its ends, not at
        # the next full collection
        self._flow.protocol = None
        self.reader = None


class PacedReader(asyncio.StreamReader):
    """mitmproxy's reader of a hop whose client is behind: no read while `behind()` says so."""

    def __init__(self, behind: Callable[[], bool], **kwargs) -> None:
        super().__init__(**kwargs)
        self._behind = behind
        self._ended = False

    def feed_eof(self) -> None:
        self._ended = True
        super().feed_eof()

    async def read(self, n: int = -1) -> bytes:
        # once the relay's end is in there is nothing upstream to hold back, and mitmproxy must
        # read to it to end the client's stream (a killed one's reset) and the hop
        while not self._ended and self._behind():
            await asyncio.sleep(PACE_POLL)
        return await super().read(n)


class _ReadFlow:
    """What mitmproxy's reader pauses and resumes (a socket's transport, for a socket's reader):
    here the relay's writing, until the relay lost the connection."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.protocol: asyncio.Protocol | None = protocol

    def pause_reading(self) -> None:
        if self.protocol is not None:
            self.protocol.pause_writing()

    def resume_reading(self) -> None:
        if self.protocol is not None:
            self.protocol.resume_writing()


class RelayEnd(asyncio.Transport):
    """The relay protocol's transport."""

    __slots__ = ("_pipe",)

    def __init__(self, pipe: RelayPipe) -> None:
        super().__init__()
        self._pipe = pipe

    def write(self, data: bytes) -> None:
        if data:
            self._pipe.to_proxy(bytes(data))

    def is_closing(self) -> bool:
        return self._pipe.closed

    def close(self) -> None:
        self._pipe.relay_closed()

    def abort(self) -> None:
        self._pipe.relay_closed()

    def get_extra_info(self, name, default=None):
        return default


class ProxyEnd:
    """mitmproxy's writer: the methods of `asyncio.StreamWriter` its connection handler calls."""

    __slots__ = ("_peername", "_pipe")

    def __init__(self, pipe: RelayPipe, peername: tuple[str, int]) -> None:
        self._pipe = pipe
        self._peername = peername

    def write(self, data: bytes) -> None:
        if data:
            self._pipe.to_relay(bytes(data))

    def write_eof(self) -> None:
        self._pipe.proxy_eof()

    def is_closing(self) -> bool:
        return self._pipe.closed

    def close(self) -> None:
        self._pipe.close()

    async def drain(self) -> None:
        """Nothing to wait for: mitmproxy writes only request heads (the job holds the body)."""

    def get_extra_info(self, name, default=None):
        if name == "peername":
            return self._peername
        if name == "sockname":
            return (self._peername[0], 0)
        return default
