"""One timer for a stream's reads: each read cut at its own deadline, and only then."""

import asyncio

import pytest

from ccswitch.dial.read_deadline import ReadDeadline


async def read(deadline: ReadDeadline, wait: float, takes: float) -> str:
    deadline.start(wait)
    try:
        await asyncio.sleep(takes)
    except asyncio.CancelledError:
        if not deadline.stop():
            raise
        return "cut"
    deadline.stop()
    return "read"


async def test_a_read_within_its_deadline_is_not_cut():
    deadline = ReadDeadline()
    assert await read(deadline, 0.2, 0.01) == "read"
    deadline.close()
    assert asyncio.current_task().cancelling() == 0


async def test_a_read_past_its_deadline_is_cut_and_the_cancellation_taken_back():
    deadline = ReadDeadline()
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await read(deadline, 0.05, 5) == "cut"
    assert 0.04 < loop.time() - start < 1
    assert asyncio.current_task().cancelling() == 0
    assert await read(deadline, 0.2, 0.01) == "read"     # and the next read has its own deadline
    deadline.close()


async def test_many_reads_set_one_timer_not_one_each(monkeypatch):
    loop = asyncio.get_running_loop()
    timers = []
    call_at = loop.call_at
    monkeypatch.setattr(loop, "call_at", lambda when, cb, *args, **kw: timers.append(when) or call_at(when, cb, *args, **kw))
    deadline = ReadDeadline()
    for _ in range(100):
        assert await read(deadline, 30, 0) == "read"
    deadline.close()
    assert len(timers) == 1


async def test_the_timer_due_early_sets_itself_for_the_moved_deadline():
    deadline = ReadDeadline()
    assert await read(deadline, 0.1, 0.08) == "read"
    # the timer, due 0.1 s after the first start, finds this read's deadline later and waits on
    assert await read(deadline, 0.1, 0.06) == "read"
    assert await read(deadline, 0.05, 1) == "cut"
    deadline.close()


async def test_a_shorter_deadline_than_the_timer_is_kept():
    """During the hold-back a read waits only what is left of it: a timer set for a later
    deadline must not let it run past."""
    deadline = ReadDeadline()
    assert await read(deadline, 60, 0) == "read"
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await read(deadline, 0.05, 5) == "cut"
    assert loop.time() - start < 1
    deadline.close()


async def test_between_reads_nothing_is_cut():
    """A deadline covers reads only: the pump's wait for a slow client to take what it wrote
    is not a read, however long it lasts."""
    deadline = ReadDeadline()
    assert await read(deadline, 0.02, 0) == "read"
    await asyncio.sleep(0.1)       # the timer comes due meanwhile
    assert asyncio.current_task().cancelling() == 0
    assert await read(deadline, 0.2, 0.01) == "read"
    deadline.close()


async def reader_task(wait: float, takes: float) -> tuple[asyncio.Task, ReadDeadline]:
    """A task reading under its own deadline, started: (the task, its deadline)."""
    deadlines = []

    async def reader():
        deadline = ReadDeadline()
        deadlines.append(deadline)
        try:
            return await read(deadline, wait, takes)
        finally:
            deadline.close()

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    return task, deadlines[0]


async def test_a_cancellation_from_elsewhere_during_a_read_stands():
    task, _ = await reader_task(10, 5)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_from_elsewhere_as_the_deadline_passes_still_stands():
    task, deadline = await reader_task(0.02, 5)
    # due with the deadline's timer, in the same turn: both cancels reach the read at once
    asyncio.get_running_loop().call_at(deadline._handle.when(), task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_close_leaves_no_timer_behind():
    loop = asyncio.get_running_loop()
    deadline = ReadDeadline()
    assert await read(deadline, 30, 0) == "read"
    handle = deadline._handle
    deadline.close()
    assert handle.cancelled()
    assert loop.time() < handle.when()


async def test_close_takes_back_a_cut_that_no_stop_saw():
    """A read that turns the deadline's cancellation into an error of its own: once the
    deadline is closed, the task is not left cancelling (a later timeout in it would misjudge)."""
    async def read_that_fails_when_cut():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            raise ConnectionError("cut") from None

    deadline = ReadDeadline()
    deadline.start(0.02)
    with pytest.raises(ConnectionError):
        await read_that_fails_when_cut()
    deadline.close()
    assert asyncio.current_task().cancelling() == 0
