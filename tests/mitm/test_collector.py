"""The garbage collector tuned once ccswitch runs: the startup heap frozen once per process, the
young generation collected less often while running, and nothing frozen that may become garbage."""

import gc
import weakref

import pytest
from mitmproxy.test import taddons

from ccswitch.mitm import collector as collector_module
from ccswitch.mitm.collector import YOUNG_THRESHOLD, CollectorTuning


class InFlight:
    """A request's objects in a reference cycle: only the collector frees them."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def fresh_process(monkeypatch):
    before = gc.get_threshold()
    monkeypatch.setattr(collector_module, "_startup_frozen", False)
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.fixture
def collector(fresh_process):
    addon = CollectorTuning()
    with taddons.context(addon) as tctx:
        yield addon, tctx
    addon.done()


def test_nothing_changes_before_running(collector):
    frozen, before = gc.get_freeze_count(), gc.get_threshold()     # CPython starts with a few hundred
    addon, tctx = collector
    tctx.configure(addon, ccswitch_gc_tuning=True)
    assert (gc.get_freeze_count(), gc.get_threshold()) == (frozen, before)


def test_running_freezes_the_startup_heap_and_collects_young_objects_less_often(collector):
    addon, _ = collector
    older, frozen = gc.get_threshold()[1:], gc.get_freeze_count()
    addon.running()
    assert gc.get_freeze_count() > frozen + 1000
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *older)


def test_done_gives_the_thresholds_back(collector):
    addon, _ = collector
    before = gc.get_threshold()
    addon.running()
    addon.done()
    assert gc.get_threshold() == before


def test_a_reload_freezes_nothing_more_so_the_requests_in_flight_stay_collectable(fresh_process):
    old = CollectorTuning()
    with taddons.context(old):
        old.running()
        frozen = gc.get_freeze_count()
        in_flight = InFlight()
        ref = weakref.ref(in_flight)
        old.done()
        new = CollectorTuning()
        with taddons.context(new):
            new.running()
            # nothing more frozen (a frozen object freed meanwhile, by another thread, lowers it)
            assert gc.get_freeze_count() <= frozen
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
            del in_flight
            gc.collect()
            assert ref() is None
            new.done()


def test_turned_off_while_running_it_unfreezes_and_back_on_it_freezes_nothing(collector):
    addon, tctx = collector
    before = gc.get_threshold()
    addon.running()
    tctx.configure(addon, ccswitch_gc_tuning=False)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    in_flight = InFlight()
    ref = weakref.ref(in_flight)
    tctx.configure(addon, ccswitch_gc_tuning=True)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    del in_flight
    gc.collect()
    assert ref() is None


def test_a_higher_threshold_of_the_users_stays(collector):
    addon, _ = collector
    gc.set_threshold(50_000, 10, 10)
    addon.running()
    assert gc.get_threshold() == (50_000, 10, 10)


def test_automatic_collection_turned_off_by_the_user_stays_off(collector):
    addon, _ = collector
    gc.set_threshold(0)
    addon.running()
    assert gc.get_threshold()[0] == 0


def test_off_from_the_start_changes_nothing(collector):
    addon, tctx = collector
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    tctx.configure(addon, ccswitch_gc_tuning=False)
    addon.running()
    assert (gc.get_freeze_count(), gc.get_threshold()) == (frozen, before)


async def test_every_32_mib_of_bodies_ended_the_heap_is_collected_once(collector):
    """mitmproxy's type checks leave each flow's body in a cycle (a caught TypeError's traceback
    holds the frame holding it): a run of large bodies held a gigabyte until a full collection."""
    import asyncio

    from mitmproxy.test import tflow, tutils
    addon, _ = collector
    gc.disable()      # no collection but the addon's
    try:
        garbage = InFlight()
        left = weakref.ref(garbage)
        del garbage
        small = tflow.tflow(req=tutils.treq(content=b"x" * (collector_module.BODY_BUDGET // 2 + 100)),
                            resp=tutils.tresp(content=b"{}"))
        addon.response(small)
        await asyncio.sleep(0.2)
        assert left() is not None                 # not yet the budget
        addon.error(small)                        # half again (an error's flow has its request body too)
        await asyncio.sleep(0.2)
        assert left() is None
    finally:
        gc.enable()


def flow_with(request: int, answer: int):
    from mitmproxy.test import tflow, tutils
    return tflow.tflow(req=tutils.treq(content=b"x" * request), resp=tutils.tresp(content=b"y" * answer))


async def collected_after(addon, flow) -> bool:
    """Whether a cycle made before the flow's end was collected after it (automatic collection off)."""
    import asyncio
    garbage = InFlight()
    left = weakref.ref(garbage)
    del garbage
    addon.response(flow)
    await asyncio.sleep(0.2)
    return left() is None


async def test_bodies_reaching_the_budget_exactly_answers_counted_bring_one_collection_and_count_afresh(collector):
    addon, _ = collector
    gc.disable()
    try:
        budget = 32 * 1024 * 1024                 # (BODY_BUDGET)
        assert await collected_after(addon, flow_with(2, budget - 2))          # the answer's bytes count
        assert not await collected_after(addon, flow_with(budget // 2, 0))     # counted afresh after it
        assert await collected_after(addon, flow_with(budget // 2, 0))
    finally:
        gc.enable()


async def test_with_automatic_collection_turned_off_by_the_user_bodies_bring_no_collection(collector):
    addon, _ = collector
    before = gc.get_threshold()
    gc.disable()
    gc.set_threshold(0)
    try:
        assert not await collected_after(addon, flow_with(collector_module.BODY_BUDGET, 0))
    finally:
        gc.set_threshold(*before)
        gc.enable()
