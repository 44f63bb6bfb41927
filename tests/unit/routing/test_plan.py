"""Candidate order: availability, the route's strategy, session affinity, own 429s (pure)."""

from collections import Counter
from datetime import datetime

from ccswitch.config.load import parse_rules
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.plan import plan
from ccswitch.routing.quota import QuotaBoard


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def rules_with(route: str, weights=(1, 1, 1), names: str = "abc") -> object:
    ups = "\n".join(f"  - {{name: {n}, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-{n}-0000000, "
                    f"weight: {w}}}" for n, w in zip(names, weights, strict=True))
    return parse_rules(f"timezone: UTC\nupstreams:\n{ups}\nroutes:\n  claude: {route}\n")


NOW = datetime(2026, 12, 2, 12, 0)


def names(p):
    return [u.name for u in p.candidates]


def utilization(quota: QuotaBoard, name: str, value: float, reset_in: float = 3600) -> None:
    quota.record(name, [("anthropic-ratelimit-unified-5h-utilization", str(value)),
                        ("anthropic-ratelimit-unified-5h-reset", str(int(quota.clock() + reset_in)))])


def test_the_list_form_is_priority_with_sticky_on():
    rules = rules_with("[a, b, c]")
    spec = rules.routes.spec("claude")
    assert spec.strategy == "priority" and spec.sticky == 3600 and spec.upstreams == ("a", "b", "c")
    p = plan(rules, "claude", "m", HealthBoard(), NOW)
    assert names(p) == ["a", "b", "c"] and p.why_first == "route order"


def test_quota_orders_by_known_utilization_and_unknown_counts_as_zero():
    rules = rules_with("{upstreams: [a, b, c], strategy: quota}")
    quota = QuotaBoard(Clock())
    utilization(quota, "a", 0.6)
    utilization(quota, "b", 0.31)
    p = plan(rules, "claude", "m", HealthBoard(), NOW, quota=quota)
    assert names(p) == ["c", "b", "a"] and p.why_first == "least utilized (unknown)"
    utilization(quota, "c", 0.5)
    p = plan(rules, "claude", "m", HealthBoard(), NOW, quota=quota)
    assert names(p) == ["b", "c", "a"] and p.why_first == "least utilized 0.31"


def test_a_full_upstream_is_skipped_under_every_strategy_until_its_window_resets():
    clock = Clock(NOW.timestamp())
    quota = QuotaBoard(clock)
    utilization(quota, "a", 0.97, reset_in=600)
    for route in ("[a, b, c]", "{upstreams: [a, b, c], strategy: weighted}", "{upstreams: [a, b, c], strategy: quota}"):
        p = plan(rules_with(route, weights=(100, 1, 1)), "claude", "m", HealthBoard(), NOW, quota=quota)
        assert "a" not in names(p)
        # to the second, as a cooldown's end: one at 19:05:51 read "until 19:05", and a retry at 19:05:10 failed
        assert ("a", "full until 12:10:00 (5h window)") in [(n, w.replace(
            datetime.fromtimestamp(clock.now + 600).strftime("%H:%M:%S"), "12:10:00")) for n, w in p.blocked]
    clock.now += 601
    assert "a" in names(plan(rules_with("[a, b, c]"), "claude", "m", HealthBoard(), NOW, quota=quota))


def a_and_b_full(a_reset: float, b_reset: float):
    """Boards on one clock where a (0.99) and b (1.0) are full until their resets, c free: (quota, health, rules)."""
    clock = Clock()
    quota, health = QuotaBoard(clock), HealthBoard(clock)
    utilization(quota, "a", 0.99, reset_in=a_reset)
    utilization(quota, "b", 1.0, reset_in=b_reset)
    return quota, health, rules_with("[a, b, c]")


def test_when_everything_is_full_or_rate_limited_with_a_known_reset_ccswitch_answers_429():
    quota, health, rules = a_and_b_full(900, 300)
    health.record_rate_limit("c", "HTTP 429", seconds=120, reset_known=True)
    p = plan(rules, "claude", "m", health, NOW, quota=quota)
    assert p.candidates == [] and p.limited_for == 120
    health.record_rate_limit("c", "HTTP 429", seconds=600, reset_known=False)   # no reset reported
    p = plan(rules, "claude", "m", health, NOW, quota=quota)
    assert p.limited_for is None and names(p) == ["c"] and p.why_first == "recovers first"   # never dark


