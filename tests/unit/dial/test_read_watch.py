"""The pump's one-timer-per-stream deadlines: a read is cut at its deadline, nothing else is."""

import asyncio
import time

import pytest

from ccswitch.dial.pump import ReadTimedOut, ReadWatch


class Body:
    """A body iterator whose pieces arrive when the test says."""

    def __init__(self) -> None:
        self.pieces: asyncio.Queue[bytes] = asyncio.Queue()

    async def __anext__(self) -> bytes:
        return await self.pieces.get()


async def test_a_read_past_its_deadline_times_out_and_leaves_the_task_uncancelled():
    watch, body = ReadWatch(), Body()
    started = time.monotonic()
    with pytest.raises(ReadTimedOut):
        await watch.read(body, time.monotonic() + 0.05)
    assert 0.04 < time.monotonic() - started < 0.5
    assert asyncio.current_task().cancelling() == 0
    body.pieces.put_nowait(b"late")                  # the stream goes on after a hold-back timeout
    assert await watch.read(body, time.monotonic() + 1) == b"late"
    watch.close()


async def test_a_deadline_moved_on_by_each_read_is_not_hit_by_the_first_reads_timer():
    watch, body = ReadWatch(), Body()

    async def trickle():
        for _ in range(6):
            await asyncio.sleep(0.03)
            body.pieces.put_nowait(b".")

    feeder = asyncio.create_task(trickle())
    for _ in range(6):    # 6 x 30 ms apart, each with 80 ms to come: well past the first deadline
        assert await watch.read(body, time.monotonic() + 0.08) == b"."
    await feeder
    watch.close()


async def test_time_spent_outside_a_read_is_never_cut():
    watch, body = ReadWatch(), Body()
    body.pieces.put_nowait(b"a")
    assert await watch.read(body, time.monotonic() + 0.03) == b"a"
    await asyncio.sleep(0.1)          # e.g. a write waiting for a slow client, past the deadline
    body.pieces.put_nowait(b"b")
    assert await watch.read(body, time.monotonic() + 0.5) == b"b"
    watch.close()


async def test_a_cancellation_from_outside_wins_over_a_timeout_at_the_same_moment():
    body = Body()
    deadline = time.monotonic() + 0.05

    async def reader():
        watch = ReadWatch()
        try:
            await watch.read(body, deadline)
        finally:
            watch.close()

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)                     # the watch's timer is set
    # both due in the same turn of the loop, before the reader runs again
    asyncio.get_running_loop().call_at(deadline, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_closing_the_watch_stops_its_timer():
    watch, body = ReadWatch(), Body()
    body.pieces.put_nowait(b"x")
    await watch.read(body, time.monotonic() + 0.02)
    watch.close()
    await asyncio.sleep(0.05)
    assert asyncio.current_task().cancelling() == 0
