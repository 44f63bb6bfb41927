import math
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccswitch.routing.quota import QuotaBoard
from ccswitch.routing.rate_limits import (
    FARTHEST_RESET,
    Window,
    duration_seconds,
    parse_windows,
    rejection_reset,
    retry_after,
)

NOW = 1_750_000_000.0
U = "anthropic-ratelimit-unified-"


def by_name(windows: list[Window]) -> dict[str, Window]:
    return {w.name: w for w in windows}


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


# --------------------------------------------------------------------------- Anthropic subscription

def test_unified_windows_with_their_own_resets_and_names_case_insensitive():
    windows = by_name(parse_windows([
        ("Anthropic-RateLimit-Unified-Status", "allowed"),
        ("Anthropic-Ratelimit-Unified-5h-Utilization", "0.42"),
        ("anthropic-ratelimit-unified-5h-reset", str(int(NOW + 3600))),
        ("ANTHROPIC-RATELIMIT-UNIFIED-7D-UTILIZATION", "0.7"),
        ("anthropic-ratelimit-unified-7d-reset", str(int(NOW + 86400))),
        ("anthropic-ratelimit-unified-reset", str(int(NOW + 3600))),
        ("content-type", "application/json"),
    ], NOW))
    assert windows == {"5h": Window("5h", 0.42, NOW + 3600), "7d": Window("7d", 0.7, NOW + 86400)}


def test_other_unified_windows_are_read_the_same_way_and_overage_is_not_a_window():
    windows = by_name(parse_windows([
        (U + "status", "allowed"),
        (U + "7d_opus-utilization", "0.3"), (U + "7d_opus-reset", str(int(NOW + 500))),
        (U + "7d_sonnet-utilization", "0.1"),
        (U + "overage-status", "rejected"), (U + "overage-reset", str(int(NOW + 900))),
        (U + "overage-disabled-reason", "out_of_credits"),
        (U + "fallback-percentage", "0.5"),
    ], NOW))
    assert windows == {"7d_opus": Window("7d_opus", 0.3, NOW + 500), "7d_sonnet": Window("7d_sonnet", 0.1, None)}


REAL_5H_REJECTION = [   # a real 429 of a Max plan, shifted to NOW
    (U + "status", "rejected"),
    (U + "5h-status", "rejected"), (U + "5h-reset", str(int(NOW + 2094))), (U + "5h-utilization", "1.0"),
    (U + "7d-status", "allowed"), (U + "7d-reset", str(int(NOW + 110_000))), (U + "7d-utilization", "0.59"),
    (U + "representative-claim", "five_hour"),
    (U + "fallback-percentage", "0.5"),
    (U + "overage-disabled-reason", "out_of_credits"), (U + "overage-status", "rejected"),
    ("retry-after", "2094"),
]


def test_a_5h_rejection_rejects_only_the_5h_window_and_cools_until_its_reset_not_the_7d_one():
    windows = by_name(parse_windows(REAL_5H_REJECTION, NOW))
    assert windows["5h"] == Window("5h", 1.0, NOW + 2094, rejected=True)
    assert windows["7d"] == Window("7d", 0.59, NOW + 110_000, rejected=False)
    assert set(windows) == {"5h", "7d"}
    assert rejection_reset(REAL_5H_REJECTION, NOW) == NOW + 2094


def test_per_window_status_decides_before_the_claim_and_the_utilization():
    headers = [(U + "status", "rejected"), (U + "representative-claim", "five_hour"),
               (U + "5h-utilization", "1.0"), (U + "5h-reset", str(int(NOW + 100))),
               (U + "7d-status", "rejected"), (U + "7d-utilization", "0.99"), (U + "7d-reset", str(int(NOW + 5000)))]
    windows = by_name(parse_windows(headers, NOW))
    assert windows["7d"].rejected and not windows["5h"].rejected
    assert rejection_reset(headers, NOW) == NOW + 5000


