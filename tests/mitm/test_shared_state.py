"""The shared state's place in the addon: refused at start-up when it cannot be had, opened when
the proxy runs, re-opened only when a reload changes `state`, and the commands steer it."""


import asyncio

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from ccswitch.mitm.commands import Commands
from ccswitch.mitm.shared_state import SharedStateSync
from ccswitch.routing.state import InMemoryState
from ccswitch.shared.redis_state import RedisState
from tests.mitm.conftest import open_gateway
from tests.support.helpers import KEY_A, eventually

UPSTREAMS = f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: b, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{claude: [a, b]}}
"""


async def test_without_state_the_gateway_stays_in_memory(tmp_path):
    gateway = open_gateway(tmp_path, UPSTREAMS)
    await SharedStateSync(gateway).running()
    assert isinstance(gateway.state, InMemoryState) and gateway.health.on_change is None
    await SharedStateSync(gateway).done()


async def test_the_state_opens_when_running_and_reopens_only_when_a_reload_changes_it(tmp_path, redis_server):
    gateway = open_gateway(tmp_path, f"state: {redis_server.url(0)}\n" + UPSTREAMS)
    sync = SharedStateSync(gateway)
    with taddons.context(sync):
        await sync.running()
        first = gateway.state
        assert isinstance(first, RedisState) and gateway.health.on_change is not None
        await eventually(lambda: first.up)
        await gateway.open_state()                     # the same rules: the same connection
        assert gateway.state is first
        (tmp_path / "rules.yaml").write_text(f"state: {redis_server.url(1)}\n" + UPSTREAMS)
        # the watcher's reload: a change is applied once it reads the same twice
        await eventually(lambda: gateway.rules_file.reload_if_changed() or gateway.rules.state.db == 1)
        await gateway.open_state()
        assert gateway.state is not first and gateway.state.channel == "ccswitch:changes:1"
        assert first._task is None                     # the old one was stopped
        await sync.done()
        assert isinstance(gateway.state, InMemoryState)


async def reloaded_to_another_db(tmp_path, redis_server, monkeypatch):
    """A gateway sharing through database 0, whose rules now say database 1 (not yet re-opened):
    (the gateway, the state it runs, the states opened from here on)."""
    gateway = open_gateway(tmp_path, f"state: {redis_server.url(0)}\n" + UPSTREAMS)
    await gateway.open_state()
    first = gateway.state
    await eventually(lambda: first.up)
    (tmp_path / "rules.yaml").write_text(f"state: {redis_server.url(1)}\n" + UPSTREAMS)
    await eventually(lambda: gateway.rules_file.reload_if_changed() or gateway.rules.state.db == 1)
    opened = []
    real_start = RedisState.start

    async def start(self, boards):
        opened.append(self)
        await real_start(self, boards)
    monkeypatch.setattr(RedisState, "start", start)
    return gateway, first, opened


async def test_two_reloads_at_once_leave_one_state_running(tmp_path, redis_server, monkeypatch):
    # `set ccswitch_rules` and the file watcher both re-opened it while the old one drained: each
    # built a new one, and the first was never stopped (its supervisor ran on, sharing twice)
    gateway, first, opened = await reloaded_to_another_db(tmp_path, redis_server, monkeypatch)
    await asyncio.gather(gateway.open_state(), gateway.open_state())
    assert opened == [gateway.state] and first._task is None
    await gateway.close_state()
    assert all(state._task is None for state in opened)


async def test_a_stop_during_a_reload_s_reopening_leaves_no_state_running(tmp_path, redis_server, monkeypatch):
    # the shutdown's close and a reload's open at once: the close stopped the old state while the
    # open replaced it, and the new one ran on after the stop, sharing for an instance gone
    gateway, first, opened = await reloaded_to_another_db(tmp_path, redis_server, monkeypatch)
    await asyncio.gather(gateway.open_state(), gateway.close_state())
    assert isinstance(gateway.state, InMemoryState) and first._task is None
    assert all(state._task is None for state in opened)


async def test_commands_given_to_one_instance_hold_on_the_other(tmp_path, redis_url):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = open_gateway(tmp_path / "one", f"state: {redis_url}\n" + UPSTREAMS)
    two = open_gateway(tmp_path / "two", f"state: {redis_url}\n" + UPSTREAMS)
    for gateway in (one, two):
        await gateway.open_state()
    await eventually(lambda: one.state.up and two.state.up)
    commands = Commands(one)
    with taddons.context(commands) as tctx:
        tctx.command(commands.use, "b", "10")
        tctx.command(commands.disable, "a")
        await eventually(lambda: two.health.preferred_name() == "b" and not two.health.enabled("a", True))
        tctx.command(commands.unuse)
        tctx.command(commands.enable, "a")
        await eventually(lambda: two.health.preferred_name() is None and two.health.enabled("a", False))
    for gateway in (one, two):
        await gateway.close_state()


def test_a_state_this_installation_cannot_reach_stops_the_start(tmp_path, monkeypatch):
    gateway = open_gateway(tmp_path, "state: redis://127.0.0.1:6379/0\n" + UPSTREAMS)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    sync = SharedStateSync(gateway)
    with taddons.context(sync), pytest.raises(exceptions.OptionsError, match="redis package"):
        sync.configure({"ccswitch_rules"})
