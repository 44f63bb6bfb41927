from ccswitch.routing.health import HealthBoard


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def board():
    clock = Clock()
    return HealthBoard(clock), clock


def fail(b, name="a", threshold=3, cooldown=60, at_least=0.0):
    b.record_failure(name, "HTTP 503", threshold=threshold, cooldown=cooldown, at_least=at_least)


def test_cooldown_starts_at_threshold_and_ends_on_time():
    b, clock = board()
    fail(b)
    fail(b)
    assert b.cooling_until("a") is None
    fail(b)
    assert b.cooling_until("a") == 1060.0
    clock.now = 1059.9
    assert b.cooling_until("a") is not None
    clock.now = 1060.0
    assert b.cooling_until("a") is None
    assert b.needs_probe("a")


def test_failed_probe_goes_straight_back_success_resets():
    b, clock = board()
    for _ in range(3):
        fail(b)
    clock.now += 61
    assert b.cooling_until("a") is None
    fail(b)  # the probe fails: one failure is enough now
    assert b.cooling_until("a") == clock.now + 60
    clock.now += 61
    b.record_success("a")
    assert not b.needs_probe("a") and b.get("a").failures == 0
    fail(b)
    assert b.cooling_until("a") is None  # counting starts again from zero


def test_success_resets_count_and_other_upstreams_are_independent():
    b, _ = board()
    fail(b)
    fail(b)
    b.record_success("a")
    fail(b)
    fail(b)
    fail(b, "b")
    assert b.cooling_until("a") is None and b.get("a").failures == 2 and b.get("b").failures == 1


def test_429_cooldown_lasts_at_least_retry_after():
    b, clock = board()
    fail(b, threshold=1, cooldown=10, at_least=120)
    assert b.cooling_until("a") == clock.now + 120


def test_sync_keeps_state_for_same_identity_and_resets_changed_ones():
    b, _ = board()
    b.sync({"a": ("u1", "k", "anthropic"), "b": ("u2", "k", "anthropic"), "c": ("u3", "k", "anthropic")})
    for name in "abc":
        for _ in range(3):
            fail(b, name)
    b.switch("a", False)
    b.sync({"a": ("u1", "k", "anthropic"), "b": ("u2", "k2", "anthropic")})
    assert b.cooling_until("a") is not None        # same identity: health survives
    assert b.enabled("a", True)                      # manual switches end with a reload
    assert b.cooling_until("b") is None and b.get("b").failures == 0  # new key: reset
    assert "c" not in b._state


def test_a_cooldown_its_proxy_caused_ends_when_the_proxy_changes():
    # a mended proxy password waited out the whole cooldown (10 minutes by default)
    b, _ = board()
    fingerprints = {name: (f"u-{name}", "k", "anthropic") for name in "abc"}
    b.sync(fingerprints, {"a": "proxy-old", "b": "proxy-old", "c": "proxy-old"})
    for name, error in (("a", "proxy http://127.0.0.1:3128: authentication failed (407 Proxy Authentication Required)"),
                        ("b", "HTTP 503"),                     # the upstream's own doing
                        ("c", "connect timeout (through proxy socks5://127.0.0.1:1080)")):
        b.record_failure(name, error, threshold=1, cooldown=60)
    b.sync(fingerprints, {"a": "proxy-new", "b": "proxy-new", "c": "proxy-old"})
    assert b.cooling_until("a") is None and b.get("a").failures == 0
    assert b.cooling_until("b") is not None                    # a new proxy does not mend a 503
    assert b.cooling_until("c") is not None                    # its proxy is the same
    b.sync(fingerprints, {"a": "proxy-new", "b": "proxy-new", "c": None})
    assert b.cooling_until("c") is None


def test_an_upstream_a_reload_adds_keeps_the_cooldown_its_proxy_caused_elsewhere():
    # another instance, with the new rules already, told a cooldown its proxy caused: this
    # instance's reload names the upstream for the first time, with that same proxy (no change)
    import time

    from ccswitch.routing.changes import HealthChange
    b, _ = board()
    b.sync({"a": ("u-a", "k", "anthropic")}, {"a": None})
    b.apply(HealthChange("new", 1, time.time() + 600, False,
                         "proxy http://127.0.0.1:3128: authentication failed (407)", "outage-1", time.time()))
    assert b.cooling_until("new") is not None
    b.sync({"a": ("u-a", "k", "anthropic"), "new": ("u-new", "k", "anthropic")}, {"a": None, "new": "proxy-x"})
    assert b.cooling_until("new") is not None


def test_preferred_expires():
    b, clock = board()
    b.preferred = ("a", clock.now + 60)
    assert b.preferred_name() == "a"
    clock.now += 61
    assert b.preferred_name() is None