@pytest.mark.parametrize("claim, window", [("seven_day", "7d"), ("five_hour", "5h"),
                                           ("seven_day_opus", "7d_opus"), ("SEVEN_DAY_SONNET", "7d_sonnet"),
                                           ("seven_day_overage_included", "7d_oi")])
def test_without_per_window_status_the_representative_claim_names_the_rejecting_window(claim, window):
    headers = [(U + "status", "rejected"), (U + "representative-claim", claim),
               (U + "5h-utilization", "0.5"), (U + "5h-reset", str(int(NOW + 100))),
               (U + "7d-utilization", "0.97"), (U + "reset", str(int(NOW + 7000)))]
    windows = by_name(parse_windows(headers, NOW))
    assert [w.name for w in windows.values() if w.rejected] == [window]
    # its own reset when it has one, else the unified reset (which is the binding window's)
    expected = NOW + 100 if window == "5h" else NOW + 7000
    assert windows[window].resets_at == expected
    assert rejection_reset(headers, NOW) == expected


def test_without_status_or_claim_a_used_up_window_is_the_rejecting_one():
    headers = [(U + "status", "rejected"),
               (U + "5h-utilization", "0.4"), (U + "5h-reset", str(int(NOW + 100))),
               (U + "7d-utilization", "1.0"), (U + "7d-reset", str(int(NOW + 9000)))]
    windows = by_name(parse_windows(headers, NOW))
    assert windows["7d"].rejected and not windows["5h"].rejected
    assert rejection_reset(headers, NOW) == NOW + 9000


def test_unified_rejected_without_any_window_is_an_overall_unified_window():
    headers = [(U + "status", "rejected"), (U + "reset", str(int(NOW + 1234)))]
    assert parse_windows(headers, NOW) == [Window("unified", 1.0, NOW + 1234, rejected=True)]
    assert rejection_reset(headers, NOW) == NOW + 1234
    assert parse_windows([(U + "status", "rejected")], NOW) == [Window("unified", 1.0, None, rejected=True)]


def test_a_window_spent_while_the_plan_still_serves_is_not_a_rejection():
    # e.g. one model's own allowance used up: status allowed_warning, that window says rejected
    headers = [(U + "status", "allowed_warning"), (U + "7d_oi-status", "rejected"),
               (U + "7d_oi-utilization", "1.02"), (U + "7d-utilization", "0.69")]
    windows = by_name(parse_windows(headers, NOW))
    assert windows["7d_oi"] == Window("7d_oi", 1.02, None, rejected=False)
    assert not any(w.rejected for w in windows.values())


def test_a_window_status_counts_when_the_overall_status_is_missing():
    headers = [(U + "5h-status", "rejected"), (U + "5h-reset", str(int(NOW + 60)))]
    assert parse_windows(headers, NOW) == [Window("5h", 1.0, NOW + 60, rejected=True)]
    garbled = [(U + "status", "maybe"), (U + "5h-utilization", "0.2")]
    assert parse_windows(garbled, NOW) == [Window("5h", 0.2, None)]


# --------------------------------------------------------------------------- Anthropic API keys, OpenAI, Codex

def test_anthropic_api_key_windows():
    headers = []
    for name, limit, remaining in [("requests", "50", "10"), ("tokens", "100000", "100000"),
                                   ("input-tokens", "80000", "0"), ("output-tokens", "0", "0")]:
        headers += [(f"anthropic-ratelimit-{name}-limit", limit), (f"anthropic-ratelimit-{name}-remaining", remaining),
                    (f"anthropic-ratelimit-{name}-reset", rfc3339(NOW + 30))]
    windows = by_name(parse_windows(headers, NOW))
    assert windows == {"requests": Window("requests", 0.8, NOW + 30), "tokens": Window("tokens", 0.0, NOW + 30),
                       "input-tokens": Window("input-tokens", 1.0, NOW + 30)}   # a limit of 0 means nothing


