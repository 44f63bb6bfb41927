"""Session keys and bindings (pure, with an injected clock)."""

from ccswitch.routing.affinity import SessionBindings, session_fraction, session_key
from ccswitch.routing.changes import BindChange


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_session_key_takes_the_first_present_source_in_order():
    body = {"prompt_cache_key": "pck", "metadata": {"user_id": "user_x_session_y"}}
    assert session_key([("Session_ID", "codex-1"), ("X-Claude-Code-Session-Id", "cc-1")], body) == "cc-1"
    assert session_key([("x-ccswitch-session", "mine"), ("x-claude-code-session-id", "cc-1")], body) == "mine"
    assert session_key([("session-id", "codex-2")], body) == "codex-2"
    assert session_key([("session_id", "codex-3")], body) == "codex-3"
    assert session_key([("session-id", "   ")], body) == "pck"            # blank headers do not count
    assert session_key([], {"metadata": {"user_id": "user_x_session_y"}}) == "user_x_session_y"
    assert session_key([], {"metadata": "not a mapping", "prompt_cache_key": 7}) is None
    assert session_key([], None) is None
    assert len(session_key([("session-id", "s" * 1000)], None)) == 200   # stored in every ledger row


def test_a_binding_lasts_while_the_session_comes_back_within_its_ttl():
    clock = Clock()
    bindings = SessionBindings(clock)
    assert bindings.bound("claude", "s1") is None
    bindings.bind("claude", "s1", "a", ttl=60)
    clock.now += 59
    assert bindings.bound("claude", "s1") == "a"
    bindings.bind("claude", "s1", "a", ttl=60)      # another 2xx restarts the idle time
    clock.now += 59
    assert bindings.bound("claude", "s1") == "a"
    clock.now += 2
    assert bindings.bound("claude", "s1") is None     # idle past the TTL: free to fail back
    assert bindings.bound("codex", "s1") is None      # bindings are per route


def test_a_failover_moves_the_binding_and_sticky_off_binds_nothing():
    bindings = SessionBindings(Clock())
    bindings.bind("claude", "s1", "a", ttl=60)
    bindings.bind("claude", "s1", "b", ttl=60)
    assert bindings.bound("claude", "s1") == "b"
    bindings.bind("claude", "s2", "a", ttl=0)
    assert bindings.bound("claude", "s2") is None and len(bindings) == 1


def test_bindings_survive_a_reload_for_upstreams_that_keep_their_name():
    bindings = SessionBindings(Clock())
    bindings.bind("claude", "s1", "a", ttl=60)
    bindings.bind("claude", "s2", "gone", ttl=60)
    bindings.sync(["a", "b"])
    assert bindings.bound("claude", "s1") == "a" and bindings.bound("claude", "s2") is None
    assert bindings.count_by_upstream() == {"a": 1}


def test_a_reload_applies_the_new_sticky_to_every_binding_and_tells_the_others():
    clock, told = Clock(), []
    bindings = SessionBindings(clock, wall=clock)
    bindings.on_change = told.append
    bindings.bind("claude", "short", "a", ttl=3)
    bindings.bind("claude", "long", "a", ttl=3600)
    bindings.bind("codex", "other", "a", ttl=3600)
    told.clear()
    bindings.sync(["a"], {"claude": 3600, "codex": 3})
    clock.now += 4.5
    assert bindings.bound("claude", "short") == "a"       # raised: idle 4.5 s is within 1h now
    assert bindings.bound("codex", "other") is None       # lowered: idle past 3 s, it fails back
    assert {(c.session, c.ttl) for c in told} == {("short", 3600), ("other", 3)}   # the shared expiry follows


def test_with_sticky_off_a_route_binds_nothing_and_keeps_nothing_to_come_back_to():
    clock, told = Clock(), []
    bindings = SessionBindings(clock, wall=clock)
    bindings.on_change = told.append
    bindings.bind("claude", "s1", "a", ttl=3600)
    bindings.bind("codex", "s9", "a", ttl=3600)
    told.clear()
    bindings.sync(["a", "b"], {"claude": 0, "codex": 3600})
    assert bindings.count_by_upstream() == {"a": 1} and bindings.bound("claude", "s1") is None
    assert [(c.session, c.ttl) for c in told] == [("s1", 0)]          # the shared copy goes too
    bindings.apply(BindChange("claude", "s1", "a", 3600, clock.now))  # an instance not yet reloaded
    bindings.bind("claude", "s1", "b", ttl=0)                         # served while off
    bindings.sync(["a", "b"], {"claude": 3600, "codex": 3600})
    assert bindings.bound("claude", "s1") is None and bindings.count_by_upstream() == {"a": 1}


def test_a_request_that_began_before_a_reload_binds_as_the_rules_in_force_say():
    # a stream under the old rules ended after the reload and bound its session to an upstream
    # the new rules had removed (or renamed), undoing the binding made since; under `sticky: off`
    # it bound all the same, and the session came back to it when sticky was turned on again
    bindings = SessionBindings(Clock())
    bindings.sync(["a", "b", "spare"], {"claude": 3600}, {"claude": ["a", "b"]})
    assert bindings.bind("claude", "s1", "b", ttl=3600)             # served under the new rules
    assert not bindings.bind("claude", "s1", "gone", ttl=3600)      # the old stream, ending now
    assert not bindings.bind("claude", "s1", "spare", ttl=3600)     # still an upstream, in no route now
    assert bindings.bound("claude", "s1") == "b" and bindings.count_by_upstream() == {"b": 1}
    bindings.sync(["a", "b"], {"claude": 0}, {"claude": ["a", "b"]})
    assert not bindings.bind("claude", "s2", "a", ttl=3600)         # begun under sticky 1h, ended under off
    bindings.sync(["a", "b"], {"claude": 3600}, {"claude": ["a", "b"]})
    assert bindings.bound("claude", "s2") is None


