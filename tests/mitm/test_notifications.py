"""The notifications addon: listens on the gateway's bus while running, posts to a loopback
receiver, and `ccswitch.notify_test` reports each hook's result."""

import asyncio
import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from ccswitch.mitm.notifier import Notifications
from ccswitch.routing.events import Event
from tests.mitm.conftest import open_gateway
from tests.support.helpers import CLIENT_KEY, KEY_A
from tests.support.loopback_guard import loopback_url
from tests.support.webhook_receiver import WebhookReceiver


def rules_text(*urls: str, events: str = "") -> str:
    hooks = "\n".join(f"  - {{url: '{url}'{events}}}" for url in urls)
    return f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
notify:
{hooks}
"""


async def wait_for(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_events_on_the_bus_reach_the_hook_once_per_occurrence(tmp_path):
    with WebhookReceiver() as receiver:
        gateway = open_gateway(tmp_path, rules_text(receiver.url()))
        gateway.allow_url = loopback_url
        addon = Notifications(gateway)
        with taddons.context(addon):
            addon.running()
            for _ in range(3):
                gateway.health.record_failure("a", f"HTTP 401 for {KEY_A} by {CLIENT_KEY}", threshold=1, cooldown=60)
            gateway.health.record_success("a")
            await wait_for(lambda: len(receiver.received) >= 2)
            await addon.done()
        bodies = receiver.bodies()
    assert [b["event"] for b in bodies] == ["cooldown", "recovered"]
    assert bodies[0]["upstream"] == "a" and bodies[0]["until"] is not None
    assert KEY_A not in str(bodies) and CLIENT_KEY not in str(bodies)
    assert bodies[0]["reason"].endswith("(last: HTTP 401 for [redacted] by [redacted])")


async def outages(tmp_path, settle: int, count: int, told_at_once: int, before_stop: int):
    """The hook's bodies after `count` outages of a moment each of upstream a, with
    `ccswitch_notify_settle` at `settle`: `told_at_once` come before the held recovery, and the
    addon stops once `before_stop` came."""
    with WebhookReceiver() as receiver:
        gateway = open_gateway(tmp_path, rules_text(receiver.url()))
        gateway.allow_url = loopback_url
        addon = Notifications(gateway)
        with taddons.context(addon) as tctx:
            tctx.configure(addon, ccswitch_notify_settle=settle)
            addon.running()
            for _ in range(count):
                gateway.health.record_failure("a", "HTTP 503", threshold=1, cooldown=60)
                gateway.health.record_success("a")
                await asyncio.sleep(0.05)
            held_since = asyncio.get_running_loop().time()
            await wait_for(lambda: len(receiver.received) >= told_at_once)
            if asyncio.get_running_loop().time() - held_since < settle - 0.5:   # (a slow machine: no verdict)
                assert len(receiver.received) == told_at_once        # the last recovery held
            await wait_for(lambda: len(receiver.received) >= before_stop)
            await addon.done()
        return receiver.bodies()


async def test_an_upstream_going_in_and_out_of_cooldown_is_told_as_one_outage(tmp_path):
    """Down, up, down again at once: flapping.  Its next recovery is told once it has lasted
    `ccswitch_notify_settle`; the cooldowns before then are taken back, and it says how many."""
    bodies = await outages(tmp_path, settle=2, count=4, told_at_once=3, before_stop=4)
    assert [b["event"] for b in bodies] == ["cooldown", "recovered", "cooldown", "recovered"]
    assert bodies[3]["reason"].endswith("(2 shorter cooldowns in between not told)")


async def test_a_recovery_still_held_is_told_when_the_proxy_stops(tmp_path):
    bodies = await outages(tmp_path, settle=600, count=2, told_at_once=3, before_stop=3)
    assert [b["event"] for b in bodies] == ["cooldown", "recovered", "cooldown", "recovered"]


def test_a_negative_settle_time_is_refused():
    addon = Notifications(None)
    with taddons.context(addon) as tctx, pytest.raises(exceptions.OptionsError, match="0 or more"):
        tctx.configure(addon, ccswitch_notify_settle=-1)


async def test_the_url_guard_applies_to_hooks(tmp_path, caplog):
    with WebhookReceiver() as receiver:
        gateway = open_gateway(tmp_path, rules_text(receiver.url()))
        gateway.allow_url = lambda url: False
        addon = Notifications(gateway)
        with taddons.context(addon):
            addon.running()
            addon.poster.policy = type(addon.poster.policy)(attempts=1)
            gateway.events.emit(Event("cooldown", "a", "down", episode="1"))
            await wait_for(lambda: "refused by the URL guard" in caplog.text)
            await addon.done()
        assert receiver.received == []


async def test_notify_test_reports_each_hook_in_the_event_log(tmp_path, caplog):
    caplog.set_level(logging.INFO, "ccswitch.notify")
    with WebhookReceiver() as good, WebhookReceiver(status=500) as bad:
        gateway = open_gateway(tmp_path, rules_text(good.url(), bad.url(), events=", events: [full]"))
        addon = Notifications(gateway)
        with taddons.context(addon):
            addon.running()
            said = addon.notify_test()
            assert said == "sending a test event to 2 hook(s); each result goes to the event log"
            await wait_for(lambda: not addon._tests)
            await addon.done()
        assert good.bodies()[0]["event"] == "test" and len(bad.received) == 1
    assert f"ccswitch notify test: hook 1 (json) 127.0.0.1:{good.port}: ok (HTTP 200)" in caplog.text
    assert f"ccswitch notify test: hook 2 (json) 127.0.0.1:{bad.port}: failed (HTTP 500)" in caplog.text
    assert "T0KEN" not in caplog.text


async def test_notify_test_without_hooks_is_a_command_error(tmp_path):
    gateway = open_gateway(tmp_path, rules_text().replace("notify:\n", ""))
    addon = Notifications(gateway)
    with taddons.context(addon):
        addon.running()
        with pytest.raises(exceptions.CommandError, match="no notify hooks"):
            addon.notify_test()
        await addon.done()


async def test_after_done_the_bus_has_no_notifier(tmp_path):
    with WebhookReceiver() as receiver:
        gateway = open_gateway(tmp_path, rules_text(receiver.url()))
        addon = Notifications(gateway)
        with taddons.context(addon):
            addon.running()
            notifier = addon.notifier
            await addon.done()
            assert notifier.offer not in gateway.events._listeners     # unsubscribed, not merely closed
            gateway.events.emit(Event("cooldown", "a", "down", episode="1"))
            await asyncio.sleep(0.1)
        assert receiver.received == []


async def test_an_occurrence_another_instance_claimed_is_not_told_here(tmp_path):
    """The addon asks the gateway's shared state before telling a claimed occurrence."""
    class ClaimedElsewhere:
        def __init__(self):
            self.asked = []

        async def claim_state(self, name, state, episode, absorbed=False):
            self.asked.append((name, state))
            return state != "cooldown"

    with WebhookReceiver() as receiver:
        gateway = open_gateway(tmp_path, rules_text(receiver.url()))
        gateway.allow_url = loopback_url
        gateway.state = state = ClaimedElsewhere()
        addon = Notifications(gateway)
        with taddons.context(addon):
            addon.running()
            gateway.health.record_failure("a", "HTTP 503", threshold=1, cooldown=60)
            gateway.health.record_success("a")
            await wait_for(lambda: len(receiver.received) >= 1)
            await addon.done()
        bodies = receiver.bodies()
    assert [b["event"] for b in bodies] == ["recovered"]
    assert state.asked == [("health:a", "cooldown"), ("health:a", "recovered")]
