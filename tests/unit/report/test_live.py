"""The live page's data: counters from ledger rows, today's totals, upstream states, status.json."""

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.dial.job import CLIENT_CLOSED, Attempt
from ccswitch.ledger.rows import own_answer_row
from ccswitch.report import prices
from ccswitch.report.live import DURATION_BUCKETS, Histogram, LiveBoard, attempt_outcome
from ccswitch.report.live_status import live_status, upstream_views
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.budget import UPSTREAM, SpendBoard
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.quota import QuotaBoard
from ccswitch.wire.protocols import said_in
from ccswitch.wire.usage import Usage
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B, make_job, rules_for
from tests.support.live_rows import NOON_ISH, TZ, USAGE, finished, note, rules

# the boards' clocks read NOON_ISH: requests counted in "today" began then, whatever day the tests run
AT_NOON = datetime.fromtimestamp(NOON_ISH, UTC)


def test_a_failed_over_request_counts_once_with_both_attempts_its_tokens_and_cost():
    r = rules()
    board = LiveBoard(clock=lambda: NOON_ISH)
    note(board, r, finished(r, Attempt("a", 529, "HTTP 529", 120), Attempt("b", 200, None, 1400, USAGE)))
    assert board.requests == {("claude", "b", "200"): 1}
    assert board.failovers == 1
    assert board.attempts == {("a", "http_529"): 1, ("b", "ok"): 1}
    assert board.tokens == {("b", "input"): 1000, ("b", "output"): 200, ("b", "cache_creation"): 3000,
                            ("b", "cache_read"): 50_000, ("b", "reasoning"): 40}
    expected = prices.cost("claude-sonnet-4-5", 1000, 200, 3000, 0, 50_000)
    assert expected and board.cost["b"] == pytest.approx(expected)
    hist = board.duration[("claude", "b")]
    assert hist.count == 1 and hist.sum == pytest.approx(1.5)
    assert board.ttfb[("claude", "b")].sum == pytest.approx(0.3)


def test_cost_uses_the_billed_model_and_the_upstreams_price_multiplier_and_counts_unpriced_tokens():
    r = rules_for(("a", "anthropic", "http://127.0.0.1:9"), extra="timezone: UTC\n")
    r = r.model_copy(update={"upstreams": (r.upstreams[0].model_copy(update={"price_multiplier": 0.5}),)})
    board = LiveBoard(clock=lambda: NOON_ISH)
    note(board, r, finished(r, Attempt("a", 200, None, 10, USAGE), model="claude-x", at=AT_NOON,
                            upstream_model="claude-haiku-4-5"))
    assert board.cost["a"] == pytest.approx(prices.cost("claude-haiku-4-5", 1000, 200, 3000, 0, 50_000) * 0.5)
    note(board, r, finished(r, Attempt("a", 200, None, 10, USAGE), model="no-such-model-7", at=AT_NOON))
    assert board.unpriced["a"] == 1000 + 200 + 3000 + 50_000
    today = board.totals(UTC)
    assert today.requests == 2 and today.unpriced_tokens == 54_200 and today.cost_usd == pytest.approx(board.cost["a"])


def test_an_attempt_that_failed_over_on_an_in_stream_error_says_so_as_the_metrics_do():
    """Its status was 200, but it failed: the page must not read "a 200 → b 200"."""
    r = rules()
    board = LiveBoard(clock=lambda: NOON_ISH)
    note(board, r, finished(r, Attempt("a", 200, "stream error: overloaded_error: busy", 120),
                            Attempt("b", 200, None, 900, USAGE), at=AT_NOON))
    now = datetime.fromtimestamp(NOON_ISH, UTC)
    [served] = live_status(board, [], r, now)["recent"]
    # and why, which the word alone does not tell (an overload, a timeout): only the log said it
    assert served["attempts"] == [{"upstream": "a", "result": "stream_error", "why": "stream error: overloaded_error: busy"},
                                  {"upstream": "b", "result": "200", "why": None}]
    assert board.attempts == {("a", "stream_error"): 1, ("b", "ok"): 1}


