"""How far behind an HTTP/2 client is on the stream a relay hop serves, read from mitmproxy's own
HTTP layer and its HTTP/2 server layer."""

import gc
import weakref
from types import SimpleNamespace

from mitmproxy import connection
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import HttpLayer, HTTPMode
from mitmproxy.proxy.layers.http._http_h2 import SendH2Data
from mitmproxy.test import taddons

from ccswitch.mitm import h2_pace
from ccswitch.mitm.h2_pace import BEHIND_LIMIT, behind, pace_http2_clients

HOP = connection.Server(address=("127.0.0.1", 4242))


def client(alpn: bytes | None) -> connection.Client:
    c = connection.Client(peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 8080), timestamp_start=0)
    c.alpn = alpn
    return c


def http_layer_of(c: connection.Client) -> HttpLayer:
    """mitmproxy's HTTP layer for the client, started: its server layer built."""
    with taddons.context(Proxyserver()) as tctx:      # mitmproxy's options, its proxy's among them
        layer = HttpLayer(Context(c, tctx.options), HTTPMode.regular)
        list(layer.handle_event(events.Start()))
    return layer


def serving(stream_id: int):
    """A hop's layers as mitmproxy's HTTP/1 client layer says which stream it serves."""
    return SimpleNamespace(context=SimpleNamespace(layers=[SimpleNamespace(stream_id=stream_id)]))


def test_a_hop_waits_once_mitmproxy_keeps_more_than_the_limit_for_the_stream_it_serves():
    pace_http2_clients()
    h2_client = client(b"h2")
    layer = http_layer_of(h2_client)
    too_far = behind(h2_client, HOP)
    assert too_far is not None and not too_far()          # no hop yet
    kept = layer.connections[h2_client].h2_conn.stream_buffers
    layer.connections[HOP] = serving(3)
    kept[1].append(SendH2Data(b"x" * (2 * BEHIND_LIMIT), False))
    assert not too_far()                    # another stream, left for later: not this hop's to wait on
    kept[3].append(SendH2Data(b"x" * BEHIND_LIMIT, False))
    assert not too_far()                    # at the limit
    kept[3].append(SendH2Data(b"x", True))
    assert too_far()
    layer.connections[HOP] = serving(5)     # the hop serves the connection's next stream
    assert not too_far()
    layer.connections[HOP] = serving(3)
    del kept[3]                             # the client's window took it
    assert not too_far()


def test_a_client_without_http2_is_never_held():
    pace_http2_clients()
    h1_client = client(None)
    http_layer_of(h1_client)
    assert behind(h1_client, HOP) is None


def test_an_http2_client_gone_leaves_nothing_behind():
    # the layer points at its client: noted plainly, neither would ever go, nor the layers and
    # flows behind them, nor what was kept for that client
    pace_http2_clients()
    h2_client = client(b"h2")
    layer = http_layer_of(h2_client)
    layer.connections[h2_client].h2_conn.stream_buffers[1].append(SendH2Data(b"x" * BEHIND_LIMIT, False))
    gone_client, gone_layer = weakref.ref(h2_client), weakref.ref(layer)
    del h2_client, layer
    gc.collect()
    assert gone_client() is None and gone_layer() is None, f"{len(h2_pace._h2_layer_of)} kept"
