"""mitmproxy commands ccswitch.status / use / reset / enable / disable."""

from datetime import datetime

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from ccswitch.clock import wall_text
from ccswitch.mitm.commands import Commands
from ccswitch.routing.plan import plan
from tests.support.helpers import KEY_A, hours_closed_now

NIGHT = hours_closed_now()     # out of its hours whenever the tests run
RULES = f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: b, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}', enabled: false}}
  - {{name: night, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}',
     hours: ["{NIGHT}"], activate_at: ["06:00"]}}
  - {{name: spare, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{claude: [a, b, night]}}
"""


@pytest.fixture
def setup(gateway):
    commands = Commands(gateway)
    with taddons.context(commands) as tctx:
        yield gateway, commands, tctx


def names(gateway):
    rules = gateway.rules
    return [u.name for u in plan(rules, "claude", "m", gateway.health, datetime.now(rules.tz)).candidates]


def test_status_lists_every_state_without_keys(setup):
    gateway, commands, tctx = setup
    for _ in range(3):
        gateway.health.record_failure("a", "HTTP 529", threshold=3, cooldown=600)
    text = "\n".join(tctx.command(commands.status))
    assert "a [anthropic; routes: claude]" in text and "cooling down until" in text
    assert "failures 3" in text and "last error: HTTP 529" in text
    assert "b [anthropic" in text and "disabled" in text
    assert f"outside its hours ({NIGHT})" in text
    assert "next activation" in text
    assert KEY_A not in text


def test_status_shows_a_failed_activation_probe_s_retry(setup):
    from datetime import timedelta

    from ccswitch.activation.probe import Slot
    from ccswitch.config.schedule import weekday_time
    gateway, commands, tctx = setup
    now = datetime.now(gateway.rules.tz)
    slot = Slot("night", now.date(), "06:00")
    gateway.activations.started(slot)
    gateway.activations.finished(slot, False, now, 1)        # the Activator's schedule is the gateway's
    [line] = [line for line in tctx.command(commands.status) if line.strip().startswith("night [")]
    assert line.endswith(f"next activation retry {weekday_time(now + timedelta(seconds=1), seconds=True)}"), line


def test_status_says_when_the_rules_file_s_last_edit_is_not_in_force(setup):
    # only the live page and the log said it: a mitmweb user reading ccswitch.status did not know
    gateway, commands, tctx = setup
    assert not any("not in force" in line or "last good rules" in line for line in tctx.command(commands.status))
    gateway.rules_file.not_applied = ("the rules file's last edit is invalid (1 problem)", 1_800_000_000.0)
    lines = tctx.command(commands.status)
    assert lines[1].startswith("the rules file's last edit is invalid (1 problem) (since ")
    assert "the last good rules stay in force" in lines[1]


def test_status_shows_utilization_its_window_reset_full_and_bound_sessions(setup):
    import time
    gateway, commands, tctx = setup
    reset = (int(time.time()) // 60 + 60) * 60     # on a minute's first second, as resets often are
    gateway.quota.record("a", [("anthropic-ratelimit-unified-5h-utilization", "0.97"),
                               ("anthropic-ratelimit-unified-5h-reset", str(int(reset)))])
    gateway.sessions.bind("claude", "s1", "a", ttl=3600)
    gateway.sessions.bind("claude", "s2", "a", ttl=3600)
    text = "\n".join(tctx.command(commands.status))
    line = next(x for x in text.splitlines() if x.strip().startswith("a ["))
    tz = gateway.rules.tz     # the time alone today; with its date near midnight, when it is tomorrow
    at = wall_text(datetime.fromtimestamp(reset, tz), datetime.now(tz))
    assert f"utilization 0.97 (5h window, resets {at}); full" in line and "2 session(s) bound" in line
    assert f"; full until {at}" in line and "available" not in line     # its state says so too
    assert ("-" in at) is (datetime.fromtimestamp(reset, tz).date() != datetime.now(tz).date())
    tctx.command(commands.reset, "a")          # a reset forgets what the windows said too
    assert "utilization" not in "\n".join(tctx.command(commands.status))


def test_disable_enable_and_reset(setup):
    gateway, commands, tctx = setup
    assert names(gateway) == ["a"]
    tctx.command(commands.enable, "b")
    assert names(gateway) == ["a", "b"]
    tctx.command(commands.disable, "a")
    assert names(gateway) == ["b"]
    for _ in range(3):
        gateway.health.record_failure("b", "HTTP 503", threshold=3, cooldown=600)
    tctx.command(commands.reset, "b")
    assert gateway.health.cooling_until("b") is None and gateway.health.get("b").failures == 0
    gateway.health.sync(gateway.rules_file.fingerprints())    # a reload ends manual switches
    assert names(gateway) == ["a"]


def test_use_prefers_an_upstream_for_a_while(setup):
    gateway, commands, tctx = setup
    tctx.command(commands.enable, "b")
    tctx.command(commands.use, "b", "1")
    assert names(gateway) == ["b", "a"]
    gateway.health.preferred = ("b", gateway.health.clock() - 1)
    assert names(gateway) == ["a", "b"]


def test_use_of_an_upstream_that_serves_nothing_now_says_so(setup):
    # it answered "preferring …" while the upstream was disabled or over its budget: a silent no-op
    gateway, commands, tctx = setup
    said = tctx.command(commands.use, "b", "5")          # b is `enabled: false` in these rules
    assert said.endswith("(ccswitch.unuse ends it); it serves nothing now: disabled")
    assert gateway.health.preferred_name() == "b"          # preferred all the same: it may serve within the span
    assert "serves nothing" not in tctx.command(commands.use, "a", "5")


def test_use_of_an_upstream_in_no_route_is_refused_and_the_preference_in_force_stays(setup):
    gateway, commands, tctx = setup
    assert tctx.command(commands.use, "a", "1").startswith("preferring a for 1 minute, until ")
    with pytest.raises(exceptions.CommandError, match=r"^spare is in no route, so preferring it would change "
                                                      r"nothing \(the preference in force stays\)"):
        tctx.command(commands.use, "spare", "5")
    assert gateway.health.preferred_name() == "a"


def test_unknown_upstream_is_a_clear_command_error_that_lists_the_known_ones(setup):
    from ccswitch.mitm.activator import Activator
    gateway, commands, tctx = setup
    activator = Activator(gateway)
    for command, *args in ((commands.reset,), (commands.use, "10"), (commands.disable,), (commands.enable,),
                           (activator.activate,)):
        with pytest.raises(exceptions.CommandError, match=r"^no upstream named 'zzz' \(known: a, b, night, spare\)$"):
            tctx.command(command, "zzz", *args)


def test_all_cooling_route_still_tries_the_two_that_recover_first(setup):
    gateway, commands, tctx = setup
    tctx.command(commands.enable, "b")
    gateway.health.record_failure("a", "x", threshold=1, cooldown=600)
    gateway.health.record_failure("b", "x", threshold=1, cooldown=60)
    assert names(gateway) == ["b", "a"]


def test_use_says_until_when_status_shows_the_time_left_and_unuse_ends_it(setup):
    gateway, commands, tctx = setup
    said = tctx.command(commands.use, "a", "20")
    assert said.startswith("preferring a for 20 minutes, until ") and "ccswitch.unuse" in said
    head = tctx.command(commands.status)[0]
    assert "preferring a for 20 more minute(s)" in head
    assert tctx.command(commands.unuse) == "no longer preferring a"
    assert gateway.health.preferred_name() is None and "preferring" not in tctx.command(commands.status)[0]
    assert tctx.command(commands.unuse) == "no upstream was preferred"
    assert tctx.command(commands.use, "b", "0") == "no upstream was preferred"      # 0 with none: as unuse
    tctx.command(commands.use, "a", "5")
    assert tctx.command(commands.use, "b", "0") == "b was not preferred (a is: ccswitch.unuse ends that)"
    assert gateway.health.preferred_name() == "a"        # another's 0 leaves it
    assert tctx.command(commands.use, "a", "0") == "no longer preferring a"


def test_use_refuses_minutes_outside_0_to_a_year_or_not_whole(setup):
    gateway, commands, tctx = setup
    tctx.command(commands.use, "a", "5")
    for bad in ("-1", "-5", "525601", "99999999999999", "1.5", "abc", "", "٣"):
        with pytest.raises(exceptions.CommandError, match=r"^MINUTES must be a whole number from 0 to 525600 "
                                                          rf"\(a year; 0 ends the preference\), not {bad!r}$"):
            tctx.command(commands.use, "a", bad)
        assert gateway.health.preferred_name() == "a"       # the preference in force is left alone
    assert tctx.command(commands.use, "a", "525600").startswith("preferring a for 525600 minutes, until ")


def use_at(tmp_path, timezone: str, wall: datetime, minutes: int) -> str:
    from tests.mitm.conftest import open_gateway
    gateway = open_gateway(tmp_path, RULES + f"timezone: {timezone}\n")
    gateway.health.wall = lambda: wall
    commands = Commands(gateway)
    with taddons.context(commands) as tctx:
        return tctx.command(commands.use, "a", str(minutes))


@pytest.mark.parametrize(("wall", "minutes", "until"), [
    ((17, 6), 20, "until 02:26"),                     # Tokyo: 02:06 on the 5th, the same day
    ((17, 6), 2000, "until 2026-12-06 11:26"),        # two days later: the date too
    ((23, 30), 60, "until 09:30"),                    # UTC's date changes, Tokyo's does not
    ((14, 30), 60, "until 2026-12-05 00:30"),         # Tokyo's date changes, UTC's does not
])
def test_use_names_the_date_when_the_end_is_not_today_in_the_rules_zone(tmp_path, wall, minutes, until):
    from datetime import UTC
    said = use_at(tmp_path, "Asia/Tokyo", datetime(2026, 12, 4, *wall, tzinfo=UTC), minutes)
    assert said == f"preferring a for {minutes} minutes, {until} (ccswitch.unuse ends it)"


def test_use_ends_at_the_right_wall_time_across_a_clock_change(tmp_path):
    from datetime import UTC
    # Berlin's clocks go back at 03:00 CEST on 2026-10-25: 01:30 CEST plus two hours is 02:30 CET
    said = use_at(tmp_path, "Europe/Berlin", datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 120)
    assert said.startswith("preferring a for 120 minutes, until 02:30 ")


def test_enable_refuses_an_upstream_whose_header_variable_is_unset(tmp_path):
    from ccswitch.mitm.gateway import Gateway
    path = tmp_path / "rules.yaml"
    path.write_text(f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: relay, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}', enabled: false,
     headers: {{x-relay-user: '${{CCSWITCH_TEST_UNSET_USER}}', x-other: fixed}}}}
routes: {{claude: [a, relay]}}
""")
    gateway = Gateway()
    gateway.rules_file.open(str(path))          # accepted: the upstream is off
    relay = gateway.rules.upstream("relay")
    assert relay.headers == {"x-other": "fixed"} and relay.unset_headers == ("x-relay-user",)
    commands = Commands(gateway)
    with taddons.context(commands) as tctx:
        with pytest.raises(exceptions.CommandError) as refused:
            tctx.command(commands.enable, "relay")
    assert str(refused.value) == ("relay lacks its header(s) x-relay-user (${CCSWITCH_TEST_UNSET_USER} not set where "
                                  "ccswitch runs): set it and restart ccswitch")
    assert names(gateway) == ["a"]
    from ccswitch.mitm.activator import Activator
    activator = Activator(gateway)
    with taddons.context(activator) as tctx:
        with pytest.raises(exceptions.CommandError, match=r"lacks its header\(s\) x-relay-user.*nothing to activate"):
            tctx.command(activator.activate, "relay")


