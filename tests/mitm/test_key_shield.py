"""No key on a flow mitmweb is sent: from its head on, for every flow (the live page's, a request
passed on to its host, a routed one), and never the login of a refused `--proxyauth`."""

import pytest
from mitmproxy.addons import proxyauth
from mitmproxy.addons.view import View
from mitmproxy.proxy import mode_specs
from mitmproxy.proxy.layers.http import HttpConnectHook, HttpRequestHeadersHook, HttpRequestHook
from mitmproxy.test import taddons, tflow, tutils

from ccswitch.mitm import make_addons
from ccswitch.mitm.key_shield import KeyShield
from ccswitch.mitm.live_page import LivePage
from ccswitch.mitm.router import Router
from ccswitch.mitm.safety import ClientKeyGate
from tests.support.helpers import CLIENT_KEY, KEY_A

RULES = f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
"""


def flow_to(host: str, path: str, headers=(), mode="regular", method=b"GET"):
    req = tutils.treq(method=method, scheme=b"https", host=host, port=443, path=path.encode(),
                      headers=tuple((k.encode(), v.encode()) for k, v in headers), content=b"")
    flow = tflow.tflow(req=req)
    flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse(mode)
    flow.client_conn.peername = ("127.0.0.1", 5000)
    flow.client_conn.timestamp_end = None
    return flow


class Sent:
    """What mitmweb's view sends its browsers after each hook pass."""

    def __init__(self, view: View) -> None:
        self.texts: list[str] = []
        view.sig_view_add.connect(self.take)
        view.sig_view_update.connect(self.take)

    def take(self, flow) -> None:
        self.texts.append(repr(flow.request.headers.fields) + flow.request.path)


def test_the_shield_is_first_so_its_request_hook_gives_the_keys_back_before_the_others():
    # first of those that see a flow at all (the unload guard before it has only load and done)
    seeing = [type(a) for a in make_addons()
              if any(hasattr(a, hook) for hook in ("requestheaders", "request", "responseheaders", "response", "error"))]
    assert seeing[0] is KeyShield and seeing.index(LivePage) < seeing.index(Router)


@pytest.mark.parametrize("host,path,headers", [
    ("ccswitch", "/_ccswitch/status.json", [("x-api-key", CLIENT_KEY)]),                  # the live page
    ("ccswitch", f"/_ccswitch/?key={CLIENT_KEY}", []),
    ("api.anthropic.com", "/api/claude_code/settings", [("x-api-key", CLIENT_KEY)]),     # passed on
    ("api.anthropic.com", f"/v1/models?key={CLIENT_KEY}", []),
], ids=["page-header", "page-query", "passthrough-header", "passthrough-query"])
async def test_no_pass_sends_mitmweb_a_client_key(gateway, host, path, headers):
    router = Router(gateway)
    router.relay = object()      # started: nothing of these is routed
    router.started.set()
    view = View()
    sent = Sent(view)
    addons = [KeyShield(), LivePage(gateway), router, ClientKeyGate(gateway), view]
    with taddons.context(*addons) as tctx:
        flow = flow_to(host, path, headers)
        await tctx.master.addons.handle_lifecycle(HttpRequestHeadersHook(flow))
        await tctx.master.addons.handle_lifecycle(HttpRequestHook(flow))
    assert len(sent.texts) >= 2 and all(CLIENT_KEY not in text for text in sent.texts), sent.texts
    if host == "ccswitch":
        assert flow.response.status_code == 200      # the key was back for the page's own check


async def test_a_refused_proxy_login_is_not_kept_on_the_flow():
    auth = proxyauth.ProxyAuth()
    with taddons.context(auth, KeyShield()) as tctx:
        tctx.configure(auth, proxyauth="alice:right-pass")
        login = "Basic YWxpY2U6d3JvbmctcGFzcw=="          # alice:wrong-pass
        for hook, method in ((HttpConnectHook, b"CONNECT"), (HttpRequestHeadersHook, b"GET")):
            flow = flow_to("example.com", "/", [("proxy-authorization", login)], method=method)
            flow.request.authority = "example.com:443" if method == b"CONNECT" else ""
            await tctx.master.addons.handle_lifecycle(hook(flow))
            assert flow.response.status_code == 407
            assert login not in repr(flow.request.headers.fields) and "wrong-pass" not in repr(flow.metadata)
