"""Addon tests: each module's `RULES` opened as the gateway's rules file."""

import pytest

from ccswitch.mitm.gateway import Gateway


def open_gateway(tmp_path, rules_text: str) -> Gateway:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text)
    gateway = Gateway()
    gateway.rules_file.open(str(path))
    return gateway


@pytest.fixture
def gateway(request, tmp_path):
    return open_gateway(tmp_path, request.module.RULES)


@pytest.fixture
def router(gateway):
    """A router whose relay listens nowhere (port 4242 on the flows it points there)."""
    from mitmproxy.test import taddons

    from ccswitch.dial.relay import Relay
    from ccswitch.mitm.router import Router
    r = Router(gateway)
    r.relay = Relay(None)
    r.started.set()
    r.relay.port = 4242
    with taddons.context(r):
        yield r
