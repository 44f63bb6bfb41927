"""A loopback server for the answers ccswitch gives from a request's head alone.

mitmproxy reads a whole request body into memory before the request hook, however large it
says it is, and an addon that answers from an earlier hook cannot stop it.  A request that
will be refused whatever its body holds (no valid client key, a body over the limit) is
pointed here instead with its body discarded as it comes (`flow.request.stream`): this server
answers from the head at once, and takes the rest of the connection, which mitmproxy sends
nothing on, until mitmproxy closes it at the upload's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

log = logging.getLogger("ccswitch.early")

EARLY_HEADER = "x-ccswitch-early"
#: a head refused for its size (431 past 64 KiB) still reaches this server whole
_MAX_HEAD = 1024 * 1024
#: how long a refused upload may go on, discarded, before its connection is closed
DRAIN_FOR = 900.0
_UNKNOWN = (b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 34\r\n"
            b"connection: close\r\n\r\nunknown or expired ccswitch ticket")


def http_answer(status: int, reason: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """An HTTP/1.1 answer that ends its connection."""
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"transfer-encoding", b"connection")]
    lines = [b"HTTP/1.1 %d %s" % (status, reason.encode("latin-1", "replace"))]
    lines += [k + b": " + v for k, v in kept]
    lines += [b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class EarlyAnswers:
    def __init__(self) -> None:
        self._answers: dict[str, bytes] = {}
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.port = 0         # a request refused from here on is read and refused as before
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        self._answers.clear()

    def register(self, answer: bytes) -> str:
        """A ticket for one answer: the header `EARLY_HEADER` of the request it answers."""
        token = secrets.token_urlsafe(18)
        self._answers[token] = answer
        return token

    def forget(self, token: str) -> None:
        """A ticket whose request never came (its client left during the head)."""
        self._answers.pop(token, None)

    def __len__(self) -> int:
        return len(self._answers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            token = _ticket(head)
            answer = self._answers.pop(token, None) if token else None
            writer.write(answer if answer is not None else _UNKNOWN)
            await writer.drain()
            async with asyncio.timeout(DRAIN_FOR):
                while await reader.read(64 * 1024):
                    pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError, OSError) as exc:
            log.debug("ccswitch: an early answer's connection ended: %r", exc)
        finally:
            if task is not None:
                self._handlers.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


def _ticket(head: bytes) -> str | None:
    name = EARLY_HEADER.encode()
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None