def test_a_reload_that_removes_the_preferred_upstream_ends_the_preference():
    # ccswitch.status still said "preferring ra", and an upstream of that name added back later
    # was preferred again without anyone asking
    b, clock = board()
    b.sync({"ra": ("x",), "rb": ("y",)})
    b.prefer("ra", clock.now + 600)
    b.sync({"rb": ("y",)})
    assert b.preferred is None
    b.sync({"ra": ("x",), "rb": ("y",)})
    assert b.preferred_name() is None


def test_a_reload_that_ends_a_manual_switch_says_so(caplog):
    # a comment-only edit switched a disabled upstream back on with only "rules reloaded" in the log
    import logging
    caplog.set_level(logging.INFO, "ccswitch")
    b, _ = board()
    b.sync({"rb": ("y",)})
    b.switch("rb", False)
    b.sync({"rb": ("y",)})
    assert b.enabled("rb", True) and "the reload ends ccswitch.disable rb" in caplog.text


def test_a_failed_probe_after_a_rate_limit_cooldown_goes_straight_back_too():
    # one 429 cooled it (failures 1, under the threshold): its probe failing is not one failure of three
    b, clock = board()
    b.record_rate_limit("a", "HTTP 429", seconds=30, reset_known=True)
    clock.now += 31
    assert b.needs_probe("a")
    fail(b, threshold=3, cooldown=60)
    assert b.cooling_until("a") == clock.now + 60


def test_a_success_after_a_rate_limit_clears_its_flag_for_the_other_instances():
    b, clock = board()
    b.record_rate_limit("a", "HTTP 429", seconds=30, reset_known=True)
    assert b.shared("a").rate_limited is True
    clock.now += 31
    b.record_success("a")
    assert b.shared("a").rate_limited is False


def test_a_preference_ends_at_its_end():
    b, clock = board()
    b.preferred = ("a", clock.now + 60)
    clock.now += 60
    assert b.preferred_name() is None


def test_failures_of_requests_under_way_when_the_cooldown_began_neither_extend_nor_log_it(caplog):
    b, clock = board()
    for _ in range(3):
        fail(b)
    ends = b.cooling_until("a")
    clock.now += 15
    for _ in range(5):                       # each started before the cooldown; a total timeout now
        fail(b)
    assert b.cooling_until("a") == ends and b.get("a").failures == 8
    assert caplog.text.count("cooldown for") == 1
    fail(b, at_least=120)                    # a failure that says how long: it is longer
    assert b.cooling_until("a") == clock.now + 120


def test_an_answer_is_current_only_for_the_account_the_rules_give_its_upstream_now():
    board = HealthBoard()
    assert board.is_current("a", ("url", "key-1", "anthropic"))        # before the first sync: any
    board.sync({"a": ("url", "key-1", "anthropic")})
    assert board.is_current("a", ("url", "key-1", "anthropic"))
    assert not board.is_current("a", ("url", "key-2", "anthropic"))    # another key since
    board.sync({"b": ("url", "key-1", "anthropic")})                   # a renamed, or removed
    assert not board.is_current("a", ("url", "key-1", "anthropic"))


def test_a_429_during_a_longer_cooldown_does_not_shorten_it_and_a_longer_one_extends_it():
    # a request under way when three 500s began a 600 s cooldown came back 429 retry-after 5: the
    # cooldown became 5 s, taken for a rate limit (the route's own 429, then a probe)
    b, clock = board()
    for _ in range(3):
        fail(b, cooldown=600)
    b.record_rate_limit("a", "HTTP 429", seconds=5, reset_known=True)
    assert b.cooling_until("a") == 1600.0 and not b.get("a").rate_limited
    b.record_rate_limit("a", "HTTP 429", seconds=900, reset_known=True)
    assert b.cooling_until("a") == 1900.0 and b.get("a").rate_limited


def test_a_429_ending_with_the_cooldown_under_way_leaves_it_as_it_is():
    # not a rate limit that began then: the 600 s after three 500s is still no reset to wait for
    b, _ = board()
    for _ in range(3):
        fail(b, cooldown=600)
    b.record_rate_limit("a", "HTTP 429", seconds=600, reset_known=True)
    assert b.cooling_until("a") == 1600.0 and not b.get("a").rate_limited


def test_a_429_during_a_longer_cooldown_still_tells_the_other_instances_its_failure():
    b, _ = board()
    sent = []
    b.on_change = sent.append
    b.record_rate_limit("a", "HTTP 429", seconds=900, reset_known=True)
    b.record_rate_limit("a", "HTTP 429 again", seconds=5, reset_known=True)
    assert len(sent) == 2 and b.get("a").failures == 2 and b.get("a").last_error == "HTTP 429 again"


