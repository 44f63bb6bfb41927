"""An intercept host this machine cannot reach, for what ccswitch does not route: the log says
once how ccswitch_offline answers such calls at once."""

import logging

from mitmproxy import connection
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow

from ccswitch.mitm import make_addons
from ccswitch.mitm.router import Router
from ccswitch.mitm.unreachable import UnreachableHost

RULES = "intercept: [api.anthropic.com, api.openai.com]\n"


def failed(host: str, error: str = "[Errno -2] Name or service not known", tried: bool = True
           ) -> ServerConnectionHookData:
    server = connection.Server(address=(host, 443))
    server.error = error
    server.timestamp_start = 1.0 if tried else None     # mitmproxy sets it as it starts connecting
    return ServerConnectionHookData(server=server, client=tflow.tclient_conn())


def test_an_intercept_host_out_of_reach_is_said_once_with_the_offline_option(gateway, caplog):
    addon, router = UnreachableHost(gateway), Router(gateway)     # the router declares ccswitch_offline
    caplog.set_level(logging.WARNING, logger="ccswitch")
    with taddons.context(router, addon) as tctx:
        addon.server_connect_error(failed("api.anthropic.com", "connection cancelled"))     # the client left
        addon.server_connect_error(failed("api.anthropic.com", "killed by an addon", tried=False))
        for host in ("api.anthropic.com", "API.anthropic.com.", "github.com", "127.0.0.1"):
            addon.server_connect_error(failed(host))
        said = [r.getMessage() for r in caplog.records]
        assert said == ["ccswitch: api.anthropic.com cannot be reached from here ([Errno -2] Name or service not "
                        "known): if this machine reaches only your relays, --set ccswitch_offline=true answers the "
                        "requests ccswitch does not route there at once (clients retry them for many seconds "
                        "otherwise)"]
        tctx.configure(router, ccswitch_offline=True)
        addon.server_connect_error(failed("api.openai.com"))
    assert len(caplog.records) == 1                           # offline already: nothing to advise


def test_the_unreachable_host_addon_is_loaded():
    assert any(isinstance(addon, UnreachableHost) for addon in make_addons())