def test_an_upstream_cooling_and_full_is_back_only_when_both_are_over():
    quota, health, rules = a_and_b_full(60, 90)
    health.record_rate_limit("c", "HTTP 429", seconds=5, reset_known=True)   # its retry-after
    utilization(quota, "c", 1.0, reset_in=20)                                # but full for 20 s
    p = plan(rules, "claude", "m", health, NOW, quota=quota)
    assert p.candidates == [] and p.limited_for == 20
    # the answer named the cooldown's end, 15 s before c could serve: a client retried too early
    why = dict(p.blocked)["c"]
    assert why.startswith("full until ") and why.endswith("(5h window)"), why
    health.record_rate_limit("c", "HTTP 429", seconds=30, reset_known=True)  # cooling past its full window
    p = plan(rules, "claude", "m", health, NOW, quota=quota)
    assert p.limited_for == 30 and dict(p.blocked)["c"].startswith("cooling down until ")


def test_an_upstream_cooling_and_full_with_no_known_reset_is_planned_without_one():
    # a full window that named no reset has no end to compare: read as one, the plan failed (None - float)
    clock = Clock()
    quota, health = QuotaBoard(clock), HealthBoard(clock)
    rules = rules_with("[a, b, c]")
    health.record_rate_limit("c", "HTTP 429", seconds=30, reset_known=True)
    quota.record("c", [("anthropic-ratelimit-unified-5h-utilization", "1.0")])     # full, no reset header
    p = plan(rules, "claude", "m", health, NOW, quota=quota)
    assert names(p) == ["a", "b"] and "c" in dict(p.blocked)
    # believed full for a while (the live page's "full until"), past the 30 s cooldown: that end,
    # not the cooldown's, is what the answer and the ledger say
    why = dict(p.blocked)["c"]
    assert why.startswith("full until ") and why.endswith("(5h window)"), why
    end = datetime.fromtimestamp(quota.full_until("c", 0.95), rules.tz)
    assert f"{end:%H:%M:%S}" in why
    quota.record("b", [("anthropic-ratelimit-unified-5h-utilization", "1.0")])     # full alone, no reset
    assert dict(plan(rules, "claude", "m", health, NOW, quota=quota).blocked)["b"] == why   # as the page says


def test_an_upstream_whose_429_named_its_wait_is_not_called_for_a_full_window_that_named_none():
    # a 429 with retry-after: 3600 and a window at 100 % without its reset: the plan read the
    # window's unknown end as no known wait and tried it again on the next request, every request
    quota, health, rules = a_and_b_full(60, 90)
    health.record_rate_limit("c", "HTTP 429", seconds=3600, reset_known=True)
    quota.record("c", [("anthropic-ratelimit-unified-5h-utilization", "1.0")])     # full, no reset header
    p = plan(rules, "claude", "m", health, NOW, quota=quota)
    assert p.candidates == [] and p.limited_for == 60
    p = plan(rules_with("[c]", weights=(1,), names="c"), "claude", "m", health, NOW, quota=quota)
    assert p.candidates == [] and p.limited_for == 3600


def test_weighted_picks_in_proportion_and_a_session_always_draws_the_same():
    rules = rules_with("{upstreams: [a, b, c], strategy: weighted}", weights=(6, 3, 1))
    firsts = Counter(names(plan(rules, "claude", "m", HealthBoard(), NOW, session=f"s{i}"))[0] for i in range(3000))
    assert 0.55 < firsts["a"] / 3000 < 0.65 and 0.25 < firsts["b"] / 3000 < 0.35 and 0.07 < firsts["c"] / 3000 < 0.13
    picks = {names(plan(rules, "claude", "m", HealthBoard(), NOW, session="one"))[0] for _ in range(50)}
    assert len(picks) == 1
    p = plan(rules, "claude", "m", HealthBoard(), NOW, session="one")
    rest = [n for n in "abc" if n != names(p)[0]]
    assert names(p)[1:] == rest and p.why_first.startswith("weighted pick")   # the rest in route order


def test_a_bound_session_goes_first_while_its_upstream_is_available_and_not_full():
    clock = Clock()
    quota, sessions = QuotaBoard(clock), SessionBindings(clock)
    rules = rules_with("{upstreams: [a, b, c], strategy: quota}")
    sessions.bind("claude", "s1", "c", ttl=3600)
    utilization(quota, "c", 0.9)           # the most used, but it holds the session's cache
    p = plan(rules, "claude", "m", HealthBoard(), NOW, quota=quota, sessions=sessions, session="s1")
    assert names(p)[0] == "c" and p.why_first == "kept session" and p.bound_to == "c"
    utilization(quota, "c", 0.96)          # full: the session moves on (and is bound anew after a 2xx)
    p = plan(rules, "claude", "m", HealthBoard(), NOW, quota=quota, sessions=sessions, session="s1")
    assert names(p)[0] == "a" and p.bound_to == "c"
    other = plan(rules, "claude", "m", HealthBoard(), NOW, quota=quota, sessions=sessions, session="s2")
    assert other.bound_to is None