def test_an_attempt_answered_with_an_error_status_says_the_upstream_s_own_message():
    r = rules()
    board = LiveBoard(clock=lambda: NOON_ISH)
    note(board, r, finished(r, Attempt("a", 400, "HTTP 400", 30, said=f"credit balance too low for {KEY_A}"),
                            Attempt("b", 529, "HTTP 529", 40), Attempt("b", 200, None, 900, USAGE), at=AT_NOON))
    [served] = live_status(board, [], r, datetime.fromtimestamp(NOON_ISH, UTC))["recent"]
    assert served["attempts"] == [{"upstream": "a", "result": "400", "why": "credit balance too low for [redacted]"},
                                  {"upstream": "b", "result": "529", "why": None},
                                  {"upstream": "b", "result": "200", "why": None}]


@pytest.mark.parametrize(("body", "said"), [
    (b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', "Overloaded"),
    (b'{"error":{"message":"Rate limit reached\\nfor gpt-5","type":"requests","code":"rate_limit_exceeded"}}',
     "Rate limit reached for gpt-5"),
    (b'{"message":"upstream timed out"}', "upstream timed out"),
    (b'{"error":"plain"}', None), (b'{"error":{"message":""}}', None), (b"<html>502</html>", None), (b"", None),
    (b'{"error":{"message":"' + b"x" * 400 + b'"}}', "x" * 299 + "…"),
    (b'{"error":{"message":"' + b"x" * 300 + b'"}}', "x" * 300),                # at the limit: whole
    (b'{"error":{"message":"too\\tmany   spaces\\r\\nhere"}}', "too many spaces here"),
    (b'{"error":{"message":" \\n\\t "}}', None), (b'{"error":{"message":"cut sh', None),
])
def test_an_error_answer_s_message_is_read_from_its_body(body, said):
    assert said_in(body, []) == said


def test_an_error_answer_s_message_is_scrubbed_whole_before_it_is_cut():
    """Decoded, a key the upstream wrote in JSON escapes is plain text; cut first, a key at the
    limit would be half a key, which no scrub finds."""
    escaped = KEY_A[0] + "\\u00" + format(ord(KEY_A[1]), "x") + KEY_A[2:]
    body = ('{"error":{"message":"invalid x-api-key: ' + escaped + '"}}').encode()
    assert said_in(body, [KEY_A]) == "invalid x-api-key: [redacted]"
    long = ('{"error":{"message":"' + "x" * 280 + " " + KEY_A + '"}}').encode()
    said = said_in(long, [KEY_A])
    assert said == "x" * 280 + " [redacted]" and KEY_A[:12] not in said


def test_a_model_without_a_price_has_no_cost_even_when_its_answer_had_no_tokens():
    """An upstream's 400 carries no usage: its cost is still unknown ("?"), never $0.00."""
    r = rules_for(("a", "anthropic", "http://127.0.0.1:9"), extra="timezone: UTC\n")
    board = LiveBoard(clock=lambda: NOON_ISH)
    note(board, r, finished(r, Attempt("a", 400, "HTTP 400", 10), model="no-such-model-7", at=AT_NOON))
    [served] = board.recent
    now = datetime.fromtimestamp(NOON_ISH, UTC)
    assert served.cost_usd is None and live_status(board, [], r, now)["recent"][0]["cost_usd"] is None
    assert "a" not in board.cost and "a" not in board.unpriced      # nothing priced, no tokens unpriced
    assert board.totals(UTC).cost_usd == 0 and board.totals(UTC).unpriced_tokens == 0


def test_an_own_answer_counts_with_no_upstream_no_attempts_and_as_an_error():
    board = LiveBoard(clock=lambda: NOON_ISH)
    row = own_answer_row(request_id="f1", started_at=datetime.fromtimestamp(NOON_ISH, UTC), route="claude",
                         endpoint="messages", model="m", stream=True, status=401,
                         error="missing or invalid ccswitch client key", latency_ms=1)
    board.note(row, [], 0.0)      # as the gateway prices it: no upstream answered, nothing spent
    assert board.requests == {("claude", "", "401"): 1} and board.attempts == {} and board.failovers == 0
    assert board.cost == {}          # and no cost series for "no upstream"
    assert board.totals(ZoneInfo(TZ)).errors == 1
    assert board.duration[("claude", "")].count == 1


@pytest.mark.parametrize("status,error,outcome", [
    (200, None, "ok"), (200, "overloaded_error: busy", "stream_error"), (529, "HTTP 529", "http_529"),
    (None, "connect timed out", "network"), (None, CLIENT_CLOSED, "client_closed"), (200, CLIENT_CLOSED, "client_closed"),
    (200, "killed", "client_closed"),     # cut from the client's side, by the user
])
def test_attempt_outcomes_are_a_small_vocabulary(status, error, outcome):
    assert attempt_outcome(status, error) == outcome


def test_the_page_names_a_killed_attempt_so():
    from ccswitch.report.live import attempt_result
    assert attempt_result(200, "killed") == "killed" and attempt_result(200, CLIENT_CLOSED) == "client_closed"


def test_a_request_whose_client_left_has_status_client_closed():
    r = rules()
    board = LiveBoard(clock=lambda: NOON_ISH)
    job = finished(r, Attempt("a", None, CLIENT_CLOSED, 50))
    job.upstream, job.status = None, None
    note(board, r, job)
    assert board.requests == {("claude", "", "client_closed"): 1}


def test_todays_totals_follow_the_report_and_turn_over_at_local_midnight():
    r = rules()
    now = [NOON_ISH]
    board = LiveBoard(clock=lambda: now[0])
    berlin = ZoneInfo(TZ)
    note(board, r, finished(r, Attempt("a", 529, "HTTP 529", 5), Attempt("b", 200, None, 10, USAGE), at=AT_NOON))
    note(board, r, finished(r, Attempt("a", 500, "HTTP 500", 5), at=AT_NOON))
    note(board, r, finished(r, Attempt("a", 200, None, 5, Usage(input_tokens=7)), path="/v1/messages/count_tokens",
                            at=AT_NOON))
    today = board.totals(berlin)
    assert (today.requests, today.failovers, today.errors, today.count_tokens) == (2, 1, 1, 1)
    assert (today.input, today.output, today.cache_creation, today.cache_read, today.reasoning) == (1000, 200, 3000, 50_000, 40)
    # the next local day: yesterday's totals are not today's
    tomorrow = datetime(2026, 12, 3, 0, 0, 30, tzinfo=berlin)
    now[0] = tomorrow.timestamp()
    assert board.totals(berlin).requests == 0
    note(board, r, finished(r, Attempt("a", 200, None, 5, USAGE), at=tomorrow.astimezone(UTC)))
    # a request that began before midnight and finished after it stays yesterday's
    note(board, r, finished(r, Attempt("a", 200, None, 5, USAGE), at=tomorrow.astimezone(UTC) - timedelta(minutes=2)))
    assert board.totals(berlin).requests == 1
    # counters since start keep everything
    assert sum(board.requests.values()) == 5


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kathmandu", "Pacific/Kiritimati"])
def test_a_reload_to_another_zone_shows_that_zones_today_from_the_requests_already_counted(zone):
    """Today is the requests since the zone's own midnight: one a reload moves to (a day behind,
    or ahead, or on a :45 offset) keeps what it already holds of them, and its `since` is right."""
    shanghai = rules_for(("a", "anthropic", "http://127.0.0.1:9"), extra="timezone: Asia/Shanghai\n")
    start = datetime(2026, 12, 4, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))      # 01:00 UTC
    now = [start.timestamp()]
    board = LiveBoard(clock=lambda: now[0])
    for minutes in range(0, 600, 30):       # 20 requests from 09:00 to 18:30 in Shanghai
        note(board, shanghai, finished(shanghai, Attempt("a", 200, None, 5, USAGE),
                                       at=(start + timedelta(minutes=minutes)).astimezone(UTC)))
    now[0] = (start + timedelta(minutes=600)).timestamp()
    other = ZoneInfo(zone)
    midnight = datetime.fromtimestamp(now[0], other).replace(hour=0, minute=0, second=0, microsecond=0)
    expected = sum(1 for minutes in range(0, 600, 30) if start + timedelta(minutes=minutes) >= midnight)
    assert board.totals(other).requests == expected and board.totals(ZoneInfo("Asia/Shanghai")).requests == 20
    assert board.since(other) == max(datetime.fromtimestamp(board.started, other), midnight)