@pytest.mark.parametrize("limit, remaining, expected", [
    ("100", "150", 0.0),      # more left than the limit: nothing used
    ("100", "-1", None), ("-100", "5", None), (None, "5", None), ("100", None, None), ("x", "1", None),
    ("nan", "1", None), ("100", "inf", None),
])
def test_api_key_counts_that_make_no_sense(limit, remaining, expected):
    headers = [(f"anthropic-ratelimit-tokens-{field}", value)
               for field, value in (("limit", limit), ("remaining", remaining)) if value is not None]
    windows = parse_windows(headers, NOW)
    assert [w.utilization for w in windows] == ([] if expected is None else [expected])


def test_api_key_reset_without_a_zone_is_utc_and_a_bad_one_is_dropped():
    base = [("anthropic-ratelimit-requests-limit", "10"), ("anthropic-ratelimit-requests-remaining", "5")]
    naive = rfc3339(NOW + 60).removesuffix("Z")
    assert parse_windows([*base, ("anthropic-ratelimit-requests-reset", naive)], NOW)[0].resets_at == NOW + 60
    for bad in ("tomorrow", "", "9999-12-31T23:59:59Z", "2025-13-01T00:00:00Z"):
        assert parse_windows([*base, ("anthropic-ratelimit-requests-reset", bad)], NOW) == \
            [Window("requests", 0.5, None)]


@pytest.mark.parametrize("text, seconds", [
    ("6m0s", 360.0), ("1.5s", 1.5), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0s", 0.0), ("2", 2.0),
    ("  7s ", 7.0), ("150us", 0.00015), (".5s", 0.5),
    ("", None), ("-1s", None), ("-2", None), ("1x", None), ("s", None), ("1h-2m", None), ("inf", None),
    ("nan", None), ("1e999", None), ("6m0s junk", None), (None, None),
])
def test_openai_durations(text, seconds):
    got = duration_seconds(text)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_openai_windows_reset_after_their_duration():
    headers = [("x-ratelimit-limit-requests", "10000"), ("x-ratelimit-remaining-requests", "9990"),
               ("x-ratelimit-reset-requests", "6m0s"),
               ("X-RateLimit-Limit-Tokens", "2000000"), ("x-ratelimit-remaining-tokens", "500000"),
               ("x-ratelimit-reset-tokens", "1h2m3.5s"),
               ("x-ratelimit-limit-images", "5")]    # not a window ccswitch knows
    windows = by_name(parse_windows(headers, NOW))
    assert windows["requests"].utilization == pytest.approx(0.001)
    assert windows["requests"].resets_at == NOW + 360
    assert windows["tokens"] == Window("tokens", 0.75, NOW + 3723.5)
    assert set(windows) == {"requests", "tokens"}


def test_codex_windows_in_percent():
    headers = [("x-codex-primary-used-percent", "42"), ("x-codex-primary-reset-after-seconds", "3600"),
               ("x-codex-secondary-used-percent", "104.5"), ("x-codex-secondary-reset-after-seconds", "600000"),
               ("x-codex-credits-balance", "12.00")]
    windows = by_name(parse_windows(headers, NOW))
    assert windows["codex-primary"] == Window("codex-primary", 0.42, NOW + 3600)
    assert windows["codex-secondary"].utilization == pytest.approx(1.045)   # above 100 % is kept
    assert windows["codex-secondary"].resets_at == NOW + 600000


def test_codex_absolute_reset_wins_over_reset_after():
    headers = [("x-codex-primary-used-percent", "10"), ("x-codex-primary-reset-at", str(int(NOW + 100))),
               ("x-codex-primary-reset-after-seconds", "90")]
    assert parse_windows(headers, NOW) == [Window("codex-primary", 0.1, NOW + 100)]
    headers[1] = ("x-codex-primary-reset-at", "soon")
    assert parse_windows(headers, NOW) == [Window("codex-primary", 0.1, NOW + 90)]