def test_with_every_upstream_cooling_a_session_s_binding_is_still_known():
    """The one that recovers first is tried; the row then says the session moved (or stayed)."""
    clock = Clock()
    sessions, health = SessionBindings(clock), HealthBoard(clock)
    sessions.bind("claude", "s1", "b", ttl=3600)
    for name, seconds in (("a", 10), ("b", 60)):
        health.record_failure(name, "HTTP 503", threshold=1, cooldown=seconds)
    p = plan(rules_with("{upstreams: [a, b]}"), "claude", "m", health, NOW, sessions=sessions, session="s1")
    assert names(p) == ["a", "b"] and p.why_first == "recovers first" and p.bound_to == "b"


def test_sticky_off_ignores_bindings_and_ccswitch_use_beats_them():
    clock = Clock()
    sessions, health = SessionBindings(clock), HealthBoard(clock)
    sessions.bind("claude", "s1", "b", ttl=3600)
    off = plan(rules_with("{upstreams: [a, b, c], sticky: off}"), "claude", "m", health, NOW,
               sessions=sessions, session="s1")
    assert names(off)[0] == "a" and off.bound_to is None
    health.preferred = ("c", clock.now + 60)
    used = plan(rules_with("[a, b, c]"), "claude", "m", health, NOW, sessions=sessions, session="s1")
    assert names(used)[0] == "c" and used.why_first == "ccswitch.use"


def test_a_route_of_full_upstreams_without_a_known_reset_does_not_go_dark():
    clock = Clock()
    quota = QuotaBoard(clock)
    quota.record("a", [("anthropic-ratelimit-unified-status", "rejected")])       # full, no reset
    utilization(quota, "b", 0.97)
    utilization(quota, "c", 0.99)
    p = plan(rules_with("[a, b, c]"), "claude", "m", HealthBoard(clock), NOW, quota=quota)
    assert p.limited_for is None and names(p) == ["a"] and p.why_first == "recovers first"


def test_when_every_upstream_cools_down_the_first_two_to_recover_are_tried_full_ones_not():
    # after a blip put all in cooldown, the first failing again must not fail a request b or c would serve
    clock = Clock()
    health, quota = HealthBoard(clock), QuotaBoard(clock)
    for name, cooldown in (("a", 60), ("b", 30), ("c", 90)):
        health.record_failure(name, "HTTP 503", threshold=1, cooldown=cooldown)
    utilization(quota, "d", 0.99, reset_in=10)       # full: left out while something else is left
    p = plan(rules_with("[a, b, c, d]", weights=(1, 1, 1, 1), names="abcd"), "claude", "m", health, NOW, quota=quota)
    # two, not all: in a real outage each request would otherwise try every upstream
    assert names(p) == ["b", "a"] and p.why_first == "recovers first" and p.limited_for is None
    # one cooling after a 429 with a known reset will answer 429 again: not a second chance
    health.record_rate_limit("b", "HTTP 429", seconds=45, reset_known=True)   # past its cooldown's end
    p = plan(rules_with("[a, b, c, d]", weights=(1, 1, 1, 1), names="abcd"), "claude", "m", health, NOW, quota=quota)
    assert names(p) == ["a", "c"]


def test_an_upstream_serves_only_its_models_and_says_so():
    rules = parse_rules("""
upstreams:
  - {name: haiku-only, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-0123456789, only_models: ["claude-haiku-*"]}
  - {name: any, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-0123456789}
routes: {claude: [haiku-only, any]}
""")
    names = lambda model: [u.name for u in plan(rules, "claude", model, HealthBoard(), NOW).candidates]
    assert names("claude-haiku-4-5") == ["haiku-only", "any"]
    assert names("claude-haiku-4-5-thinking") == ["haiku-only", "any"]      # the suffix is ccswitch's own
    chosen = plan(rules, "claude", "claude-opus-4-5", HealthBoard(), NOW)
    assert [u.name for u in chosen.candidates] == ["any"]
    assert ("haiku-only", "not serving model 'claude-opus-4-5'") in chosen.blocked