def test_slices_older_than_any_zones_day_are_let_go():
    r = rules()
    now = [NOON_ISH]
    board = LiveBoard(clock=lambda: now[0])
    for hours in range(0, 72, 2):
        note(board, r, finished(r, Attempt("a", 200, None, 5, USAGE),
                                at=datetime.fromtimestamp(NOON_ISH + hours * 3600, UTC)))
    assert len(board.slices) <= 26 * 4 and min(board.slices) > (NOON_ISH + 70 * 3600) // 900 - 26 * 4


def test_today_begins_at_start_or_midnight_whichever_is_later():
    board = LiveBoard(clock=lambda: NOON_ISH)
    berlin = ZoneInfo(TZ)
    assert board.since(berlin) == datetime.fromtimestamp(NOON_ISH, berlin)
    board.started = NOON_ISH - 86400
    assert board.since(berlin) == datetime(2026, 12, 2, tzinfo=berlin)


def test_today_in_the_second_of_two_midnights_begins_at_the_first():
    # Havana's clocks went from 01:00 back to 00:00 on 2024-11-03: at 00:30 the second time,
    # today began an hour and a half ago, not half an hour
    havana = ZoneInfo("America/Havana")
    board = LiveBoard(clock=lambda: datetime(2024, 11, 3, 5, 30, tzinfo=UTC).timestamp())
    board.started = 0
    assert board.since(havana).timestamp() == datetime(2024, 11, 3, 4, 0, tzinfo=UTC).timestamp()


