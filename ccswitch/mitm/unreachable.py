"""An `intercept` host this machine cannot reach, for what ccswitch does not route.

A machine that reaches only relays: Claude Code's settings lookups and other unrouted calls to
api.anthropic.com fail with mitmproxy's 502, which the client retries for many seconds, and the
log shows only the DNS or connect error. `ccswitch_offline` answers them at once; said once a host.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.scope import host_named
from ccswitch.report.terminal import printable

log = logging.getLogger("ccswitch")
#: mitmproxy's words for a connection given up before it was made, not refused by the host
CANCELLED = ("connection cancelled",)


class UnreachableHost:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.told: set[str] = set()     # the hosts the log named

    def server_connect_error(self, data: ServerConnectionHookData) -> None:
        host = host_named(str(data.server.address[0])) if data.server.address else ""
        error = str(data.server.error or "")
        if (ctx.options.ccswitch_offline or host in self.told or host not in self.gateway.rules.intercept
                or error in CANCELLED or data.server.timestamp_start is None):
            return      # the client left, the proxy stops, an addon killed it unopened: nothing of the host's reach
        self.told.add(host)
        log.warning("ccswitch: %s cannot be reached from here (%s): if this machine reaches only your relays, "
                    "--set ccswitch_offline=true answers the requests ccswitch does not route there at once "
                    "(clients retry them for many seconds otherwise)", host, printable(error[:200]))
