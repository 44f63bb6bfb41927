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


def test_a_cooldown_across_a_dst_change_ends_when_it_does_in_elapsed_time():
    # 01:30 EDT + one hour is 01:30 EST (the clocks go back): wall-clock arithmetic said 02:30
    from ccswitch.routing.status import upstream_state
    york = ZoneInfo("America/New_York")
    now = datetime(2024, 11, 3, 1, 30, tzinfo=york)          # fold 0: EDT
    health = HealthBoard(clock=lambda: 1000.0)
    health.record_rate_limit("on", "HTTP 429", seconds=3600, reset_known=True)
    state, _, until = upstream_state(RULES.upstream("on"), RULES, health, now)
    assert state == "cooling" and until.timestamp() - now.timestamp() == 3600
