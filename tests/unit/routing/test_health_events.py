"""The health board announces an outage once: `cooldown` when it starts, `recovered` at the next 2xx."""

from datetime import UTC, datetime, timedelta

from ccswitch.routing.events import Events
from ccswitch.routing.health import HealthBoard

WALL = datetime(2026, 12, 2, 18, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def board():
    clock, events, heard = Clock(), Events(), []
    events.subscribe(heard.append)
    return HealthBoard(clock, events=events, wall=lambda: WALL + timedelta(seconds=clock.now - 1000)), clock, heard


def fail(b, reason="HTTP 503"):
    b.record_failure("a", reason, threshold=3, cooldown=60)


def test_a_cooldown_is_announced_when_it_starts_with_its_end():
    b, _, heard = board()
    fail(b)
    fail(b)
    assert heard == []
    fail(b)
    [event] = heard
    assert (event.kind, event.upstream, event.route) == ("cooldown", "a", None)
    assert event.until == WALL + timedelta(seconds=60)
    assert event.episode == "2026-12-02T18:01:00.000000+00:00"
    # another instance's cooldown then is this one, told once: the claim is of the upstream's
    # told state, so the next outage is told however soon it follows an early end
    assert (event.claim, event.state) == ("health:a", "cooldown")
    assert event.reason == "cooling down for 60s after 3 consecutive failure(s) (last: HTTP 503)"


def test_failed_probes_extend_the_outage_without_new_announcements_and_recovery_ends_it():
    b, clock, heard = board()
    for _ in range(3):
        fail(b)
    for _ in range(5):              # each probe after the cooldown fails and sends it back
        clock.now += 61
        assert b.needs_probe("a")
        fail(b)
        assert b.cooling_until("a") == clock.now + 60
    assert [e.kind for e in heard] == ["cooldown"]
    clock.now += 61
    b.record_success("a")
    b.record_success("a")
    assert [e.kind for e in heard] == ["cooldown", "recovered"]
    assert heard[1].upstream == "a" and heard[1].episode == heard[0].episode and heard[1].until is None
    assert (heard[1].claim, heard[1].state) == ("health:a", "recovered")    # instances may name the outage apart


def test_the_next_outage_is_a_new_episode():
    b, clock, heard = board()
    for _ in range(3):
        fail(b)
    b.record_success("a")
    clock.now += 3600
    for _ in range(3):
        fail(b)
    assert [e.kind for e in heard] == ["cooldown", "recovered", "cooldown"]
    assert heard[2].episode != heard[0].episode


def test_a_rate_limit_starts_an_outage_at_once_until_the_reported_reset():
    b, _, heard = board()
    b.record_rate_limit("a", "HTTP 429", seconds=1800, reset_known=True)
    b.record_rate_limit("a", "HTTP 429", seconds=1700, reset_known=True)
    [event] = heard
    assert event.kind == "cooldown" and event.until == WALL + timedelta(seconds=1800)
    assert event.reason == "rate limited (HTTP 429); cooling down for 1800s until the reset it reported"


def test_success_without_an_outage_and_failures_below_the_threshold_announce_nothing():
    b, _, heard = board()
    b.record_success("a")
    fail(b)
    b.record_success("a")
    assert heard == []


def test_a_board_without_a_bus_still_cools_down():
    b = HealthBoard(Clock())
    for _ in range(3):
        fail(b)
    assert b.cooling_until("a") == 1060.0
    b.record_success("a")
    assert b.cooling_until("a") is None


def test_outages_that_end_in_the_same_second_are_told_apart():
    # a quick 503, a 2xx, a 503 again: the notifier's de-duplication goes by the episode, and a
    # second outage told as the first one stayed silent while the upstream cooled
    from ccswitch.notify.dedupe import Deduper
    b, clock, heard = board()
    b.record_failure("a", "HTTP 503", threshold=1, cooldown=120)
    b.record_success("a")
    clock.now += 0.2
    b.record_failure("a", "HTTP 503", threshold=1, cooldown=120)
    b.record_success("a")
    assert [e.kind for e in heard] == ["cooldown", "recovered", "cooldown", "recovered"]
    news = Deduper()
    assert [news.first(e) for e in heard] == [True, True, True, True]


def test_recovered_is_logged_and_announced_only_when_a_cooldown_ends(caplog):
    caplog.set_level("INFO", logger="ccswitch.health")
    b, _, heard = board()
    fail(b)                     # below the threshold: no cooldown began
    b.record_success("a")
    assert "recovered" not in caplog.text and heard == []
    for _ in range(3):
        fail(b)
    b.record_success("a")
    assert caplog.text.count("upstream a recovered") == 1
    assert [e.kind for e in heard] == ["cooldown", "recovered"]


def test_a_cooldown_under_ten_seconds_is_told_as_long_as_it_is_not_rounded_to_nothing():
    b, _, heard = board()
    b.record_failure("a", "HTTP 503", threshold=1, cooldown=0.3)
    b.record_rate_limit("b", "HTTP 429", seconds=1.5, reset_known=False)
    assert [e.reason for e in heard] == ["cooling down for 0.3s after 1 consecutive failure(s) (last: HTTP 503)",
                                         "rate limited (HTTP 429); cooling down for 1.5s"]


def test_a_failed_probe_below_the_threshold_says_so_rather_than_read_as_the_threshold_met(caplog):
    b, clock, _ = board()
    b.record_rate_limit("a", "HTTP 429", seconds=1, reset_known=True)
    clock.now += 2       # the cooldown over: the next request probes it
    with caplog.at_level("WARNING", logger="ccswitch.health"):
        b.record_failure("a", "HTTP 503", threshold=100, cooldown=600)
    assert ("upstream a: cooldown for 600s after its probe after a cooldown failed (2 consecutive failure(s))"
            " (last: HTTP 503)") in caplog.text


def test_seconds_are_never_told_in_scientific_notation():
    from ccswitch.routing.health import seconds_text
    assert [seconds_text(s) for s in (0.00004, 0.05, 0.3, 2.0, 9.99, 300)] == ["0s", "0.05s", "0.3s", "2s", "9.99s", "300s"]


def test_an_outage_ended_by_a_reset_or_a_new_identity_is_told_over():
    """The hooks were told of its cooldown: without this, their last word would stay `cooldown`."""
    b, _, heard = board()
    b.sync({"a": ("key-1",)})
    for _ in range(3):
        fail(b)
    b.reset("a")
    b.reset("a")                     # no outage left: nothing more to tell
    for _ in range(3):
        fail(b)
    b.sync({"a": ("key-2",)})
    assert [(e.kind, e.reason) for e in heard] == [
        ("cooldown", heard[0].reason), ("recovered", "reset with ccswitch.reset: taken as healthy"),
        ("cooldown", heard[2].reason), ("recovered", "its base_url, key or protocol changed: taken as healthy")]
    assert all((e.claim, e.state) == ("health:a", e.kind) for e in heard)
    assert heard[1].episode == heard[0].episode and heard[3].episode == heard[2].episode


def test_an_outage_a_changed_proxy_ends_is_told_over_as_that_not_as_a_reset():
    # nobody ran ccswitch.reset: the recovery's reason says what ended it
    b, _, heard = board()
    b.sync({"a": ("key-1",)}, {"a": "proxy-old"})
    for _ in range(3):
        fail(b, "proxy http://127.0.0.1:3128: authentication failed (407 Proxy Authentication Required)")
    b.sync({"a": ("key-1",)}, {"a": "proxy-new"})
    assert [(e.kind, e.reason) for e in heard[1:]] == [("recovered", "its proxy changed: taken as healthy")]
    assert heard[1].episode == heard[0].episode


def test_an_upstream_removed_during_its_outage_is_told_over():
    # its hooks' last word stayed `cooldown` for good
    b, _, heard = board()
    b.sync({"a": ("key-1",), "b": ("key-b",)})
    for _ in range(3):
        fail(b)
    b.sync({"b": ("key-b",)})
    assert [(e.kind, e.upstream, e.reason) for e in heard[1:]] == [
        ("recovered", "a", "removed from the rules: no longer watched")]
    assert heard[1].episode == heard[0].episode
