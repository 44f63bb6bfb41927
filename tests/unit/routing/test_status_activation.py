"""`ccswitch.status`: the next activation only of an upstream that will be probed."""

from datetime import datetime
from zoneinfo import ZoneInfo

from ccswitch.config.load import parse_rules
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.status import status_text

RULES = parse_rules("""
timezone: UTC
upstreams:
  - {name: on, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k, activate_at: ["06:00"]}
  - {name: off, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k, enabled: false, activate_at: ["06:00"]}
  - {name: switched, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k, activate_at: ["06:00"]}
""")
NOW = datetime(2026, 12, 3, 5, 0, tzinfo=ZoneInfo("UTC"))     # a Thursday


def line(text, name):
    return next(row for row in text.splitlines() if row.strip().startswith(f"{name} ["))


def test_a_disabled_upstream_shows_no_next_activation():
    health = HealthBoard()
    health.switch("switched", False)            # ccswitch.disable
    text = status_text(RULES, health, NOW)
    assert line(text, "on").endswith("next activation thu 06:00")
    assert line(text, "off").endswith("next activation none")
    assert line(text, "switched").endswith("next activation none")
    health.switch("off", True)                  # ccswitch.enable overrides the rules
    assert line(status_text(RULES, health, NOW), "off").endswith("next activation thu 06:00")
