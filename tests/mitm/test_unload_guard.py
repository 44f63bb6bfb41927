"""The unload guard in process: a reload after the package changed on disk stops ccswitch for a
restart (and no later load serves); once ccswitch's addons are out of mitmproxy's chain with none
to follow, a stand-in answers 503 and the proxy stops.  tests/e2e/test_script_unload.py runs it
in mitmdump."""

import asyncio
import json
import logging
import os

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from ccswitch.mitm import unload_guard
from ccswitch.mitm.unload_guard import CLOSING, Closing, UnloadGuard, still_serving


@pytest.fixture
def process(tmp_path, monkeypatch):
    """A process of its own: the package mark a file of the test's, nothing loaded yet."""
    mark = tmp_path / "__init__.py"
    mark.write_text("")
    monkeypatch.setattr(unload_guard, "PACKAGE_MARK", mark)

    class Fresh(unload_guard._Process):
        first_load, loaded_from, stopping = True, None, False
    monkeypatch.setattr(unload_guard, "_Process", Fresh)
    return mark


def test_a_reload_after_the_package_changed_on_disk_is_refused_for_a_restart_and_so_is_every_later_one(
        process, caplog):
    caplog.set_level(logging.INFO, "ccswitch")
    with taddons.context():
        UnloadGuard().load(None)
        UnloadGuard().load(None)                    # an edit of addon.py alone: the package is the same
        assert not caplog.records
        os.utime(process, (1, 1))                   # an upgrade rewrote the package
        for _ in range(2):                          # (the second: pip finished a moment later)
            with pytest.raises(exceptions.OptionsError, match="ccswitch is stopping"):
                UnloadGuard().load(None)
    assert [r.getMessage() for r in caplog.records] == [unload_guard.UPGRADED]


class Master:
    """What `still_serving` reads of mitmproxy's master."""

    def __init__(self, serving: bool) -> None:
        self.should_exit = asyncio.Event()
        self.added: list = []
        self.stopped = False
        self.serving = serving

    @property
    def addons(self):
        master = self

        class Addons:
            def get(self, name):
                if name == "router":
                    return object() if master.serving else None
                return next((a for a in master.added if type(a).__name__.lower() == name), None)

            def add(self, addon):
                master.added.append(addon)
        return Addons()

    def shutdown(self) -> None:
        self.stopped = True


async def test_a_reload_that_serves_again_stops_nothing(process):
    master = Master(serving=True)
    still_serving(master, 8)
    await asyncio.sleep(0.05)
    assert not master.added and not master.stopped and not unload_guard._Process.stopping


async def test_with_none_serving_a_stand_in_refuses_and_the_proxy_stops_once_its_own_stop_is_over(process):
    from ccswitch.mitm.lifecycle import hook_task
    own_stop = asyncio.Event()
    hook_task(own_stop.wait(), "router stop")        # ccswitch's own stop, still under way
    master = Master(serving=False)
    still_serving(master, 8)
    still_serving(master, 8)                         # a second generation dropped: one stand-in, one stop
    assert [type(a) for a in master.added] == [Closing] and unload_guard._Process.stopping
    await asyncio.sleep(0.05)
    assert not master.stopped                        # its requests in flight first
    own_stop.set()
    await asyncio.sleep(0.05)
    assert master.stopped


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_the_stand_in_answers_503_in_the_request_s_api_and_refuses_a_connect(path):
    with taddons.context():
        flow = tflow.tflow()
        flow.request.path = path
        Closing().request(flow)
        body = json.loads(flow.response.content)
        assert flow.response.status_code == 503 and flow.response.headers["connection"] == "close"
        assert CLOSING in json.dumps(body) and ("type" in body) is (path == "/v1/messages")
        connect = tflow.tflow()
        connect.request.method = "CONNECT"
        Closing().http_connect(connect)
        assert connect.response.status_code == 503


async def test_a_stop_of_the_proxy_itself_brings_no_stand_in(process):
    master = Master(serving=False)
    master.should_exit.set()                         # mitmproxy stopping: its addons done, none after
    still_serving(master, 8)
    await asyncio.sleep(0.05)
    assert not master.added and not master.stopped and not unload_guard._Process.stopping


def test_the_stand_in_leaves_an_answer_already_given():
    from mitmproxy import http
    with taddons.context():
        flow = tflow.tflow()
        flow.response = http.Response.make(200, b"served already")
        Closing().request(flow)
        assert flow.response.status_code == 200 and flow.response.content == b"served already"


async def test_done_looks_after_the_reload_step_whether_ccswitch_still_serves_but_not_when_the_proxy_stops(
        process, monkeypatch):
    looked = []
    monkeypatch.setattr(unload_guard, "still_serving", lambda master, grace: looked.append((master, grace)))
    with taddons.context() as tctx:
        tctx.options.add_option("ccswitch_shutdown_grace", float, 8.0, "")
        UnloadGuard().done()                         # a reload or a dropped script
        assert not looked                            # not in the step that registers the new addons
        await asyncio.sleep(0)
        assert looked == [(tctx.master, 8.0)]
        tctx.master.should_exit.set()                # mitmproxy itself stopping
        UnloadGuard().done()
        await asyncio.sleep(0)
        assert len(looked) == 1


def test_pending_names_only_the_running_loop_s_hook_tasks():
    from ccswitch.mitm.lifecycle import hook_task, pending
    elsewhere = asyncio.new_event_loop()
    try:
        async def start():
            return hook_task(asyncio.Event().wait(), "on another loop")
        stray = elsewhere.run_until_complete(start())

        async def here():
            own = hook_task(asyncio.sleep(10), "here")
            try:
                return pending(), own
            finally:
                own.cancel()
        found, own = asyncio.run(here())
        assert found == [own] and stray not in found
    finally:
        stray.cancel()
        elsewhere.run_until_complete(asyncio.sleep(0))
        elsewhere.close()