# --------------------------------------------------------------------------- malformed values

MALFORMED = ["garbage", "-0.5", "nan", "NaN", "inf", "-inf", "", "1e999", "0x10", "½"]


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_utilization_drops_that_window_only(value):
    headers = [(U + "5h-utilization", value), (U + "7d-utilization", "0.5"),
               ("x-codex-primary-used-percent", value), ("x-codex-secondary-used-percent", "50")]
    assert parse_windows(headers, NOW) == [Window("7d", 0.5, None), Window("codex-secondary", 0.5, None)]


def _three_families_resetting(value: str) -> list[tuple[str, str]]:
    return [(U + "5h-utilization", "0.3"), (U + "5h-reset", value),
            ("x-ratelimit-limit-tokens", "10"), ("x-ratelimit-remaining-tokens", "7"),
            ("x-ratelimit-reset-tokens", value),
            ("x-codex-primary-used-percent", "30"), ("x-codex-primary-reset-after-seconds", value)]


@pytest.mark.parametrize("value", [*MALFORMED, "-5", str(NOW + FARTHEST_RESET + 10), "1e300", "1750000000000"])
def test_a_malformed_or_absurd_reset_drops_that_field_only(value):
    windows = parse_windows(_three_families_resetting(value), NOW)
    assert [(w.name, w.resets_at) for w in windows] == [("5h", None), ("tokens", None), ("codex-primary", None)]
    assert [w.utilization for w in windows] == pytest.approx([0.3, 0.3, 0.3])


def test_a_zero_reset_is_no_time_but_zero_seconds_to_wait_is_now():
    windows = parse_windows(_three_families_resetting("0"), NOW)
    assert [(w.name, w.resets_at) for w in windows] == [("5h", None), ("tokens", NOW), ("codex-primary", NOW)]


def test_big_but_finite_utilization_is_kept_as_is_and_minus_zero_is_zero():
    assert parse_windows([(U + "5h-utilization", "1e300")], NOW) == [Window("5h", 1e300, None)]
    assert str(parse_windows([(U + "5h-utilization", "-0")], NOW)[0].utilization) == "0.0"


def test_a_reset_in_the_past_is_kept_as_a_fact():
    assert parse_windows([(U + "5h-utilization", "0.9"), (U + "5h-reset", str(int(NOW - 5)))], NOW) == \
        [Window("5h", 0.9, NOW - 5)]


def test_no_rate_limit_headers_no_windows():
    assert parse_windows([], NOW) == []
    assert parse_windows([("content-type", "text/event-stream"), ("x-request-id", "1"), ("", "")], NOW) == []


ANY_NAME = st.sampled_from([
    *(U + f"{w}-{f}" for w in ("5h", "7d", "7d_opus", "overage", "x") for f in ("utilization", "reset", "status")),
    U + "status", U + "reset", U + "representative-claim",
    *(f"anthropic-ratelimit-{w}-{f}" for w in ("requests", "tokens", "input-tokens", "output-tokens")
      for f in ("limit", "remaining", "reset")),
    *(f"x-ratelimit-{f}-{w}" for w in ("requests", "tokens") for f in ("limit", "remaining", "reset")),
    *(f"x-codex-{w}-{f}" for w in ("primary", "secondary")
      for f in ("used-percent", "reset-after-seconds", "reset-at")),
    "retry-after", "retry-after-ms",
]) | st.builds(lambda window, field: U + window + field, st.text(max_size=8),
               st.sampled_from(["-utilization", "-reset", "-status", ""])) | st.text(max_size=40)
NUMBERISH = st.one_of(st.text(max_size=30), st.floats(allow_nan=True, allow_infinity=True).map(str),
                      st.integers(min_value=-10**30, max_value=10**30).map(str),
                      st.sampled_from(["rejected", "allowed", "allowed_warning", "five_hour", "6m0s", "1h2m3.5s",
                                       "Wed, 21 Oct 2015 07:28:00 GMT", "2025-06-15T12:00:00Z", "-0000"]))


