"""A client's unfinished request head, which mitmproxy 12 neither bounds nor keeps out of its log.

mitmproxy buffers an HTTP/1 head until its blank line with no limit (a `FIXME` in its
`Http1Server.read_headers`), before any hook runs: a stranger beyond loopback, with no key,
could fill the proxy's memory with one header that never ends.  And when a client closes its
connection mid-head, mitmproxy logs every byte received, credentials (`x-api-key`,
`Proxy-Authorization`) and all, a gigabyte in one line for such a header.

`cap_request_heads` answers a head past `MAX_HEAD` with a 431 and closes the connection (the
buffer freed); `HeadsNotLogged` writes such log lines with the byte count in place of the bytes.
"""

from __future__ import annotations

import logging
import re

from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._http1 import Http1Server

#: bytes of a request head mitmproxy may hold: far beyond any API client's (a browser's cookies
#: through the regular listener included; Node's own default limit is 16 KiB)
MAX_HEAD = 256 * 1024

#: mitmproxy's log lines that quote the bytes of a head (a request's, or a server's answer)
_QUOTED_BYTES = re.compile(r"^(Client closed connection before completing request headers|"
                           r"Unexpected data from server|unexpected server response): b(['\"]).*", re.DOTALL)


class HeadsNotLogged(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if found := _QUOTED_BYTES.match(message):
            record.msg = f"{found.group(1)}: {len(message) - len(found.group(1)) - 5} characters of bytes, not " \
                         "shown (a head holds credentials)"
            record.args = None
        return True


# mitmproxy's own, even if a copy of this module patched it before (a reload of the package)
_original_read_headers = getattr(Http1Server.read_headers, "__wrapped__", Http1Server.read_headers)


def _read_headers_capped(self: Http1Server, event: events.ConnectionEvent):
    yield from _original_read_headers(self, event)
    still_reading = getattr(self.state, "__func__", None) is Http1Server.read_headers
    if still_reading and len(self.buf) > MAX_HEAD:
        self.buf = _http1.ReceiveBuffer()
        yield commands.SendData(self.conn, _http1.make_error_response(431, "Request Header Fields Too Large"))
        yield commands.CloseConnection(self.conn)
        self.state = self.done


_read_headers_capped.__wrapped__ = _original_read_headers    # type: ignore[attr-defined]


def guard_request_heads() -> None:
    """Both, once per process (a script reload calls this again)."""
    server_log = logging.getLogger("mitmproxy.proxy.server")
    if not any(isinstance(f, HeadsNotLogged) for f in server_log.filters):
        server_log.addFilter(HeadsNotLogged())
    if Http1Server.read_headers is not _read_headers_capped:
        Http1Server.read_headers = _read_headers_capped