def test_expired_bindings_are_swept_so_memory_stays_bounded():
    clock = Clock()
    bindings = SessionBindings(clock)
    for i in range(3000):
        bindings.bind("claude", f"s{i}", "a", ttl=10)
        clock.now += 0.01
    assert len(bindings) < 3000          # sweeps ran while binding
    clock.now += 100
    assert bindings.count_by_upstream() == {} and len(bindings) == 0


def test_sessions_named_anew_on_every_request_are_bounded_and_the_least_recently_bound_go(monkeypatch):
    # each lived for the whole sticky (an hour): 100 new names a second kept 360,000
    from ccswitch.routing import affinity
    monkeypatch.setattr(affinity, "MAX_BINDINGS", 100)
    clock = Clock()
    bindings = SessionBindings(clock)
    bindings.bind("claude", "kept", "a", ttl=3600)
    for i in range(500):
        bindings.bind("claude", f"s{i}", "a", ttl=3600)
        if i % 50 == 0:
            bindings.bind("claude", "kept", "a", ttl=3600)     # a conversation going on
    assert len(bindings) == 100
    assert bindings.bound("claude", "kept") == "a" and bindings.bound("claude", "s499") == "a"
    assert bindings.bound("claude", "s0") is None


def test_past_the_bound_a_session_bound_again_is_kept_and_expired_ones_go_before_live_ones(monkeypatch):
    from ccswitch.routing import affinity
    monkeypatch.setattr(affinity, "MAX_BINDINGS", 3)
    clock = Clock()
    bindings = SessionBindings(clock)
    for key in ("a", "b", "c"):
        bindings.bind("claude", key, "up", ttl=3600)
    bindings.bind("claude", "a", "up", ttl=3600)      # the first bound, and bound again since
    bindings.bind("claude", "d", "up", ttl=3600)
    assert [bindings.bound("claude", k) for k in "abcd"] == ["up", None, "up", "up"]
    bindings = SessionBindings(clock)
    bindings.bind("claude", "long", "up", ttl=3600)
    bindings.bind("codex", "short", "up", ttl=10)     # another route's sticky: over soon
    clock.now += 20
    bindings.bind("claude", "x", "up", ttl=3600)
    bindings.bind("claude", "y", "up", ttl=3600)      # over the bound: the expired one goes, not "long"
    assert [bindings.bound("claude", k) for k in ("long", "x", "y")] == ["up"] * 3


def test_bindings_told_by_other_instances_are_swept_too():
    clock, wall = Clock(), Clock()
    wall.now = 1_000_000.0
    bindings = SessionBindings(clock, wall=wall)   # an instance that serves nothing itself
    for i in range(3000):
        bindings.apply(BindChange("claude", f"s{i}", "a", 10, wall.now))
        clock.now += 0.01
        wall.now += 0.01
    assert len(bindings) < 3000          # sweeps ran while others' bindings came in


def test_the_weighted_draw_of_a_session_is_stable_and_spread():
    # the same on every instance and every run (no per-process hash seed): a pinned value
    assert session_fraction("abc") == 0.8466046359861451
    draws = [session_fraction(f"session-{i}") for i in range(2000)]
    assert all(0 <= d < 1 for d in draws)
    assert 0.45 < sum(d < 0.5 for d in draws) / len(draws) < 0.55


def two_clocks():
    clock, wall = Clock(), Clock()
    wall.now = 1_000_000.0
    return clock, wall


def advance(clocks, seconds):
    for c in clocks:
        c.now += seconds


def test_a_binding_idle_exactly_its_ttl_still_holds():
    clock = Clock()
    bindings = SessionBindings(clock)
    bindings.bind("claude", "s1", "a", ttl=60)
    clock.now += 60
    assert bindings.bound("claude", "s1") == "a"


def test_another_instance_s_older_use_does_not_move_a_session_used_here_since():
    clock, wall = two_clocks()
    bindings = SessionBindings(clock, wall=wall)
    bindings.bind("claude", "s1", "here", ttl=600)
    bindings.apply(BindChange("claude", "s1", "other", 600, wall.now - 300))    # within its TTL, but older
    assert bindings.bound("claude", "s1") == "here"
    bindings.apply(BindChange("claude", "s1", "other", 600, wall.now + 0.5))    # newer: it moves
    assert bindings.bound("claude", "s1") == "other"


def test_another_instance_s_binding_takes_this_instance_s_sticky_once_it_has_one():
    clock, wall = two_clocks()
    bindings = SessionBindings(clock, wall=wall)
    bindings.sync(["a"], {"claude": 10})
    bindings.apply(BindChange("claude", "s1", "a", 3600, wall.now))    # told by one not reloaded yet
    advance((clock, wall), 11)
    assert bindings.bound("claude", "s1") is None


def test_a_binding_from_a_clock_running_ahead_lives_no_longer_than_its_ttl():
    clock, wall = two_clocks()
    bindings = SessionBindings(clock, wall=wall)
    bindings.apply(BindChange("claude", "s1", "a", 10, wall.now + 100))
    assert bindings.bound("claude", "s1") == "a"
    advance((clock, wall), 11)
    assert bindings.bound("claude", "s1") is None


def test_a_reload_that_lengthens_sticky_does_not_bring_back_an_expired_session():
    clock = Clock()
    bindings = SessionBindings(clock)
    bindings.sync(["a"], {"claude": 3})
    bindings.bind("claude", "s1", "a", ttl=3)
    clock.now += 4
    bindings.sync(["a"], {"claude": 3600})
    assert bindings.bound("claude", "s1") is None
