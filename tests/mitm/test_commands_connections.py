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


def test_a_reload_that_mends_the_proxy_password_ends_the_cooldown_the_proxy_caused(gateway, tmp_path):
    # the gateway hands each upstream's proxy (credentials included) to the health board's
    # sync: a mended password, the rest of the rules alike, need not wait the cooldown out
    from tests.support.helpers import reload_settled
    gateway.sync_upstreams()   # as at start-up
    refused = "proxy socks5h://127.0.0.1:1080: authentication failed (authentication failure)"
    gateway.health.record_failure("official", refused, threshold=1, cooldown=600)
    gateway.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=600)
    (tmp_path / "rules.yaml").write_text(RULES.replace(PASSWORD, "mended-proxy-secret"))
    assert reload_settled(gateway.rules_file)
    gateway.sync_upstreams()
    assert gateway.health.cooling_until("official") is None
    assert gateway.health.cooling_until("relay") is not None     # reached directly: its 503 is its own
