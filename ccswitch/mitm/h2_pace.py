"""How far behind an HTTP/2 client is on one stream: what mitmproxy keeps for it beyond its window.

mitmproxy's HTTP/2 layer writes to a client only what the client's flow-control windows let it,
keeps the rest in memory (`BufferedH2Connection.stream_buffers`) and reads on from the server: a
client reading a long stream slowly had the rest of it held by the proxy (30 MB read at 5 MB/s:
about 30 MB more memory).  Over HTTP/1 the sockets' buffers fill and mitmproxy stops reading.  For
a relay hop ccswitch holds mitmproxy's reads back itself while more than `BEHIND_LIMIT` is kept
for the stream the hop serves (`relay_pipe.PacedReader`): the hop's pipe then fills, and the
relay, and with it the upstream read, pause.  Per stream: a client reading its streams one after
the other is not stopped on the one it reads by another it leaves for later.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from mitmproxy.connection import Client, Server
from mitmproxy.proxy.layers.http import HttpLayer
from mitmproxy.proxy.layers.http._http2 import Http2Server

from ccswitch.mitm.wrapped import mitmproxys, wrap

#: what mitmproxy may keep for one stream of an HTTP/2 client before the hop's reads wait
BEHIND_LIMIT = 1024 * 1024

#: each HTTP/2 client connection's server layer (its h2 connection), while it lives: held weakly
#: both ways, since the layer points at its client (a plain value would keep both for ever)
_h2_layer_of: weakref.WeakKeyDictionary[Client, weakref.ref[Http2Server]] = weakref.WeakKeyDictionary()

_original_init = mitmproxys(Http2Server, "__init__")


def _init(self: Http2Server, context) -> None:
    _original_init(self, context)
    _h2_layer_of[context.client] = weakref.ref(self)


def behind(client: Client, server: Server) -> Callable[[], bool] | None:
    """For a hop to `server` serving an HTTP/2 client: whether mitmproxy keeps more than the limit
    for the stream the hop serves now (a hop may serve the connection's next stream later); None
    for any other client."""
    layer_ref = _h2_layer_of.get(client)
    h2_layer = layer_ref() if layer_ref is not None else None
    if h2_layer is None:
        return None
    http_layer = next((layer for layer in reversed(h2_layer.context.layers) if isinstance(layer, HttpLayer)), None)
    if http_layer is None:
        return None
    kept = h2_layer.h2_conn.stream_buffers

    def too_far() -> bool:
        if not kept:        # the client takes all it is sent: nothing more to ask
            return False
        hop = http_layer.connections.get(server)
        stream_id = getattr(hop.context.layers[-1], "stream_id", None) if hop is not None else None
        queue = kept.get(stream_id) if stream_id is not None else None
        return bool(queue) and sum(len(chunk.data) for chunk in queue) > BEHIND_LIMIT
    return too_far


def pace_http2_clients() -> None:
    """Note every HTTP/2 client connection's server layer (once per process)."""
    wrap(Http2Server, "__init__", _init, _original_init)
