"""A committed Anthropic stream's `ping` events alone are silence (docs/rules.md, timeouts.idle): a
relay keeping a stream open with nothing else ends at `idle`, also one that writes each ping's
lines apart (`event: ping\\n`, then its data: line-by-line flushing), whose reads leave the start
of a ping waiting."""

import asyncio
import contextlib

import pytest

from ccswitch.dial.dialer import Dialer
from ccswitch.routing.health import HealthBoard
from tests.support.helpers import MemorySink, make_job, rules_for
from tests.support.loopback_guard import loopback_url
from tests.unit.dial.test_stream_tail import ANTHROPIC


async def pinging_server(split: bool) -> asyncio.Server:
    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")

        def chunk(data: bytes) -> None:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))

        chunk(ANTHROPIC[0] + ANTHROPIC[1])          # message_start and content: committed
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            for _ in range(100):                    # pings and nothing else, for 10+ s
                await asyncio.sleep(0.05)
                if split:
                    chunk(b"event: ping\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    chunk(b'data: {"type": "ping"}\n\n')
                else:
                    await asyncio.sleep(0.05)
                    chunk(b'event: ping\ndata: {"type": "ping"}\n\n')
                await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("split", [False, True], ids=["ping-whole", "ping-in-two-writes"])
async def test_a_committed_anthropic_stream_of_pings_alone_ends_at_idle(split):
    server = await pinging_server(split)
    port = server.sockets[0].getsockname()[1]
    rules = rules_for(("a", "anthropic", f"http://127.0.0.1:{port}"), extra="""
timeouts: {connect: 2s, first_byte: 500ms, total: 2s, idle: 500ms}
failover: {retry_backoff: 10ms, hold_back: 100ms}
""")
    dialer, job, sink = Dialer(HealthBoard(), allow_url=loopback_url), make_job(rules), MemorySink()
    try:
        async with asyncio.timeout(4):       # idle is 500 ms: it should end well before this
            await dialer.run(job, sink)
    except TimeoutError:
        pytest.fail("a committed stream of pings alone was still open after 4 s (idle: 500ms)")
    finally:
        await dialer.aclose()
        server.close()
    assert job.attempts[0].error == "idle timeout"
