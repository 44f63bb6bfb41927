"""Graceful shutdown: what happens between mitmproxy's `done` hook and the end of the process.

mitmproxy stops nothing itself on SIGTERM: it awaits each addon's `done` in turn while its
listeners still accept and its hooks still run, then `asyncio.run` cancels whatever is left
(and Python 3.12.1 logs every cancelled connection task as "Exception in callback ...
CancelledError").  So the router drains inside its `done`:

1. `draining`: new routed requests are answered 503 (with retry-after) in their API's format;
2. the requests in flight get a grace period to finish;
3. `cutting`: those still running are cancelled, and each ends in its protocol (a 503, or the
   stream's error event) with its usage row;
4. mitmproxy's listeners and connections are closed, so nothing new arrives and no
   connection task is left for the event loop to cancel; then the ledger is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("ccswitch")

SHUTTING_DOWN = "ccswitch is shutting down"
#: the error recorded for a request (or an activation probe) the shutdown cut past its grace period
CUT_BY_SHUTDOWN = "shutdown: not finished within the grace period"
#: the same, where a second stop (Ctrl-C again) ended the grace period early
CUT_WHEN_ASKED_AGAIN = "shutdown: ended at once when asked again to stop"
RETRY_AFTER = "10"          # seconds: about the time a restart takes
ENDING_WAIT = 3.0           # how long the endings of cut requests get to reach their clients
_POLL = 0.02


class Shutdown:
    """The proxy's shutdown as the request paths see it."""

    def __init__(self) -> None:
        self.draining = False    # new routed requests are refused
        self.cutting = False     # the grace period is over: what still runs is cancelled and ended
        self.cut_reason = CUT_BY_SHUTDOWN   # what the rows of what it cut say

    async def drain(self, in_flight: Callable[[], int], grace: float, cut: Callable[[], None], *,
                    process_ends: bool = False) -> None:
        """Refuse new requests, give those in flight `grace` seconds, then `cut` the rest and
        give their endings a moment to reach the clients.  When the process ends (not a reload
        of the script), asked to stop again (a second Ctrl-C) means now."""
        self.draining = True
        if in_flight():
            log.info("ccswitch: shutting down; waiting up to %g s for %d request(s) in flight%s", grace,
                     in_flight(), " (stop again, e.g. a second Ctrl-C, to end them now)" if process_ends else "")
        with _asked_again(process_ends and in_flight() > 0) as again:
            await wait_until(lambda: not in_flight() or again.is_set(), grace)
        if not in_flight():
            return
        if again.is_set():
            self.cut_reason = CUT_WHEN_ASKED_AGAIN
            log.warning("ccswitch: asked again to stop; ending the %d request(s) in flight now", in_flight())
        else:
            log.warning("ccswitch: %d request(s) still in flight after %g s; ending them", in_flight(), grace)
        self.cutting = True
        cut()
        if not await wait_until(lambda: not in_flight(), ENDING_WAIT):
            log.warning("ccswitch: %d request(s) did not end within %g s of being cut", in_flight(), ENDING_WAIT)


class Serving:
    """What serves jobs in tasks of its own (the relay, the WebSocket bridge): a shutdown waits
    while any runs (`running`), and past its grace period cancels them (`cut`); each then ends
    in its protocol."""

    def __init__(self) -> None:
        self._serving: set[asyncio.Task] = set()

    def _track(self, task: asyncio.Task) -> None:
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    @property
    def running(self) -> int:
        """Jobs being served now."""
        return len(self._serving)

    def cut(self) -> None:
        for task in list(self._serving):
            task.cancel()


@contextlib.contextmanager
def _asked_again(listen: bool) -> Iterator[asyncio.Event]:
    """An event a SIGINT or SIGTERM sets while the shutdown waits (`listen`: the process is
    ending; a reload of the script leaves mitmproxy's own handlers alone).  Its handler stays once
    the wait is over (the loop's closing removes it): mitmproxy's has done its part, and the
    signal's default would end the process before the ledger is flushed."""
    again, loop = asyncio.Event(), asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM) if listen else ():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):   # not the main thread, Windows
            loop.add_signal_handler(signum, again.set)
    yield again


def stop_on_hangup(stop: Callable[[], None]) -> None:
    """A SIGHUP (the terminal of a foreground `ccswitch run` closed, a `kill -HUP`) stops as a
    SIGTERM does: its default ended the process at once, a stream in flight cut short and the
    last rows never written."""
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):   # Windows: none
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, stop)


async def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


async def close_proxy_connections(proxyserver, timeout: float = ENDING_WAIT) -> None:
    """Stop mitmproxy's listeners and end its client connections, idle keep-alive ones included.

    Ending a connection the way mitmproxy's own inactivity timeout does (cancelling the client
    transport's handler) lets its task finish normally instead of being cancelled at exit.
    """
    await proxyserver.servers.update([])
    for handler in list(proxyserver.connections.values()):
        transport = handler.transports.get(handler.client)
        if transport is not None and transport.handler is not None:
            transport.handler.cancel(SHUTTING_DOWN)
    if not await wait_until(lambda: not proxyserver.connections, timeout):
        log.warning("ccswitch: %d client connection(s) still open at shutdown", len(proxyserver.connections))
