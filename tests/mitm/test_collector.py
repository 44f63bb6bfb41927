"""The garbage collector tuned once ccswitch runs, and given back as it was."""

import gc

import pytest
from mitmproxy.test import taddons

from ccswitch.mitm.collector import YOUNG_THRESHOLD, CollectorTuning


@pytest.fixture
def collector():
    before = gc.get_threshold()
    addon = CollectorTuning()
    with taddons.context(addon) as tctx:
        yield addon, tctx
    addon.done()
    gc.unfreeze()
    gc.set_threshold(*before)


def test_nothing_changes_before_running(collector):
    frozen = gc.get_freeze_count()     # CPython starts with a few hundred
    addon, tctx = collector
    tctx.configure(addon, ccswitch_gc_tuning=True)
    assert gc.get_freeze_count() == frozen
    assert gc.get_threshold()[0] < YOUNG_THRESHOLD


def test_running_freezes_the_startup_heap_and_collects_young_objects_less_often(collector):
    addon, _ = collector
    older = gc.get_threshold()[1:]
    frozen = gc.get_freeze_count()
    addon.running()
    assert gc.get_freeze_count() > frozen + 1000
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *older)


def test_done_gives_the_collector_back_as_it_was(collector):
    addon, _ = collector
    before = gc.get_threshold()
    addon.running()
    addon.done()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_a_higher_threshold_of_the_users_stays(collector):
    addon, _ = collector
    gc.set_threshold(50_000, 10, 10)
    addon.running()
    assert gc.get_threshold() == (50_000, 10, 10)


def test_the_option_turns_it_off_and_on_while_running(collector):
    addon, tctx = collector
    before = gc.get_threshold()
    addon.running()
    tctx.configure(addon, ccswitch_gc_tuning=False)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    tctx.configure(addon, ccswitch_gc_tuning=True)
    assert gc.get_freeze_count() > 0


def test_off_from_the_start_changes_nothing(collector):
    addon, tctx = collector
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    tctx.configure(addon, ccswitch_gc_tuning=False)
    addon.running()
    assert gc.get_freeze_count() == frozen
    assert gc.get_threshold() == before