def test_every_command_can_be_run_from_mitmwebs_command_bar():
    """mitmweb posts a command to /commands/NAME and routes only names of [a-z.]: a `_` is a 404."""
    import re

    from mitmproxy.tools.web import app

    from ccswitch.mitm import make_addons
    route = next(handler[0] for handler in app.handlers if "(?P<cmd>" in handler[0])
    names = [method.command_name for addon in make_addons() for method in vars(type(addon)).values()
             if hasattr(method, "command_name")]
    assert "ccswitch.notify.test" in names and "ccswitch.status" in names
    for name in names:
        assert re.fullmatch(route.replace("(?P<cmd>", "(?:").removeprefix("/commands/"), name), name


def test_every_command_s_help_reads_as_one_line_of_single_spaces(gateway):
    # mitmproxy wraps a docstring as it is: a second line's indent read "outside its         hours"
    from ccswitch.mitm.activator import Activator
    from ccswitch.mitm.notifier import Notifications
    with taddons.context(Commands(gateway), Activator(gateway), Notifications(gateway)) as tctx:
        helps = {name: cmd.help for name, cmd in tctx.master.commands.commands.items() if name.startswith("ccswitch.")}
    assert len(helps) == 8 and all(helps.values()), helps
    assert not [name for name, text in helps.items() if "  " in text], helps
    assert "outside its hours" in helps["ccswitch.status"]