def test_a_2xx_sent_before_a_rate_limit_cooled_it_down_ends_nothing():
    # a long stream begun before another request's 429 ended that cooldown with its 2xx: the
    # upstream took traffic again at once and earned the next 429
    b, clock = board()
    began = clock.now
    clock.now += 10
    b.record_rate_limit("a", "HTTP 429", seconds=300, reset_known=True)
    clock.now += 30
    b.record_success("a", began)
    assert b.cooling_until("a") == 1310.0 and b.get("a").rate_limited
    b.record_success("a", clock.now)                 # one sent since: the window let it through
    assert b.cooling_until("a") is None
    for _ in range(3):                               # a failures' cooldown: any 2xx ends it, as before
        fail(b, cooldown=600)
    b.record_success("a", began)
    assert b.cooling_until("a") is None


def test_a_429_to_a_request_sent_during_a_cooldown_for_failures_is_the_later_news():
    # the route's last upstream is tried while it cools down after 500s: its 429 with a reset was
    # taken for nothing, so every instance went on calling it, and no route said it was exhausted
    b, clock = board()
    for _ in range(3):
        fail(b, cooldown=600)
    clock.now += 10
    b.record_rate_limit("a", "HTTP 429", seconds=20, reset_known=True, began=clock.now - 0.5)
    assert b.cooling_until("a") == clock.now + 20 and b.get("a").rate_limited
    # without a known reset, or from a request sent before the cooldown began: as before
    c, clock_c = board()
    for _ in range(3):
        fail(c, cooldown=600)
    c.record_rate_limit("a", "HTTP 429", seconds=20, reset_known=False, began=clock_c.now)
    c.record_rate_limit("a", "HTTP 429", seconds=20, reset_known=True, began=clock_c.now - 1)
    assert c.cooling_until("a") == clock_c.now + 600 and not c.get("a").rate_limited


def test_a_429_to_a_request_sent_before_a_cooldown_learned_from_another_instance_does_not_shorten_it():
    # the merged cooldown had no start here: a request sent before it counted as the later news
    import time

    from ccswitch.routing.changes import HealthChange
    b, clock = board()
    b.apply(HealthChange("a", 3, time.time() + 600, False, "HTTP 500", "outage-1", time.time()))
    b.record_rate_limit("a", "HTTP 429", seconds=20, reset_known=True, began=clock.now - 5)
    assert b.cooling_until("a") > clock.now + 590 and not b.get("a").rate_limited
    b.record_rate_limit("a", "HTTP 429", seconds=20, reset_known=True, began=clock.now + 1)
    assert b.cooling_until("a") == clock.now + 20 and b.get("a").rate_limited


def test_an_upstream_removed_and_put_back_within_its_cooldown_is_still_cooling():
    # commenting an upstream out and back in (or a tool writing the file in steps) let the next
    # request through to it 12 s into a 30 s retry-after
    b, clock = board()
    accounts = {"a": ("u1", "k", "anthropic"), "b": ("u2", "k", "anthropic")}
    b.sync(accounts)
    b.record_rate_limit("a", "HTTP 429", seconds=30, reset_known=True, began=clock.now)
    for _ in range(3):
        fail(b, "b", cooldown=30)
    b.sync({"b": accounts["b"]})
    b.sync({})
    clock.now += 12
    b.sync(accounts)
    assert b.cooling_until("a") == 1030.0 and b.get("a").rate_limited
    assert b.cooling_until("b") == 1030.0 and b.get("b").failures == 3
    # another account under the name, or back after the cooldown's end: a fresh start
    b.sync({})
    b.sync({"a": ("u1", "k2", "anthropic")})
    assert b.cooling_until("a") is None and b.get("a").failures == 0
    b.sync({})
    clock.now += 30
    b.sync(accounts)
    assert b.cooling_until("b") is None and b.get("b").failures == 0


def test_an_upstream_put_back_through_a_mended_proxy_ends_the_cooldown_that_proxy_caused():
    # as the same change made in place does; the upstream's own cooldown stays
    b, clock = board()
    accounts = {"a": ("u1", "k", "anthropic"), "b": ("u2", "k", "anthropic")}
    b.sync(accounts, {"a": "proxy-old", "b": "proxy-old"})
    b.record_failure("a", "proxy http://127.0.0.1:3128: authentication failed (407 Proxy Authentication Required)",
                     threshold=1, cooldown=300)
    b.record_failure("b", "HTTP 503", threshold=1, cooldown=300)
    b.sync({}, {})
    b.sync(accounts, {"a": "proxy-new", "b": "proxy-new"})
    assert b.cooling_until("a") is None and b.cooling_until("b") == 1300.0
