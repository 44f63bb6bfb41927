"""The connections one `UpstreamClient` holds: the idle ones kept alive for reuse, and how
many each upstream has open against its `max_connections`, with the requests waiting for room.

Idle connections are kept per (upstream, proxy, origin): a connection is counted for the
upstream that opened it and is never lent to another, so each upstream's count is exact.
A request that finds its upstream at its cap waits in line (newcomers queue behind the
requests already waiting); it gets the first connection given back, or the room of one that
closed, or closes an idle connection of the same upstream kept for another origin or proxy.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

PoolKey = tuple[str | None, Any, tuple[str, str, int]]   # upstream (None: uncounted), proxy, origin


class Pooled(Protocol):
    key: PoolKey
    idle_since: float

    def usable(self, idle_cutoff: float) -> bool: ...

    def close(self, *, abort: bool = False) -> None: ...


class NoRoom(TimeoutError):
    """The upstream's connections all stayed busy until the deadline."""


@dataclass
class _Upstream:
    limit: int | None = None
    open: int = 0                   # connections open or being opened
    waiters: deque[asyncio.Future] = field(default_factory=deque)

    def has_room(self) -> bool:
        return self.limit is None or self.open < self.limit


class Pool:
    def __init__(self, max_idle_per_key: int, keepalive_expiry: float) -> None:
        self.max_idle_per_key = max_idle_per_key
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[PoolKey, list[Pooled]] = {}
        self._open: set[Pooled] = set()
        self._upstreams: dict[str, _Upstream] = {}

    # ---------------------------------------------------------------- checkout

    async def acquire(self, key: PoolKey, limit: int | None, timeout: float, *,
                      fresh: bool = False) -> Pooled | None:
        """A kept-alive connection for `key`, or None: room was reserved to open a new one
        (call `opened` with it, or `abandon` if it could not be opened).  `fresh` reuses none.
        Waits at most `timeout` for room; raises NoRoom then."""
        name = key[0]
        if name is None:
            return None if fresh else self._take_idle(key)
        upstream = self._upstream(name, limit)
        deadline = asyncio.get_running_loop().time() + timeout
        queued = False
        while True:
            if queued or not upstream.waiters:
                connection = None if fresh else self._take_idle(key)
                if connection is not None:
                    return connection
                if upstream.has_room():
                    upstream.open += 1
                    return None
                if self._evict_idle(name):       # the room of the one it closed
                    return None
            await self._wait(upstream, deadline, first=queued)
            queued = True

    def opened(self, connection: Pooled) -> None:
        self._open.add(connection)

    def abandon(self, key: PoolKey) -> None:
        """The connection room was reserved for could not be opened."""
        if key[0] is not None:
            self._closed(key[0])

    def release(self, connection: Pooled) -> None:
        """A connection ready for its next request: kept idle, or closed when enough are."""
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self.max_idle_per_key or connection not in self._open:
            self.discard(connection, abort=False)
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)
        if connection.key[0] is not None:
            self._wake(self._upstreams[connection.key[0]])

    def discard(self, connection: Pooled, *, abort: bool = True) -> None:
        connection.close(abort=abort)
        if connection in self._open:
            self._open.discard(connection)
            if connection.key[0] is not None:
                self._closed(connection.key[0])

    def discard_idle(self, which: Callable[[Pooled], bool]) -> None:
        for idle in self._idle.values():
            for connection in [c for c in idle if which(c)]:
                idle.remove(connection)
                self.discard(connection, abort=False)

    def close_all(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        for upstream in self._upstreams.values():
            upstream.open = 0
            while upstream.waiters:
                self._wake(upstream)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per upstream: (connections open, requests waiting for one)."""
        return {name: (u.open, len(u.waiters)) for name, u in self._upstreams.items()}

    # ---------------------------------------------------------------- inside

    def _upstream(self, name: str, limit: int | None) -> _Upstream:
        upstream = self._upstreams.get(name)
        if upstream is None:
            upstream = self._upstreams[name] = _Upstream(limit)
        elif upstream.limit != limit:          # the rules changed its cap
            raised = limit is None or (upstream.limit is not None and limit > upstream.limit)
            upstream.limit = limit
            if raised:
                for _ in range(len(upstream.waiters)):
                    self._wake(upstream)
        return upstream

    def _take_idle(self, key: PoolKey) -> Pooled | None:
        idle = self._idle.get(key)
        cutoff = time.monotonic() - self.keepalive_expiry
        while idle:
            connection = idle.pop()
            if connection.usable(cutoff):
                return connection
            self.discard(connection, abort=False)
        return None

    def _evict_idle(self, name: str) -> bool:
        """Close the oldest idle connection the upstream keeps (for another origin or proxy,
        or one gone stale) so its room serves this request: True if there was one."""
        oldest: Pooled | None = None
        for key, idle in self._idle.items():
            if key[0] == name and idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        self._idle[oldest.key].remove(oldest)
        self._open.discard(oldest)            # its room passes to the caller: the count stays
        oldest.close()
        return True

    def _closed(self, name: str) -> None:
        upstream = self._upstreams[name]
        upstream.open = max(0, upstream.open - 1)
        self._wake(upstream)

    @staticmethod
    def _wake(upstream: _Upstream) -> None:
        while upstream.waiters:
            waiter = upstream.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _wait(self, upstream: _Upstream, deadline: float, *, first: bool) -> None:
        """Until woken (something was given back or closed), at the back of the line or,
        for a request woken before that found nothing, at its front again."""
        waiter = asyncio.get_running_loop().create_future()
        if first:
            upstream.waiters.appendleft(waiter)
        else:
            upstream.waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:
            if waiter in upstream.waiters:
                upstream.waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._wake(upstream)           # woken as it gave up: the next in line takes it
            if isinstance(exc, TimeoutError):
                raise NoRoom() from None
            raise
