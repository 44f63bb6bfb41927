"""The early refusal's hooks as mitmproxy calls them, a script reload included."""

import asyncio

from mitmproxy.test import taddons

from ccswitch.mitm.early import EarlyRefusal
from ccswitch.mitm.key_shield import KeyShield
from tests.support.helpers import KEY_A

RULES = f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
"""


async def test_a_script_reload_can_start_and_stop_it_from_sync_code(gateway):
    # an async `done` raised when mitmproxy removed the addons of a reloaded script
    shield = KeyShield()
    early = EarlyRefusal(gateway, shield)
    with taddons.context() as tctx:
        tctx.master.addons.add(shield, early)
        early.running()
        await early._starting
        assert early.answers.port
        tctx.master.addons.remove(early)          # as a script reload does: its `done` from sync code
        await asyncio.sleep(0.05)
    assert early.answers.port == 0               # stopped: a request refused now is read and refused as before


async def test_a_flow_answered_from_its_head_shows_an_empty_body_not_none(gateway):
    """Its body went nowhere as it came: mitmweb's view of a body that is None was a 500."""
    from mitmproxy.test import tflow, tutils

    from ccswitch.mitm.router_options import add_options
    shield = KeyShield()
    early = EarlyRefusal(gateway, shield)
    with taddons.context() as tctx:
        add_options(tctx.options)
        tctx.master.addons.add(shield, early)
        early.running()
        await early._starting
        flow = tflow.tflow()
        flow.request.method, flow.request.host, flow.request.path = "POST", "api.anthropic.com", "/v1/messages"
        flow.request.scheme, flow.request.port = "https", 443
        flow.request.headers["content-length"] = str(1 << 30)
        flow.request.raw_content = None       # mitmproxy holds no body it is told to stream
        shield.requestheaders(flow)
        early.requestheaders(flow)
        assert flow.request.port == early.answers.port     # refused from its head: 413
        flow.response = tutils.tresp()
        early.responseheaders(flow)
        early.done()
        await asyncio.sleep(0.05)
    assert flow.request.raw_content == b"" and flow.request.headers["content-length"] == str(1 << 30)
