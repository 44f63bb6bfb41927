"""The in-memory connection between mitmproxy and the relay: what a loopback socket pair did,
end for end (order, ends of file, closes, back-pressure)."""

import asyncio

import pytest

from ccswitch.dial.relay_pipe import BUFFER_LIMIT, RelayPipe

PEER = ("127.0.0.1", 4242)


class Recorder(asyncio.Protocol):
    """The relay's side: what it was told, in order."""

    def __init__(self, keep_half_open: bool = False) -> None:
        self.seen: list = []
        self.transport = None
        self.keep_half_open = keep_half_open

    def connection_made(self, transport):
        self.transport = transport
        self.seen.append("made")

    def data_received(self, data):
        self.seen.append(data)

    def eof_received(self):
        self.seen.append("eof")
        return self.keep_half_open

    def connection_lost(self, exc):
        self.seen.append(("lost", exc))

    def pause_writing(self):
        self.seen.append("pause")

    def resume_writing(self):
        self.seen.append("resume")


async def turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_what_mitmproxy_writes_reaches_the_relay_a_loop_turn_later_in_order():
    relay = Recorder()
    pipe = RelayPipe(relay, PEER)
    pipe.proxy_end.write(b"POST / HTTP/1.1\r\n")
    pipe.proxy_end.write(b"")
    pipe.proxy_end.write(bytearray(b"\r\n"))
    assert relay.seen == ["made"]       # not from inside mitmproxy's layer: as a socket's bytes would
    await turn()
    assert relay.seen == ["made", b"POST / HTTP/1.1\r\n", b"\r\n"]
    assert all(type(piece) is bytes for piece in relay.seen[1:])


async def test_what_the_relay_writes_mitmproxy_reads_then_the_end_once_it_closes():
    relay = Recorder()
    pipe = RelayPipe(relay, PEER)
    reader = pipe.reader         # mitmproxy's: the pipe lets go of it once closed
    relay.transport.write(b"HTTP/1.1 200 OK\r\n")
    relay.transport.write(b"\r\n")
    relay.transport.close()
    assert relay.transport.is_closing() and pipe.proxy_end.is_closing()
    relay.transport.write(b"after the close")      # dropped, as a closed transport drops it
    assert await reader.read(65535) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert await reader.read(65535) == b""
    await turn()
    assert relay.seen == ["made", ("lost", None)]


async def test_mitmproxy_closing_its_end_loses_the_relay_its_connection_after_what_it_wrote_before():
    relay = Recorder()
    pipe = RelayPipe(relay, PEER)
    reader = pipe.reader         # mitmproxy's: the pipe lets go of it once closed
    pipe.proxy_end.write(b"GET")
    await pipe.proxy_end.drain()           # mitmproxy drains every writer after each read: never waits
    pipe.proxy_end.close()
    pipe.proxy_end.write(b"late")
    relay.transport.write(b"too late")
    await turn()
    assert relay.seen == ["made", b"GET", ("lost", None)]
    pipe.proxy_end.close()
    relay.transport.close()
    await turn()
    assert relay.seen == ["made", b"GET", ("lost", None)]     # lost once
    assert await reader.read(65535) == b""


async def test_the_relay_closing_its_end_reads_nothing_more():
    relay = Recorder()
    pipe = RelayPipe(relay, PEER)
    pipe.proxy_end.write(b"on its way")
    relay.transport.close()
    await turn()
    assert relay.seen == ["made", ("lost", None)] and pipe.proxy_end.is_closing()


@pytest.mark.parametrize("keep_half_open", [False, True])
async def test_mitmproxys_half_close_is_an_end_of_file_that_closes_unless_the_protocol_keeps_it(keep_half_open):
    relay = Recorder(keep_half_open)
    pipe = RelayPipe(relay, PEER)
    reader = pipe.reader         # mitmproxy's: the pipe lets go of it once closed
    pipe.proxy_end.write(b"x")
    pipe.proxy_end.write_eof()
    await turn()
    if keep_half_open:
        assert relay.seen == ["made", b"x", "eof"] and not pipe.closed
        relay.transport.write(b"still answered")
        assert await reader.read(65535) == b"still answered"
    else:
        assert relay.seen == ["made", b"x", "eof", ("lost", None)] and pipe.closed


