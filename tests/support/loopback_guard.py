"""Test-only mitmproxy addon: no connection leaves the machine.

Loaded beside addon.py in end-to-end tests; any server connection to a
non-loopback address fails before DNS or connect (the dialer has its own guard,
`ccswitch_loopback_only`).
"""

import ipaddress
import logging

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


class LoopbackGuard:
    def server_connect(self, data):
        address = data.server.address
        if address and not _loopback(str(address[0])):
            log.info("loopback guard: refused %s:%s", *address[:2])
            data.server.error = f"loopback guard: {address[0]} is not a loopback address"


addons = [LoopbackGuard()]
