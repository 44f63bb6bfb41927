"""A client's unfinished head: bounded, and never quoted in mitmproxy's log."""

import logging

import pytest
from mitmproxy import connection
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http._http1 import Http1Server
from mitmproxy.test import taddons

from ccswitch.mitm.head_guard import MAX_HEAD, HeadsNotLogged, guard_request_heads


@pytest.mark.parametrize("said", ["Client closed connection before completing request headers",
                                  "Unexpected data from server", "unexpected server response"])
def test_mitmproxys_lines_quoting_a_heads_bytes_keep_their_words_not_the_bytes(said):
    record = logging.LogRecord("mitmproxy.proxy.server", logging.INFO, __file__, 1,
                               f"{said}: " + repr(b"POST / HTTP/1.1\r\nx-api-key: sk-secret-0001\r\n"), None, None)
    assert HeadsNotLogged().filter(record)
    assert record.getMessage().startswith(f"{said}: (") and "sk-secret" not in record.getMessage()
    assert record.getMessage().endswith("characters of bytes, not shown: a head holds credentials)")


def test_other_lines_pass_as_they_are():
    for said in ("client connect x", "Bob's client b'-less"):
        record = logging.LogRecord("mitmproxy.proxy.server", logging.INFO, __file__, 1, "%s", (said,), None)
        assert HeadsNotLogged().filter(record) and record.getMessage() == said


def _server():
    guard_request_heads()
    with taddons.context() as tctx:
        options = tctx.options
    client = connection.Client(peername=("192.0.2.4", 5), sockname=("0.0.0.0", 8080), timestamp_start=0)
    server = Http1Server(Context(client, options))
    list(server.handle_event(events.Start()))
    return server, client


def _feed(server, client, data):
    out = []
    for at in range(0, len(data), 65536):
        out += list(server.handle_event(events.DataReceived(client, data[at:at + 65536])))
    return out


CHUNKED = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(("first", "endless"), [
    (b"", b"POST / HTTP/1.1\r\nx-pad: " + b"a" * MAX_HEAD),     # a head: 431
    (CHUNKED, b"0" * (2 * MAX_HEAD)),                           # a chunk-size line (a keyless client's, refused early)
    (CHUNKED + b"0\r\n", b"x-t: " + b"a" * (2 * MAX_HEAD)),      # trailers
])
def test_a_line_that_never_ends_is_not_held_past_the_limit_in_any_state(first, endless):
    server, client = _server()
    _feed(server, client, first)
    out = _feed(server, client, endless)
    assert any(isinstance(c, commands.CloseConnection) for c in out) and len(server.buf) <= MAX_HEAD
    sent = b"".join(c.data for c in out if isinstance(c, commands.SendData))
    assert sent.startswith(b"HTTP/1.1 431 ") == (not first)


@pytest.mark.parametrize("head", [b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key sk-secret-0001\r\n\r\n",
                                  b"GET /v1beta/models?key=sk-secret-0001&q=a b HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_a_head_mitmproxy_cannot_parse_is_not_quoted_in_the_log(head):
    server, client = _server()
    said = [c.message for c in _feed(server, client, head) if isinstance(c, commands.Log)]
    assert said
    for message in said:
        record = logging.LogRecord("mitmproxy.proxy.server", logging.INFO, __file__, 1, message, None, None)
        HeadsNotLogged().filter(record)
        assert "sk-secret" not in record.getMessage(), record.getMessage()