def test_the_histogram_counts_a_value_on_a_bound_in_that_bucket_and_is_cumulative():
    hist = Histogram(DURATION_BUCKETS)
    for value in (0.1, 0.2, 5.0, 700.0):
        hist.observe(value)
    cumulative = dict(hist.cumulative())
    assert cumulative[0.1] == 1 and cumulative[0.25] == 2 and cumulative[5.0] == 3 and cumulative[600.0] == 3
    assert cumulative[float("inf")] == 4 == hist.count
    assert [n for _, n in hist.cumulative()] == sorted(n for _, n in hist.cumulative())


def test_only_the_last_fifty_requests_are_kept():
    r = rules()
    board = LiveBoard(clock=lambda: NOON_ISH)
    for i in range(60):
        note(board, r, finished(r, Attempt("a", 200, None, i), latency=i))
    assert len(board.recent) == 50 and board.recent[0].latency_ms == 10 and board.recent[-1].latency_ms == 59


# ---------------------------------------------------------------- upstream states and status.json

class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def boards():
    wall = Clock(NOON_ISH)
    return HealthBoard(clock=wall), QuotaBoard(clock=wall), SessionBindings(clock=wall), wall


STATES_RULES = f"""
timezone: {TZ}
failover: {{threshold: 1, cooldown: 90}}
upstreams:
  - {{name: ok, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: cool, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: full, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: off, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: night, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}', hours: ["03:00-04:00"]}}
routes: {{claude: [ok, cool, full, off], chat: [night]}}
"""


def test_upstream_states_name_each_reason_and_when_it_ends():
    r = parse_rules(STATES_RULES)
    health, quota, sessions, wall = boards()
    now = datetime.fromtimestamp(wall(), ZoneInfo(TZ))
    health.record_failure("cool", "HTTP 529", threshold=1, cooldown=90)
    quota.record("full", [("anthropic-ratelimit-unified-5h-utilization", "0.97"),
                          ("anthropic-ratelimit-unified-5h-reset", str(int(wall() + 1800)))])
    quota.record("ok", [("anthropic-ratelimit-unified-5h-utilization", "0.42"),
                        ("anthropic-ratelimit-unified-5h-reset", str(int(wall() + 3600)))])
    health.switch("off", False)
    sessions.bind("claude", "s1", "ok", 3600)
    sessions.bind("claude", "s2", "ok", 3600)
    views = {v.name: v for v in upstream_views(r, health, quota, sessions, now)}
    assert views["ok"].state == "available" and views["ok"].up and views["ok"].sessions == 2
    assert views["ok"].utilization == pytest.approx(0.42) and views["ok"].window == "5h"
    assert views["ok"].resets_at == now + timedelta(seconds=3600)
    assert views["cool"].state == "cooling" and views["cool"].until == now + timedelta(seconds=90)
    assert views["cool"].last_error == "HTTP 529" and views["cool"].failures == 1 and not views["cool"].up
    assert views["full"].state == "full" and views["full"].until == now + timedelta(seconds=1800)
    assert "full until" in views["full"].detail and "5h window" in views["full"].detail
    assert views["off"].state == "disabled" and views["off"].detail == "disabled by ccswitch.disable"
    assert views["night"].state == "outside_hours" and "outside its hours" in views["night"].detail
    # and when its hours let it in again (the page's "left" read "–", though the 503 knew it)
    opens = views["night"].until
    assert opens is not None and opens > now and f"{opens:%H:%M}" == "03:00"
    assert views["night"].routes == ("chat",) and views["ok"].routes == ("claude",)