async def test_a_relay_writing_faster_than_mitmproxy_reads_is_paused_then_resumed():
    relay = Recorder()
    pipe = RelayPipe(relay, PEER)
    reader = pipe.reader         # mitmproxy's: the pipe lets go of it once closed
    piece = b"x" * 16384
    written = 0
    while "pause" not in relay.seen:
        relay.transport.write(piece)
        written += len(piece)
        assert written <= 2 * BUFFER_LIMIT + len(piece)
    assert written > 2 * BUFFER_LIMIT          # paused beyond twice the limit, as mitmproxy's reader holds it
    read = b""
    while "resume" not in relay.seen:
        read += await reader.read(16384)
    assert len(read) >= written - BUFFER_LIMIT
    assert relay.seen == ["made", "pause", "resume"]


async def test_once_lost_the_pipe_lets_go_of_mitmproxys_reader_and_the_relay():
    relay = Recorder()
    pipe = RelayPipe(relay, PEER)
    reader = pipe.reader
    relay.transport.write(b"x" * (3 * BUFFER_LIMIT))     # the relay paused, mitmproxy gone
    pipe.proxy_end.close()
    await turn()
    assert relay.seen == ["made", "pause", ("lost", None)]
    assert pipe.reader is None and pipe._protocol is None
    await reader.read(-1)            # what mitmproxy still reads resumes nothing
    assert relay.seen[-1] == ("lost", None)


async def test_mitmproxy_is_told_the_relays_address_as_its_peer():
    pipe = RelayPipe(Recorder(), PEER)
    assert pipe.proxy_end.get_extra_info("peername") == PEER
    assert pipe.proxy_end.get_extra_info("sockname") == ("127.0.0.1", 0)     # no port of a socket of its own
    assert pipe.proxy_end.get_extra_info("socket") is None
    assert pipe.relay_end.get_extra_info("peername", "none") == "none"


async def test_a_paced_reader_holds_mitmproxys_reads_back_while_its_client_is_behind_and_the_relay_pauses():
    behind = [True]
    relay = Recorder()
    pipe = RelayPipe(relay, PEER, pace=lambda: behind[0])
    reader = pipe.reader
    relay.transport.write(b"first")
    read = asyncio.ensure_future(reader.read(65535))
    await asyncio.sleep(0.05)
    assert not read.done()                      # held back: the client has not taken what it was sent
    while "pause" not in relay.seen:            # the relay writes on until the pipe is full, then pauses
        relay.transport.write(b"x" * 16384)
    behind[0] = False                           # the client caught up
    assert (await asyncio.wait_for(read, 1)).startswith(b"first")


async def test_an_unpaced_pipe_reads_at_once():
    relay = Recorder()
    pipe = RelayPipe(relay, PEER, pace=None)
    relay.transport.write(b"at once")
    assert await asyncio.wait_for(pipe.reader.read(65535), 0.05) == b"at once"


async def test_a_paced_read_takes_the_relays_end_though_its_client_is_still_behind():
    # the relay closed its end (the answer ended, or a killed job was cancelled): nothing is left
    # to hold back, and mitmproxy must read the end to end the client's stream and the hop
    relay = Recorder()
    pipe = RelayPipe(relay, PEER, pace=lambda: True)
    reader = pipe.reader
    relay.transport.write(b"last piece")
    relay.transport.close()
    assert await asyncio.wait_for(reader.read(65535), 1) == b"last piece"
    assert await asyncio.wait_for(reader.read(65535), 1) == b""


async def test_a_paced_read_cancelled_while_its_client_is_behind_ends_with_its_task():
    pipe = RelayPipe(Recorder(), PEER, pace=lambda: True)
    read = asyncio.ensure_future(pipe.reader.read(65535))
    await asyncio.sleep(0.03)
    read.cancel()
    await asyncio.sleep(0)
    assert read.cancelled()
