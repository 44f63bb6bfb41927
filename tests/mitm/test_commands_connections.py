"""ccswitch.status shows each upstream's open and waiting connections (from the router's client)
and the proxy it is reached through, never the proxy's credentials."""

from datetime import datetime

from mitmproxy.test import taddons

from ccswitch.config.load import parse_rules
from ccswitch.mitm.commands import Commands
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.status import connections_text, status_text

PASSWORD = "status-proxy-secret"
RULES = f"""
usage_db: usage.db
upstream_proxy: 'socks5h://me:{PASSWORD}@127.0.0.1:1080'
upstreams:
  - {{name: official, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k, max_connections: 4}}
  - {{name: relay, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k, proxy: direct}}
routes: {{claude: [official, relay]}}
"""


def test_status_shows_connections_and_the_proxy_without_credentials(gateway):
    gateway.connections = lambda: {"official": (4, 7)}
    commands = Commands(gateway)
    with taddons.context(commands) as tctx:
        lines = tctx.command(commands.status)
    official = next(line for line in lines if line.strip().startswith("official ["))
    relay = next(line for line in lines if line.strip().startswith("relay ["))
    assert "connections 4 open of max 4, 7 waiting; via socks5h://127.0.0.1:1080" in official
    assert "connections 0 open, 0 waiting" in relay and "via" not in relay
    assert PASSWORD not in "\n".join(lines) and "me:" not in "\n".join(lines)


def test_status_text_without_connection_data_says_nothing_of_them():
    rules = parse_rules(RULES)
    text = status_text(rules, HealthBoard(), datetime.now(rules.tz))
    assert "connections" not in text and "via" not in text
    assert connections_text(rules.upstreams[0], {}) == "connections 0 open of max 4, 0 waiting; via socks5h://127.0.0.1:1080"


async def test_the_router_installs_its_clients_counts(gateway):
    from ccswitch.mitm.router import Router
    router = Router(gateway)
    with taddons.context(router):
        router.running()
        await router.starting
        try:
            assert gateway.connections == router.dialer.client.connection_counts and gateway.connections() == {}
        finally:
            await router.relay.stop()
            await router.dialer.aclose()