def test_an_upstream_cooling_and_full_says_the_later_of_the_two_ends():
    # a 429 with retry-after 10 and its window full for 60 s read "cooling down until" +10 s,
    # though the upstream was out for 60 s, then turned to "full until" +60 s
    r = parse_rules(STATES_RULES)
    health, quota, sessions, wall = boards()
    now = datetime.fromtimestamp(wall(), ZoneInfo(TZ))
    health.record_rate_limit("cool", "HTTP 429", seconds=10, reset_known=True)
    quota.record("cool", [("anthropic-ratelimit-unified-5h-utilization", "0.99"),
                          ("anthropic-ratelimit-unified-5h-reset", str(int(wall() + 60)))])
    view = {v.name: v for v in upstream_views(r, health, quota, sessions, now)}["cool"]
    assert view.state == "full" and view.until == now + timedelta(seconds=60) and "5h window" in view.detail
    health.record_rate_limit("cool", "HTTP 429", seconds=120, reset_known=True)   # the cooldown outlasts it
    view = {v.name: v for v in upstream_views(r, health, quota, sessions, now)}["cool"]
    assert view.state == "cooling" and view.until == now + timedelta(seconds=120)


def test_sessions_bound_to_an_upstream_its_route_no_longer_lists_are_not_counted():
    # a reload took `ok` out of the claude route: the page still said it held the session, until
    # the session's next request moved it
    r = parse_rules(STATES_RULES.replace("claude: [ok, cool, full, off]", "claude: [cool, full, off]"))
    health, quota, sessions, wall = boards()
    now = datetime.fromtimestamp(wall(), ZoneInfo(TZ))
    sessions.bind("claude", "s1", "ok", 3600)       # bound before the reload
    sessions.bind("claude", "s2", "cool", 3600)
    sessions.sync([u.name for u in r.upstreams], None, {"claude": r.routes.for_route("claude")})
    views = {v.name: v for v in upstream_views(r, health, quota, sessions, now)}
    assert (views["ok"].sessions, views["cool"].sessions) == (0, 1)


def test_a_cooldown_read_a_moment_later_ends_at_the_second_it_was_set_for_not_one_before():
    # a reset at 17:00:00 was shown as "until 16:59:59": the board's clock read back a few ms later
    r = parse_rules(STATES_RULES)
    health, quota, sessions, wall = boards()
    health.record_failure("cool", "HTTP 529", threshold=1, cooldown=90)
    now = datetime.fromtimestamp(wall(), ZoneInfo(TZ))
    wall.now += 0.003       # the board's clock, read a moment after `now` was
    [cool] = [v for v in upstream_views(r, health, quota, sessions, now) if v.name == "cool"]
    set_for = datetime.fromtimestamp(NOON_ISH + 90, ZoneInfo(TZ))
    assert cool.until == set_for and f"until {set_for:%H:%M:%S}" in cool.detail


def test_a_reset_days_away_is_shown_with_its_date_not_as_a_clock_time_that_has_passed():
    r = parse_rules(STATES_RULES)
    health, quota, sessions, wall = boards()
    now = datetime.fromtimestamp(wall(), ZoneInfo(TZ))
    later = now + timedelta(days=2, seconds=60)
    quota.record("full", [("anthropic-ratelimit-unified-7d-utilization", "0.97"),
                          ("anthropic-ratelimit-unified-7d-reset", str(int(later.timestamp())))])
    quota.record("ok", [("anthropic-ratelimit-unified-5h-utilization", "0.42"),
                        ("anthropic-ratelimit-unified-5h-reset", str(int(wall() + 600)))])
    views = upstream_views(r, health, quota, sessions, now)
    shown = {v["name"]: v for v in live_status(LiveBoard(clock=wall), views, r, now)["upstreams"]}
    assert shown["full"]["detail"] == f"full until {later:%Y-%m-%d %H:%M:%S} (7d window)"
    assert shown["full"]["resets"] == f"{later:%Y-%m-%d %H:%M}"
    soon = now + timedelta(seconds=600)
    assert shown["ok"]["resets"] == f"{soon:%H:%M}"     # today: the time alone


