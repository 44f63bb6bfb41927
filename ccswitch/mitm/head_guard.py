"""What a client sends mitmproxy 12 holds before any hook: bounded here, and kept out of its log.

mitmproxy buffers the lines of an HTTP/1 request (its head; a chunked body's size lines and
trailers; what a client sends while its answer is pending) until each line ends, with no limit
(a `FIXME` in its `Http1Server.read_headers`), before any hook runs: a stranger beyond loopback,
with no key, could fill the proxy's memory with one line that never ends.  And mitmproxy logs
the bytes of a head a client leaves unfinished, or one it cannot parse, credentials
(`x-api-key`, `Proxy-Authorization`, a `?key=`) and all: a gigabyte in one line for such a header.

`guard_request_heads` answers a head past `MAX_HEAD` with a 431, and closes a connection whose
other buffered lines pass it (the buffer freed); `HeadsNotLogged` writes the bytes such log lines
quote as their size.
"""

from __future__ import annotations

import logging
import re

from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._http1 import Http1Connection, Http1Server

from ccswitch.mitm.wrapped import mitmproxys, wrap

#: bytes of a request's unfinished line(s) mitmproxy may hold: far beyond any API client's head
#: (a browser's cookies through the regular listener included; Node's own limit is 16 KiB)
MAX_HEAD = 256 * 1024

#: a bytes value as Python writes it (`b'…'`, `b"…"`), as mitmproxy's log lines quote a head
_BYTES_REPR = re.compile(r"""(?<!\w)b(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""", re.DOTALL)


class HeadsNotLogged(logging.Filter):
    """mitmproxy's server lines with the bytes they quote written as their size."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if ("b'" in message or 'b"' in message) and _BYTES_REPR.search(message):
            record.msg = _BYTES_REPR.sub(lambda found: f"({len(found.group(0)) - 3} characters of bytes, not shown: "
                                                       "a head holds credentials)", message)
            record.args = None
        return True


_original_handle_event = mitmproxys(Http1Server, "_handle_event")


def _handle_event_capped(self: Http1Server, event: events.Event):
    yield from _original_handle_event(self, event)
    state = getattr(self.state, "__func__", None)
    if len(self.buf) > MAX_HEAD and state is not Http1Connection.passthrough:
        self.buf = _http1.ReceiveBuffer()
        if state is Http1Connection.done:       # closed already: what still comes is dropped
            return
        self.state = self.done
        if state is Http1Server.read_headers:
            yield commands.SendData(self.conn, _http1.make_error_response(431, "Request Header Fields Too Large"))
        yield commands.CloseConnection(self.conn)


def guard_request_heads() -> None:
    """Both, once per process (a script reload calls this again)."""
    server_log = logging.getLogger("mitmproxy.proxy.server")
    if not any(isinstance(f, HeadsNotLogged) for f in server_log.filters):
        server_log.addFilter(HeadsNotLogged())
    wrap(Http1Server, "_handle_event", _handle_event_capped, _original_handle_event)
