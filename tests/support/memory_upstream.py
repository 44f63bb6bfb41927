"""An upstream without sockets: handed to `UpstreamClient(connect=...)`, it answers each
request written to its in-memory transport with one canned HTTP/1.1 response."""

from __future__ import annotations

import asyncio


class MemoryTransport(asyncio.Transport):
    def __init__(self, protocol: asyncio.Protocol, reply: bytes) -> None:
        super().__init__()
        self.protocol, self.reply = protocol, reply
        self.sent = bytearray()
        self.closed = False
        self.replied = False

    def write(self, data: bytes) -> None:
        self.sent += data
        if not self.replied and self._request_complete():
            self.replied = True
            asyncio.get_running_loop().call_soon(self.protocol.data_received, self.reply)

    def _request_complete(self) -> bool:
        head, sep, body = bytes(self.sent).partition(b"\r\n\r\n")
        if not sep:
            return False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return len(body) >= int(value)
        return True

    def get_write_buffer_size(self) -> int:
        return 0      # every write is taken at once

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return default


class MemoryUpstream:
    """`connect` for UpstreamClient: records every host it was asked for and each transport."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.dialed: list[tuple[str, int]] = []
        self.transports: list[MemoryTransport] = []

    async def __call__(self, protocol_factory, host: str, port: int, context):
        self.dialed.append((host, port))
        protocol = protocol_factory()
        transport = MemoryTransport(protocol, self.reply)
        self.transports.append(transport)
        protocol.connection_made(transport)
        return transport, protocol