def test_status_json_has_the_page_and_no_key_text_even_when_an_upstream_echoed_one():
    r = rules()
    health, quota, sessions, wall = boards()
    board = LiveBoard(clock=wall)
    leaked = f"HTTP 401: invalid x-api-key {KEY_B} (client {CLIENT_KEY})"
    health.record_failure("a", leaked, threshold=5, cooldown=60)
    note(board, r, finished(r, Attempt("a", 401, leaked, 30), Attempt("b", 200, None, 900, USAGE),
                            model="claude-sonnet-4-5", upstream_model="claude-sonnet-4-5-20250929", at=AT_NOON))
    now = datetime.fromtimestamp(wall(), ZoneInfo(TZ))
    status = live_status(board, upstream_views(r, health, quota, sessions, now), r, now)
    text = json.dumps(status)
    assert KEY_A not in text and KEY_B not in text and CLIENT_KEY not in text and "[redacted]" in text
    assert status["time"] == "10:00:00" and status["today"]["since"] == "10:00"
    # the abbreviation is for people (CST is three zones); a program gets the zone and its offset
    assert (status["zone"], status["utc_offset"]) == (TZ, now.isoformat(timespec="seconds")[19:])
    assert [u["name"] for u in status["upstreams"]] == ["a", "b"]
    assert status["upstreams"][0]["failures"] == 1 and "[redacted]" in status["upstreams"][0]["last_error"]
    (req,) = status["recent"]
    assert req["model"] == "claude-sonnet-4-5" and req["upstream_model"] == "claude-sonnet-4-5-20250929"
    assert req["attempts"] == [{"upstream": "a", "result": "401", "why": "invalid x-api-key [redacted] (client [redacted])"},
                               {"upstream": "b", "result": "200", "why": None}]
    assert req["upstream"] == "b" and req["status"] == 200 and req["ms"] == 1500 and req["ttfb_ms"] == 300
    assert req["tokens"] == {"input": 1000, "output": 200, "cache_creation": 3000, "cache_read": 50_000,
                             "reasoning": 40}
    assert req["cost_usd"] == pytest.approx(prices.cost("claude-sonnet-4-5-20250929", 1000, 200, 3000, 0, 50_000))
    assert status["today"]["requests"] == 1 and status["today"]["failovers"] == 1


def test_the_newest_request_comes_first():
    r = rules()
    board = LiveBoard(clock=lambda: NOON_ISH)
    for latency in (1, 2, 3):
        note(board, r, finished(r, Attempt("a", 200, None, 1), latency=latency))
    now = datetime.fromtimestamp(NOON_ISH, ZoneInfo(TZ))
    assert [q["ms"] for q in live_status(board, [], r, now)["recent"]] == [3, 2, 1]


def test_an_upstream_over_its_budget_is_skipped_until_the_next_period_and_shows_its_spend():
    r = parse_rules(f"""
timezone: {TZ}
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}', budget: {{daily: 5}}}}
  - {{name: b, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}', budget: {{monthly: 100}}}}
routes: {{claude: [a, b]}}
""")
    health, quota, sessions, wall = boards()
    now = datetime.fromtimestamp(wall(), ZoneInfo(TZ))
    spend = SpendBoard(clock=lambda: now.astimezone(UTC))
    spend.configure(r)
    spend.add(UPSTREAM, "a", 5.5, now.astimezone(UTC))
    spend.add(UPSTREAM, "b", 1.25, now.astimezone(UTC))
    views = {v.name: v for v in upstream_views(r, health, quota, sessions, now, spend)}
    assert views["a"].state == "over_budget" and not views["a"].up
    assert views["a"].until == datetime(2026, 12, 3, tzinfo=ZoneInfo(TZ))
    assert views["a"].detail == "over its daily budget ($5.00) until 00:00"
    assert views["a"].budget == ("$5.50 of $5.00 today (until 00:00)",)
    assert views["b"].state == "available" and views["b"].budget == ("$1.25 of $100.00 this month (until 2027-01-01)",)


