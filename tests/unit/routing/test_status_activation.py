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


def test_a_failed_probe_s_retry_shows_when_it_comes_before_the_next_time():
    from datetime import timedelta

    from ccswitch.activation.probe import Schedule, Slot
    from ccswitch.config.schedule import Upcoming
    from ccswitch.routing.status import next_activation_text
    on = RULES.upstream("on")
    schedule = Schedule()
    slot = Slot("on", NOW.date(), "06:00")
    schedule.started(slot)
    schedule.finished(slot, False, NOW, 120)            # failed at 05:00: tried again at 05:02
    rules = RULES.model_copy(update={"activation": RULES.activation.model_copy(update={"retries": 2})})
    retries = schedule.retries(rules)
    assert retries == {"on": NOW + timedelta(seconds=120)}
    # a time a reload took away is tried no more: no retry to show
    assert schedule.retries(rules.model_copy(update={"upstreams": ()})) == {}
    assert line(status_text(RULES, HealthBoard(), NOW, probes=schedule.upcoming(rules)), "on").endswith(
        "next activation retry thu 05:02")
    # a retry later than the next time: the next time; a disabled upstream: none
    assert next_activation_text(on, "available", NOW, Upcoming(NOW + timedelta(hours=2))) == "thu 06:00"
    assert next_activation_text(on, "disabled", NOW, Upcoming(NOW + timedelta(seconds=120))) == "none"
    # a retry not on the minute (a 429's retry-after) is told to the second
    assert next_activation_text(on, "available", NOW, Upcoming(NOW + timedelta(seconds=45))) == "retry thu 05:00:45"
    # its tries used up (the first and 2 retries): no retry waits, though the slot keeps its time
    for _ in range(2):
        schedule.started(slot)
        schedule.finished(slot, False, NOW, 120)
    assert schedule.gave_up(slot, 2) and schedule.retries(rules) == {}
    # a probe that worked waits for nothing
    other = Slot("switched", NOW.date(), "06:00")
    schedule.started(other)
    schedule.finished(other, True, NOW, 120)
    assert schedule.retries(rules) == {}


def test_a_time_probed_already_is_not_shown_as_coming_after_a_reload_moved_it_ahead():
    """Probed at 06:00 UTC; a reload to UTC-1 put 06:00 an hour ahead, but that day's 06:00 has
    been probed (it fires once a day): the next is the next day's, not one that never comes."""
    from datetime import timedelta

    from ccswitch.activation.probe import Schedule, Slot
    schedule = Schedule()
    slot = Slot("on", NOW.date(), "06:00")
    schedule.started(slot)
    schedule.finished(slot, True, NOW.replace(hour=6), 120)
    west = RULES.model_copy(update={"timezone": "Atlantic/Azores"})      # UTC-1 in December
    now = (NOW.replace(hour=6, minute=10)).astimezone(west.tz)           # 05:10 there, on the same day
    assert now.date() == NOW.date() and now.hour == 5
    text = status_text(west, HealthBoard(), now, probes=schedule.upcoming(west))
    assert line(text, "on").endswith("next activation fri 06:00"), line(text, "on")
    assert line(status_text(west, HealthBoard(), now), "on").endswith("next activation thu 06:00")
    assert now + timedelta(hours=1) > now      # (the time it would have shown: an hour ahead)