@given(st.lists(st.tuples(ANY_NAME, NUMBERISH), max_size=12),
       st.floats(min_value=1.0, max_value=4e9))
def test_parsing_never_raises_and_every_window_is_sane(headers, now):
    windows = parse_windows(headers, now)
    for w in windows:
        assert math.isfinite(w.utilization) and w.utilization >= 0
        assert w.resets_at is None or (math.isfinite(w.resets_at) and 0 < w.resets_at <= now + FARTHEST_RESET)
    reset = rejection_reset(headers, now)
    assert reset is None or (math.isfinite(reset) and now <= reset <= now + FARTHEST_RESET)
    board = QuotaBoard(clock=lambda: now)
    board.record("a", headers)
    assert {w.name for w in board.windows("a")} <= {w.name for w in windows}


# --------------------------------------------------------------------------- retry-after and rejection_reset

def test_retry_after_forms():
    assert retry_after([("Retry-After", "7")], NOW) == 7.0
    assert retry_after([("retry-after-ms", "250"), ("retry-after", "9")], NOW) == 0.25
    assert retry_after([("retry-after-ms", "soon"), ("retry-after", "9")], NOW) == 9.0
    date = format_datetime(datetime.fromtimestamp(NOW + 20, UTC), usegmt=True)
    assert retry_after([("retry-after", date)], NOW) == 20.0
    minus_zero = format_datetime(datetime.fromtimestamp(NOW + 20, UTC).replace(tzinfo=None))   # "... -0000"
    assert minus_zero.endswith("-0000") and retry_after([("retry-after", minus_zero)], NOW) == 20.0
    past = format_datetime(datetime.fromtimestamp(NOW - 20, UTC), usegmt=True)
    assert retry_after([("retry-after", past)], NOW) == 0.0
    for bad in ("soon", "", "-5", "nan", "inf", "1e999", str(FARTHEST_RESET * 2)):
        assert retry_after([("retry-after", bad)], NOW) is None
    assert retry_after([], NOW) is None


def test_rejection_reset_falls_back_to_retry_after_then_a_used_up_window():
    api_key_429 = [("anthropic-ratelimit-tokens-limit", "1000"), ("anthropic-ratelimit-tokens-remaining", "0"),
                   ("anthropic-ratelimit-tokens-reset", rfc3339(NOW + 300)),
                   ("anthropic-ratelimit-requests-limit", "50"), ("anthropic-ratelimit-requests-remaining", "49"),
                   ("anthropic-ratelimit-requests-reset", rfc3339(NOW + 900))]
    assert rejection_reset([*api_key_429, ("retry-after", "60")], NOW) == NOW + 60
    assert rejection_reset([*api_key_429, ("retry-after-ms", "1500")], NOW) == NOW + 1.5
    assert rejection_reset(api_key_429, NOW) == NOW + 300     # the window with nothing left, not the latest
    openai_429 = [("x-ratelimit-limit-requests", "60"), ("x-ratelimit-remaining-requests", "0"),
                  ("x-ratelimit-reset-requests", "20ms"),
                  ("x-ratelimit-limit-tokens", "1000"), ("x-ratelimit-remaining-tokens", "10"),
                  ("x-ratelimit-reset-tokens", "6m0s")]
    assert rejection_reset(openai_429, NOW) == pytest.approx(NOW + 0.02)
    codex_429 = [("x-codex-primary-used-percent", "100"), ("x-codex-primary-reset-after-seconds", "1800"),
                 ("x-codex-secondary-used-percent", "40"), ("x-codex-secondary-reset-after-seconds", "400000")]
    assert rejection_reset(codex_429, NOW) == NOW + 1800
    assert rejection_reset([("x-codex-primary-used-percent", "60"), ("retry-after", "garbage")], NOW) is None
    assert rejection_reset([], NOW) is None