def test_requests_under_way_are_listed_oldest_first_with_the_upstream_they_are_on_now():
    r = rules()
    now = datetime.fromtimestamp(NOON_ISH, ZoneInfo(TZ))
    older = make_job(r, body={"model": "claude-\u202eevil\u202c-sonnet", "max_tokens": 5, "stream": True, "messages": []})
    older.started_at = AT_NOON - timedelta(seconds=42)
    older.attempts = [Attempt("a", 529, "HTTP 529", 20), Attempt("b", running_since=1.0)]
    newer = make_job(r, path="/v1/messages/count_tokens", body={"model": "claude-x", "messages": []})
    newer.started_at = AT_NOON - timedelta(seconds=1)         # planned, not sent yet
    views = upstream_views(r, HealthBoard(), QuotaBoard(), SessionBindings(), now, running=[newer, older],
                           connections={"b": (1, 2)})
    shown = live_status(LiveBoard(clock=lambda: NOON_ISH), views, r, now, [newer, older])
    assert shown["in_flight"]["count"] == 2
    first, second = shown["in_flight"]["requests"]
    assert first == {"ts": "2026-12-02T09:59:18.000+01:00", "time": "09:59:18", "route": "claude",
                     "endpoint": "messages", "model": "claude-\\u202eevil\\u202c-sonnet", "stream": True,
                     "upstream": "b", "attempt": 2, "seconds": 42.0}
    assert (second["endpoint"], second["upstream"], second["attempt"], second["stream"]) == ("count_tokens", None, 0, False)
    assert {u["name"]: (u["in_flight"], u["connections"]) for u in shown["upstreams"]} == {
        "a": (0, {"open": 0, "waiting": 0}), "b": (1, {"open": 1, "waiting": 2})}
    many = [make_job(r) for _ in range(60)]
    assert len(live_status(LiveBoard(clock=lambda: NOON_ISH), views, r, now, many)["in_flight"]["requests"]) == 50


def test_each_upstream_says_which_proxy_it_is_reached_through_without_its_credentials():
    r = parse_rules("""
upstream_proxy: 'socks5h://me:proxy-secret@127.0.0.1:1080'
upstreams:
  - {name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-a-0000000000}
  - {name: b, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-b-0000000000, proxy: direct}
routes: {claude: [a, b]}
""")
    now = datetime.fromtimestamp(NOON_ISH, ZoneInfo(TZ))
    views = upstream_views(r, HealthBoard(), QuotaBoard(), SessionBindings(), now)
    shown = live_status(LiveBoard(clock=lambda: NOON_ISH), views, r, now, [])
    assert {u["name"]: u["via"] for u in shown["upstreams"]} == {"a": "socks5h://127.0.0.1:1080", "b": None}
    assert "proxy-secret" not in json.dumps(shown)


def test_a_bidirectional_control_in_a_model_shows_as_its_escape_in_the_report_page_too():
    from ccswitch.report.html import escape
    assert escape("<b>claude-\u202eevil\u202c-sonnet\u2067</b>") == \
        "&lt;b&gt;claude-\\u202eevil\\u202c-sonnet\\u2067&lt;/b&gt;"
    # a line break showed as a blank: "my-odd\nnewline" read as "my-odd newline"
    assert escape("my-odd\nnewline\t\x1b[2J") == "my-odd\\nnewline\\t\\x1b[2J"
    assert escape("team \U0001F468\u200d\U0001F469") == "team \U0001F468\u200d\U0001F469"   # a joiner is no control


def test_every_control_character_shows_as_its_escape_on_a_page():
    # invisible on a page or a line break there: a NUL, DEL, the C1 controls (NEL is a line break,
    # CSI a terminal's escape) and the line and paragraph separators
    from ccswitch.report.html import escape
    assert escape("a\x00b\x7fc\x85d\x9be\u2028f\u2029g") == "a\\x00b\\x7fc\\x85d\\x9be\\u2028f\\u2029g"


def test_the_page_says_how_many_upstreams_are_available_and_what_each_client_key_spent_of_its_budget():
    # an upstream in no route serves nothing: "2 of 3 available" read so with one of two routed ones down
    r = rules_for(("a", "anthropic", "http://127.0.0.1:9"), ("b", "anthropic", "http://127.0.0.1:9"),
                  ("spare", "anthropic", "http://127.0.0.1:9"), routes={"claude": ["a", "b"]},
                  extra=f"timezone: UTC\nclient_keys:\n  - {{name: alice, key: '{CLIENT_KEY}', budget: {{daily: 2}}}}\n"
                        f"  - {{name: bob, key: '{KEY_B}-client'}}\n")
    now = datetime.fromtimestamp(NOON_ISH, UTC)
    spend = SpendBoard(lambda: now)
    spend.configure(r)
    spend.add("client", "alice", 0.5)
    health = HealthBoard()
    health.switch("b", False)
    views = upstream_views(r, health, QuotaBoard(), SessionBindings(), now, spend)
    shown = live_status(LiveBoard(clock=lambda: NOON_ISH), views, r, now, spend=spend)
    assert (shown["available"], shown["routed"]) == (1, 2)
    assert shown["clients"] == [{"name": "alice", "budget": ["$0.50 of $2.00 today (until 00:00)"]}]
    assert CLIENT_KEY not in json.dumps(shown)


