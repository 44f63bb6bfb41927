import pytest

from ccswitch.notify.dedupe import Deduper
from ccswitch.routing.events import Event


def event(kind="cooldown", upstream="a", episode="1", route=None) -> Event:
    return Event(kind=kind, upstream=upstream, reason="r", route=route, episode=episode)


def test_one_occurrence_is_news_once():
    seen = Deduper()
    assert seen.first(event())
    assert not any(seen.first(event()) for _ in range(100))


def test_another_episode_upstream_kind_or_route_is_news():
    seen = Deduper()
    assert seen.first(event())
    assert seen.first(event(episode="2"))
    assert seen.first(event(upstream="b"))
    assert seen.first(event(kind="recovered"))
    assert seen.first(event(kind="exhausted", upstream=None, route="claude"))
    assert seen.first(event(kind="exhausted", upstream=None, route="codex"))
    assert not seen.first(event(kind="exhausted", upstream=None, route="codex"))


def test_memory_is_bounded_and_forgets_the_oldest_first():
    seen = Deduper(capacity=3)
    for episode in "1234":
        assert seen.first(event(episode=episode))
    assert len(seen) == 3
    assert seen.first(event(episode="1"))        # forgotten: news again
    assert not seen.first(event(episode="4"))


def test_a_repeat_keeps_an_ongoing_occurrence_remembered():
    seen = Deduper(capacity=2)
    seen.first(event(episode="1"))
    seen.first(event(episode="2"))
    seen.first(event(episode="1"))               # still happening
    seen.first(event(episode="3"))               # pushes out 2, not 1
    assert not seen.first(event(episode="1"))


def test_capacity_must_hold_something():
    with pytest.raises(ValueError):
        Deduper(capacity=0)
