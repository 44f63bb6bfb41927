"""A deadline on each of a task's reads, with one timer for all of them.

`asyncio.timeout` around every read of a stream schedules and cancels a timer per piece of its
body (about 3 us each, and a loop heap full of cancelled timers with a thousand streams open).
Here each read only moves the deadline; the one timer, due at the earliest deadline asked for,
sets itself again for the current one when it comes early, and cuts the read (cancels the
task, as `asyncio.timeout` does) only when the deadline has really passed during a read.
"""

from __future__ import annotations

import asyncio


class ReadDeadline:
    """`start(wait)` before a read, `stop()` after it however it ended (True: this deadline cut it,
    and the task's cancellation is taken back), `close()` when no read follows."""

    __slots__ = ("_cancelling", "_deadline", "_expired", "_handle", "_loop", "_task")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a read deadline cuts the task that reads"
        self._task = task
        self._deadline: float | None = None     # None: no read under way
        self._handle: asyncio.TimerHandle | None = None
        self._expired = False
        self._cancelling = 0

    def start(self, wait: float) -> None:
        self._deadline = deadline = self._loop.time() + wait
        self._cancelling = self._task.cancelling()
        if self._handle is not None:
            if self._handle.when() <= deadline:
                return      # it comes first and looks again
            self._handle.cancel()
        self._handle = self._loop.call_at(deadline, self._due)

    def stop(self) -> bool:
        """Whether the deadline cut the read that just ended (a CancelledError it caused is then a
        timeout; a cancellation from elsewhere at the same time still stands)."""
        self._deadline = None
        if not self._expired:
            return False
        self._expired = False
        return self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        self._deadline = None
        if self._expired:   # a cut no `stop` saw (its read ended some other way): taken back all the same
            self._expired = False
            self._task.uncancel()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _due(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return      # between reads: the next `start` sets a timer again
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._due)
            return
        self._expired = True
        self._task.cancel()