def test_a_request_between_attempts_is_on_no_upstream_and_every_one_under_way_is_counted():
    r = rules()
    now = datetime.fromtimestamp(NOON_ISH, ZoneInfo(TZ))
    between = make_job(r)
    between.started_at = AT_NOON + timedelta(seconds=3)          # another clock a little ahead: not negative
    between.attempts = [Attempt("a", 529, "HTTP 529", 20)]      # answered, the next not sent yet
    views = upstream_views(r, HealthBoard(), QuotaBoard(), SessionBindings(), now, running=[between])
    assert {v.name: v.in_flight for v in views} == {"a": 0, "b": 0}
    many = [between] + [make_job(r) for _ in range(59)]
    for i, job in enumerate(many[1:]):
        job.started_at = AT_NOON + timedelta(seconds=10 + i)     # later than `between`: it is listed
    shown = live_status(LiveBoard(clock=lambda: NOON_ISH), views, r, now, many)
    assert shown["in_flight"]["count"] == 60 and len(shown["in_flight"]["requests"]) == 50
    [listed] = [d for d in shown["in_flight"]["requests"] if d["attempt"] == 1]
    assert listed["upstream"] is None and listed["seconds"] == 0.0


def test_an_upstream_with_activation_times_shows_its_next_probe():
    r = parse_rules("""
timezone: UTC
upstreams:
  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: k, activate_at: ["06:00", "18:30"]}
  - {name: b, protocol: anthropic, base_url: 'https://b.example', api_key: k, activate_at: ["06:00"], enabled: false}
  - {name: c, protocol: anthropic, base_url: 'https://c.example', api_key: k}
routes: {claude: [a, b, c]}
""")
    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)      # a Wednesday
    views = upstream_views(r, HealthBoard(), QuotaBoard(), SessionBindings(), now)
    shown = {v["name"]: v["activation"] for v in live_status(LiveBoard(clock=lambda: NOON_ISH), views, r, now)["upstreams"]}
    assert shown == {"a": "wed 18:30", "b": "none", "c": None}


def test_a_window_s_reset_across_a_dst_change_is_shown_in_elapsed_time():
    # 01:30 EDT + one hour is 01:30 EST (the clocks go back): wall-clock arithmetic said 02:30
    r = parse_rules(STATES_RULES)
    health, _, sessions, _ = boards()
    now = datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"))     # fold 0: EDT
    quota = QuotaBoard(clock=lambda: now.timestamp())
    quota.record("ok", [("anthropic-ratelimit-unified-5h-utilization", "0.42"),
                        ("anthropic-ratelimit-unified-5h-reset", str(int(now.timestamp()) + 3600))])
    views = {v.name: v for v in upstream_views(r, health, quota, sessions, now)}
    assert views["ok"].resets_at.timestamp() - now.timestamp() == 3600


def test_a_window_s_reset_is_shown_at_its_second_though_read_a_moment_later():
    # the page showed 18:58:59 for a reset the upstream gave as 18:59:00
    r = parse_rules(STATES_RULES)
    health, _, sessions, wall = boards()
    quota = QuotaBoard(clock=lambda: wall() + 0.002)          # the board read a few ms after `now`
    now = datetime.fromtimestamp(wall(), ZoneInfo(TZ))
    quota.record("ok", [("anthropic-ratelimit-unified-5h-utilization", "0.42"),
                        ("anthropic-ratelimit-unified-5h-reset", str(int(wall() + 3600)))])
    views = {v.name: v for v in upstream_views(r, health, quota, sessions, now)}
    assert views["ok"].resets_at == now + timedelta(seconds=3600)


def test_why_the_rules_files_last_edit_is_not_in_force_says_since_when_in_the_rules_time_zone():
    now = datetime.fromtimestamp(NOON_ISH, ZoneInfo(TZ))
    status = live_status(LiveBoard(clock=lambda: NOON_ISH), [], rules(), now,
                         not_applied=("the rules file is empty", NOON_ISH - 600))
    assert status["rules_not_applied"] == {"why": "the rules file is empty", "since": "2026-12-02T09:50:00+01:00"}
    assert live_status(LiveBoard(clock=lambda: NOON_ISH), [], rules(), now)["rules_not_applied"] is None
