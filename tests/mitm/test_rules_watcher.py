"""The rules watcher while the proxy runs: it outlives any failure of a reload, and another rules
file named at run time applies in full (ledger and shared state included)."""

import asyncio

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.rules_watcher import RulesWatcher, misspelt_options
from tests.support.helpers import KEY_A, eventually

RULES = f"""
usage_db: {{db}}
upstreams:
  - {{{{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}}}
routes: {{{{claude: [a]}}}}
"""


async def test_a_reload_that_fails_unexpectedly_is_logged_and_reloading_goes_on(tmp_path, caplog, monkeypatch):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.format(db=tmp_path / "a.db"))
    gateway = Gateway()
    gateway.rules_file.open(str(path))
    watcher = RulesWatcher(gateway)
    real, calls = gateway.rules_file.reload_if_changed, []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in a reload")
        return real()

    monkeypatch.setattr(gateway.rules_file, "reload_if_changed", flaky)
    watcher.running()
    try:
        await eventually(lambda: calls)
        path.write_text(RULES.format(db=tmp_path / "a.db").replace("claude: [a]", "claude: [a], chat: [a]"))
        await eventually(lambda: gateway.rules.routes.for_route("chat") == ("a",))
    finally:
        watcher.done()
    assert "could not be reloaded" in caplog.text and "a bug in a reload" in caplog.text


async def test_another_rules_file_named_while_running_moves_the_ledger_too(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(RULES.format(db=tmp_path / "a.db"))
    second.write_text(RULES.format(db=tmp_path / "b.db"))
    gateway = Gateway()
    watcher = RulesWatcher(gateway)
    with taddons.context(watcher) as tctx:
        tctx.configure(watcher, ccswitch_rules=str(first))
        gateway.open_ledger(True)
        assert gateway.ledger.path == tmp_path / "a.db"
        watcher.running()
        try:
            tctx.configure(watcher, ccswitch_rules=str(second))
            await eventually(lambda: gateway.ledger.path == tmp_path / "b.db")
        finally:
            watcher.done()
            await gateway.close_state()
            gateway.close()


async def test_a_refused_rules_file_keeps_the_running_rules_and_their_switches(tmp_path, caplog):
    # mitmproxy names the old file again as it takes the refused value back: that was applied
    # as a new file, and `ccswitch.disable` was dropped with nothing edited
    first = tmp_path / "a.yaml"
    first.write_text(RULES.format(db=tmp_path / "a.db"))
    gateway = Gateway()
    watcher = RulesWatcher(gateway)
    with taddons.context(watcher) as tctx:
        tctx.configure(watcher, ccswitch_rules=str(first))
        watcher.running()
        try:
            gateway.health.switch("a", False)
            for refused in (tmp_path / "nope.yaml", tmp_path / "broken.yaml"):
                refused.with_name("broken.yaml").write_text("upstreams: [")
                caplog.clear()
                with pytest.raises(exceptions.OptionsError, match="invalid ccswitch rules"):
                    tctx.configure(watcher, ccswitch_rules=str(refused))
                assert tctx.options.ccswitch_rules == str(first) and gateway.rules_file.path == first
                await asyncio.sleep(0.05)
                assert not gateway.health.enabled("a", True) and "rules loaded" not in caplog.text
            first.write_text(first.read_text() + "\n# an edit\n")     # an edit that takes effect drops them
            tctx.configure(watcher, ccswitch_rules=str(first))
            await eventually(lambda: gateway.health.enabled("a", True))
        finally:
            watcher.done()
            await gateway.close_state()
            gateway.close()


def test_only_ccswitch_options_no_addon_declares_are_told_with_the_closest_one():
    known = ["ccswitch_rules", "ccswitch_ledger", "ccswitch_offline", "listen_host"]
    assert misspelt_options({"ccswitch_rule": "x", "ccswitch_ledgr": "false", "other_script_option": "1"}, known) == [
        "ccswitch: no option is called ccswitch_ledgr, so it does nothing: did you mean ccswitch_ledger?",
        "ccswitch: no option is called ccswitch_rule, so it does nothing: did you mean ccswitch_rules?"]
    assert misspelt_options({"ccswitch_zzz": "1"}, known) == [
        "ccswitch: no option is called ccswitch_zzz, so it does nothing: "
        "ccswitch's are ccswitch_ledger, ccswitch_offline, ccswitch_rules"]
    assert misspelt_options({}, known) == []
