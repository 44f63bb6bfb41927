"""Which hosts are loopback: the listen check, the test guard and the probes ask here."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_host(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")