def test_rejection_reset_takes_a_reset_reported_without_a_window_when_nothing_else_says():
    assert rejection_reset([(U + "reset", str(int(NOW + 120)))], NOW) == NOW + 120
    # a window still serving (a status, a utilization) is no lone reset: its reset may be hours away
    assert rejection_reset([(U + "status", "allowed"), (U + "reset", str(int(NOW + 14400)))], NOW) is None
    assert rejection_reset([(U + "5h-utilization", "0.12"), (U + "reset", str(int(NOW + 14400)))], NOW) is None
    assert rejection_reset([(U + "reset", str(int(NOW + 120)))], NOW, lone=False) is None
    assert rejection_reset([("anthropic-ratelimit-tokens-reset", rfc3339(NOW + 150))], NOW) == NOW + 150
    assert rejection_reset([("x-ratelimit-reset-tokens", "1m30s")], NOW) == NOW + 90
    assert rejection_reset([("x-codex-primary-reset-after-seconds", "45")], NOW) == NOW + 45
    # the plan's unified reset is the rejecting window's; of other lone resets, the soonest
    assert rejection_reset([("anthropic-ratelimit-tokens-reset", rfc3339(NOW + 50)),
                            (U + "reset", str(int(NOW + 120)))], NOW) == NOW + 120
    assert rejection_reset([("anthropic-ratelimit-tokens-reset", rfc3339(NOW + 150)),
                            ("anthropic-ratelimit-requests-reset", rfc3339(NOW + 60))], NOW) == NOW + 60
    # what says more wins over a lone reset; a passed one is none
    assert rejection_reset([(U + "reset", str(int(NOW + 120))), ("retry-after", "30")], NOW) == NOW + 30
    assert rejection_reset([(U + "reset", str(int(NOW - 5)))], NOW) is None


def test_rejection_reset_when_two_windows_reject_waits_for_both_and_ignores_a_passed_reset():
    both = [(U + "status", "rejected"), (U + "5h-status", "rejected"), (U + "5h-reset", str(int(NOW + 100))),
            (U + "7d-status", "rejected"), (U + "7d-reset", str(int(NOW + 8000)))]
    assert rejection_reset(both, NOW) == NOW + 8000
    stale = [(U + "status", "rejected"), (U + "5h-status", "rejected"), (U + "5h-reset", str(int(NOW - 1))),
             ("retry-after", "30")]
    assert rejection_reset(stale, NOW) == NOW + 30


# --------------------------------------------------------------------------- the board

def test_record_keeps_windows_until_their_reset():
    clock = Clock()
    board = QuotaBoard(clock=clock)
    board.record("max-1", [(U + "5h-utilization", "0.5"), (U + "5h-reset", str(int(NOW + 100))),
                           (U + "7d-utilization", "0.2"), (U + "7d-reset", str(int(NOW + 1000)))])
    assert board.utilization("max-1") == (0.5, Window("5h", 0.5, NOW + 100))
    clock.now = NOW + 100      # the 5h window reset: its utilization is no longer known
    assert board.windows("max-1") == [Window("7d", 0.2, NOW + 1000)]
    assert board.utilization("max-1") == (0.2, Window("7d", 0.2, NOW + 1000))
    clock.now = NOW + 1000
    assert board.windows("max-1") == [] and board.utilization("max-1") is None
    assert board.utilization("never-seen") is None and board.full("never-seen", 0.95) is None


def test_a_window_without_a_reset_lives_for_the_ttl():
    clock = Clock()
    board = QuotaBoard(clock=clock, unknown_reset_ttl=60)
    board.record("relay", [("x-ratelimit-limit-tokens", "100"), ("x-ratelimit-remaining-tokens", "3")])
    assert board.full("relay", 0.95) == Window("tokens", 0.97, None)
    assert board.full_until("relay", 0.95) == NOW + 60
    clock.now = NOW + 59.9
    assert board.windows("relay")
    clock.now = NOW + 60
    assert board.windows("relay") == [] and board.full("relay", 0.95) is None


