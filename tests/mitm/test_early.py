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