def test_why_no_upstream_says_until_when_each_is_out():
    from datetime import UTC

    from ccswitch.routing.budget import UPSTREAM, SpendBoard
    clock = Clock()
    quota, health = QuotaBoard(clock), HealthBoard(clock)
    rules = parse_rules("timezone: UTC\nupstreams:\n"
                        "  - {name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-a-0000000}\n"
                        "  - {name: b, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-b-0000000,"
                        " budget: {daily: 1}}\nroutes:\n  claude: [a, b]\n")
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    spend = SpendBoard(clock=lambda: now)
    spend.configure(rules)
    spend.add(UPSTREAM, "b", 1.5)
    health.record_rate_limit("a", "HTTP 429", seconds=120, reset_known=True)
    p = plan(rules, "claude", "m", health, now, quota=quota, spend=spend)
    assert p.why_none("claude") == ("no upstream available for the claude route: a is cooling down until 12:02:00; "
                                    "b is over its daily budget ($1.00) until 2026-12-03 00:00 UTC")


def test_a_closed_route_is_back_when_the_first_upstream_that_opens_by_itself_opens():
    from datetime import UTC

    from ccswitch.routing.plan import back_in
    rules = parse_rules("timezone: UTC\nupstreams:\n"
                        "  - {name: late, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-l-0000000,"
                        " hours: ['16:00-18:00']}\n"
                        "  - {name: soon, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-s-0000000,"
                        " hours: ['14:00-15:00']}\n"
                        "  - {name: off, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-o-0000000,"
                        " hours: ['13:00-14:00']}\nroutes:\n  claude: [late, soon, off]\n")
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    health = HealthBoard()
    health.switch("off", False)          # switched off: it opens at 13:00 but takes nothing
    blocked = plan(rules, "claude", "m", health, now).blocked
    assert [name for name, _ in blocked] == ["late", "soon", "off"]
    assert back_in(rules, blocked, "m", health, now) == 2 * 3600
    assert back_in(rules, blocked[:1], "m", health, now) == 4 * 3600


def test_cooling_until_is_read_on_the_wall_clock_across_a_dst_change():
    from zoneinfo import ZoneInfo
    clock = Clock()
    health = HealthBoard(clock)
    rules = parse_rules("timezone: Europe/Berlin\nupstreams:\n"
                        "  - {name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-a-0000000}\n"
                        "routes:\n  claude: [a]\n")
    health.record_rate_limit("a", "HTTP 429", seconds=3600, reset_known=False)
    spring = datetime(2024, 3, 31, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))     # 02:00-03:00 is skipped that night
    p = plan(rules, "claude", "m", health, spring)
    assert ("a", "cooling down until 03:30:00") in p.blocked


def test_a_request_only_its_issuer_can_serve_goes_there_and_nowhere_else():
    rules = rules_with("{upstreams: [a, b, c], strategy: weighted}")
    health = HealthBoard(clock=Clock())
    p = plan(rules, "claude", "m", health, NOW, only="b")
    assert names(p) == ["b"]
    assert ("a", "not the issuer of the response this request continues (b)") in p.blocked
    health.record_failure("b", "HTTP 503", threshold=1, cooldown=60)
    p = plan(rules, "claude", "m", health, NOW, only="b")
    assert names(p) == ["b"] and p.why_first == "recovers first"        # its second chance, no one else's
    health.switch("b", False)
    assert names(plan(rules, "claude", "m", health, NOW, only="b")) == []
    # an issuer the route no longer has (a reload): routed as any request
    assert sorted(names(plan(rules, "claude", "m", HealthBoard(clock=Clock()), NOW, only="gone"))) == ["a", "b", "c"]


def test_an_upstream_whose_hours_begin_before_the_others_reset_makes_it_a_wait_for_it_not_their_429():
    # ccswitch's own 429 named the others' reset (retry-after 300, x-should-retry false): Claude
    # Code gave up, a minute before `a` opened
    rules = parse_rules("timezone: UTC\nupstreams:\n"
                        "  - {name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-a-0000000,"
                        " hours: ['12:02-18:00']}\n"
                        "  - {name: b, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-b-0000000}\n"
                        "routes:\n  claude: [a, b]\n")
    health = HealthBoard(clock=Clock())
    health.record_rate_limit("b", "HTTP 429", seconds=300, reset_known=True)
    p = plan(rules, "claude", "m", health, NOW)           # 12:00: `a` opens in two minutes
    assert p.candidates == [] and p.limited_for is None   # the route's 503, not b's second chance
    from ccswitch.routing.plan import back_in
    assert back_in(rules, p.blocked, "m", health, NOW) == 120
    health = HealthBoard(clock=Clock())
    health.record_rate_limit("b", "HTTP 429", seconds=60, reset_known=True)
    assert plan(rules, "claude", "m", health, NOW).limited_for == 60     # b is back first: its 429