def test_a_named_window_is_replaced_and_unnamed_or_malformed_ones_stay():
    clock = Clock()
    board = QuotaBoard(clock=clock)
    board.record("a", [(U + "5h-utilization", "0.9"), (U + "5h-reset", str(int(NOW + 100))),
                       (U + "7d-utilization", "0.4"), (U + "7d-reset", str(int(NOW + 1000)))])
    clock.now = NOW + 10
    board.record("a", [(U + "5h-utilization", "0.1"), (U + "5h-reset", str(int(NOW + 200))),
                       (U + "7d-utilization", "garbage")])
    assert by_name(board.windows("a")) == {"5h": Window("5h", 0.1, NOW + 200), "7d": Window("7d", 0.4, NOW + 1000)}
    board.record("b", [("x-codex-primary-used-percent", "99")])
    assert [w.name for w in board.windows("a")] == ["5h", "7d"]


def test_record_without_rate_limit_headers_does_not_even_read_the_clock():
    clock = Clock()
    board = QuotaBoard(clock=clock)
    board.record("a", [("content-type", "application/json"), ("x-request-id", "r1"), ("anthropic-version", "1")])
    board.record("a", [])
    assert clock.calls == 0 and board.windows("a") == []


def test_full_picks_the_window_that_resets_last_among_the_full_ones():
    board = QuotaBoard(clock=Clock())
    board.record("a", [(U + "5h-utilization", "0.96"), (U + "5h-reset", str(int(NOW + 100))),
                       (U + "7d-utilization", "0.97"), (U + "7d-reset", str(int(NOW + 5000))),
                       (U + "7d_opus-utilization", "0.5"), (U + "7d_opus-reset", str(int(NOW + 9000)))])
    assert board.full("a", 0.95) == Window("7d", 0.97, NOW + 5000)
    assert board.full_until("a", 0.95) == NOW + 5000
    assert board.full("a", 0.965) == Window("7d", 0.97, NOW + 5000)
    assert board.full("a", 0.98) is None and board.full_until("a", 0.98) is None
    assert board.full("a", 0.5) == Window("7d_opus", 0.5, NOW + 9000)   # >= drain_at counts


def test_a_rejected_window_is_full_whatever_its_utilization_until_its_own_reset():
    clock = Clock()
    board = QuotaBoard(clock=clock)
    board.record("a", REAL_5H_REJECTION)
    assert board.full("a", 0.95) == Window("5h", 1.0, NOW + 2094, rejected=True)
    board.record("b", [(U + "status", "rejected"), (U + "5h-status", "rejected"), (U + "5h-utilization", "0.3"),
                       (U + "5h-reset", str(int(NOW + 50))), (U + "7d-utilization", "0.1"),
                       (U + "7d-reset", str(int(NOW + 900)))])
    assert board.full("b", 0.95) == Window("5h", 0.3, NOW + 50, rejected=True)
    clock.now = NOW + 2094
    assert board.full("a", 0.95) is None
    assert board.utilization("a") == (0.59, Window("7d", 0.59, NOW + 110_000))


def test_an_allowed_status_clears_an_overall_rejection():
    clock = Clock()
    board = QuotaBoard(clock=clock)
    board.record("a", [(U + "status", "rejected"), (U + "reset", str(int(NOW + 3000)))])
    assert board.full("a", 0.95) == Window("unified", 1.0, NOW + 3000, rejected=True)
    board.record("a", [(U + "status", "allowed_warning")])
    assert board.full("a", 0.95) is None and board.windows("a") == []


