"""The shutdown's wait for requests in flight: a second stop (Ctrl-C) ends it at once."""

import asyncio
import os
import signal
import time

from ccswitch.dial.shutdown import Shutdown


async def test_a_second_stop_ends_the_grace_period_at_once(caplog):
    # users press Ctrl-C twice to mean "now": the second was ignored for the whole grace period
    before = signal.getsignal(signal.SIGINT)
    running, cuts = [1], []
    shutdown = Shutdown()
    started = time.monotonic()
    drain = asyncio.create_task(shutdown.drain(lambda: len(running), 60, lambda: (cuts.append(1), running.clear()),
                                               process_ends=True))
    while signal.getsignal(signal.SIGINT) is before:      # the wait's own handler is in place
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(drain, 5)
    assert cuts == [1] and shutdown.cutting and time.monotonic() - started < 5
    assert "asked again to stop; ending the 1 request(s) in flight now" in caplog.text
    # what the rows of the requests it cut say: not a grace period that ran out
    assert shutdown.cut_reason == "shutdown: ended at once when asked again to stop"


async def test_without_a_second_stop_the_requests_get_their_grace_period():
    running, cuts = [1], []
    shutdown = Shutdown()
    asyncio.get_running_loop().call_later(0.2, running.clear)
    await shutdown.drain(lambda: len(running), 60, lambda: cuts.append(1))
    assert cuts == [] and not shutdown.cutting and shutdown.cut_reason == "shutdown: not finished within the grace period"


async def test_a_reload_of_the_script_leaves_the_signals_to_mitmproxy():
    # its handlers were replaced for good by a reload's drain: SIGTERM and Ctrl-C stopped nothing after
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    running = [1]
    asyncio.get_running_loop().call_later(0.1, running.clear)
    await Shutdown().drain(lambda: len(running), 60, lambda: None)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
