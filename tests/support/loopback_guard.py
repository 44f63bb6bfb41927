"""Test-only mitmproxy addon: no connection leaves the machine.

Loaded beside addon.py in end-to-end tests: any server connection mitmproxy makes to a
non-loopback address fails before DNS or connect, and ccswitch's own upstream dialing
(requests and activation probes) is given the same check as its `allow_url` guard.
"""

import ipaddress
import logging
from urllib.parse import urlsplit

log = logging.getLogger("loopback_guard")


# deliberately independent of ccswitch's own loopback check: a safety net must not share the
# code it guards
def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    allowed = _loopback(host)
    if not allowed:
        log.info("loopback guard: refused %s", host)
    return allowed


class LoopbackGuard:
    def running(self):
        from mitmproxy import ctx
        router = ctx.master.addons.get("router")
        if router is None:
            raise RuntimeError("loopback guard: ccswitch's router addon is not loaded")
        router.gateway.allow_url = loopback_url

    def server_connect(self, data):
        address = data.server.address
        if address and not _loopback(str(address[0])):
            log.info("loopback guard: refused %s:%s", *address[:2])
            data.server.error = f"loopback guard: {address[0]} is not a loopback address"


addons = [LoopbackGuard()]
