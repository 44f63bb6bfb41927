"""A capped upstream's kept-alive resend (a reused connection that closed before any answer,
docs/ledger.md) stays within the attempt's one `first_byte`: its connection's wait counts from
when it had one, once (docs/rules.md, max_connections), not again for the resend."""

import asyncio

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.dial.dialer import Dialer
from ccswitch.routing.health import HealthBoard
from tests.support.helpers import MemorySink, make_job
from tests.support.loopback_guard import loopback_url
from tests.unit.dial.test_stream_tail import ANTHROPIC

STREAM = b"".join(ANTHROPIC)


async def server() -> asyncio.Server:
    served = 0

    async def read_request(reader):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)

    async def handle(reader, writer):
        nonlocal served
        served += 1
        if served == 1:       # the first request is answered, the connection kept alive
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(STREAM), STREAM))
            await writer.drain()
            await read_request(reader)       # the second: held 400 ms, then dropped without a word
            await asyncio.sleep(0.4)
            writer.close()
            return
        await read_request(reader)           # the resend: no answer at all
        await asyncio.sleep(3)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("cap", ["", ", max_connections: 4"], ids=["uncapped", "capped"])
async def test_the_kept_alive_resend_does_not_restart_first_byte(cap):
    srv = await server()
    rules = parse_rules(f"""
timeouts: {{connect: 2s, first_byte: 600ms, total: 2s, idle: 2s}}
failover: {{retry_backoff: 10ms, hold_back: 100ms}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:{srv.sockets[0].getsockname()[1]}', api_key: key-a{cap}}}
routes: {{claude: [a]}}
""")
    dialer = Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        first = make_job(rules)
        await dialer.run(first, MemorySink())
        assert first.error is None
        second = make_job(rules)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await dialer.run(second, MemorySink())
        took = loop.time() - start
    finally:
        await dialer.aclose()
        srv.close()
    assert second.attempts[0].error == "first_byte timeout"
    assert took < 0.85, f"first_byte 600 ms, the attempt took {took:.2f} s"