def test_utilization_prefers_a_rejected_window_on_a_tie():
    board = QuotaBoard(clock=Clock())
    board.record("a", [(U + "status", "rejected"), (U + "7d-status", "rejected"), (U + "7d-utilization", "1.0"),
                       (U + "5h-utilization", "1.0")])
    assert board.utilization("a") == (1.0, Window("7d", 1.0, None, rejected=True))


def test_sync_and_forget():
    board = QuotaBoard(clock=Clock())
    for name in ("a", "b", "c"):
        board.record(name, [("x-codex-primary-used-percent", "50")])
    board.sync(["a", "b", "new"])
    assert board.windows("c") == [] and board.windows("a") and board.windows("b")
    board.forget("a")
    board.forget("never-seen")
    assert board.windows("a") == [] and board.windows("b")


def test_a_window_exactly_at_drain_at_is_full_until_its_reset_and_a_rejection_outranks_a_tie():
    board = QuotaBoard(clock=lambda: NOW)
    board.record("a", [(U + "5h-utilization", "0.95"), (U + "5h-reset", str(int(NOW + 100)))])
    assert board.full("a", 0.95) is not None and board.full_until("a", 0.95) == NOW + 100
    tie = QuotaBoard(clock=lambda: NOW)
    tie.record("a", [(U + "5h-utilization", "1.0"), (U + "5h-reset", str(int(NOW + 100))),
                     (U + "7d-utilization", "1.0"), (U + "7d-reset", str(int(NOW + 1000))),
                     (U + "status", "rejected"), (U + "7d-status", "rejected"), (U + "5h-status", "allowed")])
    assert tie.utilization("a")[1].name == "7d" and tie.utilization("a")[1].rejected


# ------------------------------------------------------------------ routing/limits.py: learnt from an answer

def _boards(now: float = NOW):
    from ccswitch.routing.health import HealthBoard
    return HealthBoard(clock=lambda: 1000.0), QuotaBoard(clock=Clock(now))


def _cooling(health) -> tuple[float, bool]:
    return health.cooling_until("a") - health.clock(), health.get("a").rate_limited


def test_a_429_that_says_nothing_cools_until_the_full_window_last_seen_resets():
    from ccswitch.routing.limits import cool_rate_limited
    health, quota = _boards()
    quota.record("a", [(U + "5h-utilization", "1.0"), (U + "5h-reset", str(int(NOW + 500)))])
    cool_rate_limited(health, quota, "a", "HTTP 429", [], 600.0, refusal=True)
    assert _cooling(health) == (500.0, True)


def test_a_429_that_says_wait_zero_seconds_cools_for_the_configured_cooldown():
    from ccswitch.routing.limits import cool_rate_limited
    health, quota = _boards()
    cool_rate_limited(health, quota, "a", "HTTP 429", [("retry-after", "0")], 600.0, refusal=True)
    assert _cooling(health) == (600.0, False)


def test_a_reset_reported_without_a_window_is_a_refusals_own_not_a_2xx_heads():
    from ccswitch.routing.limits import cool_rate_limited
    head = [(U + "reset", str(int(NOW + 300)))]
    health, quota = _boards()
    cool_rate_limited(health, quota, "a", "rate_limit_error", head, 600.0, refusal=False)
    assert _cooling(health) == (600.0, False)      # a 2xx head's routine reset may be hours away
    health, quota = _boards()
    cool_rate_limited(health, quota, "a", "HTTP 429", head, 600.0, refusal=True)
    assert _cooling(health) == (300.0, True)


def test_an_answer_that_makes_an_upstream_full_by_a_rejection_says_it_rejects_requests():
    from ccswitch.routing.events import Events
    from ccswitch.routing.limits import learn_windows
    events, heard = Events(), []
    events.subscribe(heard.append)
    quota = QuotaBoard(clock=Clock())
    learn_windows(quota, events, "a", REAL_5H_REJECTION, 0.95)
    [event] = heard
    assert event.reason == "its 5h window is at 100% (drain_at 95%), rejecting requests: skipped until it resets"
