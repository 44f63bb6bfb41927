"""Budget arithmetic with an injected clock, across day and month boundaries in the rules' zone."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.routing.budget import CLIENT, UPSTREAM, SpendBoard, period_end, period_start
from ccswitch.routing.changes import SpendTotal
from ccswitch.routing.events import Events

TZ = ZoneInfo("Asia/Shanghai")          # UTC+8: a local midnight is 16:00 UTC the day before
RULES_TEXT = """
timezone: Asia/Shanghai
client_keys:
  - {name: alice, key: alice-key-000000, budget: {daily: 20}}
  - {name: bob, key: bob-key-00000000}
upstreams:
  - {name: relay-a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-relay-a-0000, budget: {daily: 5, monthly: 12}}
"""
RULES = parse_rules(RULES_TEXT)


class Clock:
    def __init__(self, when: datetime):
        self.now = when

    def __call__(self):
        return self.now


def board(when: datetime):
    clock, events = Clock(when), Events()
    seen = []
    events.subscribe(seen.append)
    spend = SpendBoard(clock, events)
    spend.configure(RULES)
    return spend, clock, seen


def test_periods_are_local_days_and_months():
    moment = datetime(2026, 1, 31, 17, 30, tzinfo=UTC)          # 2026-02-01 01:30 in Shanghai
    assert period_start("daily", moment, TZ) == datetime(2026, 2, 1, tzinfo=TZ)
    assert period_start("monthly", moment, TZ) == datetime(2026, 2, 1, tzinfo=TZ)
    assert period_end("daily", moment, TZ) == datetime(2026, 2, 2, tzinfo=TZ)
    assert period_end("monthly", datetime(2026, 12, 15, tzinfo=TZ), TZ) == datetime(2027, 1, 1, tzinfo=TZ)
    berlin = ZoneInfo("Europe/Berlin")                            # DST starts 2026-03-29
    assert period_end("daily", datetime(2026, 3, 29, 12, tzinfo=berlin), berlin).utcoffset().seconds == 7200


def test_a_midnight_that_comes_twice_starts_one_day():
    # Havana's clocks went from 01:00 back to 00:00 on 2024-11-03: a request in the second 00:xx
    # hour is in the same day as one in the first (one shared key for the day's spend, not two)
    havana = ZoneInfo("America/Havana")
    first = datetime(2024, 11, 3, 4, 30, tzinfo=UTC)     # 00:30 CDT
    second = datetime(2024, 11, 3, 5, 30, tzinfo=UTC)    # 00:30 CST
    starts = {period_start("daily", moment, havana).timestamp() for moment in (first, second)}
    assert starts == {datetime(2024, 11, 3, 4, 0, tzinfo=UTC).timestamp()}
    assert {period_start("monthly", moment, havana).timestamp() for moment in (first, second)} == {
        datetime(2024, 11, 1, 4, 0, tzinfo=UTC).timestamp()}



def test_a_day_whose_midnight_is_skipped_keeps_counting_when_the_shared_total_comes_back():
    # Havana's clocks went from 00:00 to 01:00 on 2025-03-09: the day starts at 01:00. The total
    # Redis answered (its start read back from a timestamp) was taken for another period than
    # the one held, which it replaced: the day's spend read $0 and later additions were dropped
    havana = ZoneInfo("America/Havana")
    now = datetime(2025, 3, 9, 15, tzinfo=havana).astimezone(UTC)
    assert period_start("daily", now, havana) == datetime(2025, 3, 9, 1, tzinfo=havana)
    for moment in (now, period_start("daily", now, havana)):
        assert period_end("daily", moment, havana) == datetime(2025, 3, 10, tzinfo=havana)
    spend, _clock, _seen = board(now)
    spend.tz = havana
    sent = []
    spend.on_change = sent.append
    spend.add(UPSTREAM, "relay-a", 1.0, now)
    [added] = [change for change in sent if change.period == "daily"]
    spend.apply(SpendTotal(UPSTREAM, "relay-a", "daily", added.start, added.end, 1.0), added=1.0)
    assert spend.spent(UPSTREAM, "relay-a", "daily") == 1.0
    sent.clear()
    spend.add(UPSTREAM, "relay-a", 2.0, now)
    assert spend.spent(UPSTREAM, "relay-a", "daily") == 3.0
    assert [change.usd for change in sent if change.period == "daily"] == [2.0]


def test_the_day_before_a_skipped_midnight_ends_when_the_next_day_starts():
    # its end is the next day's start, a real instant: 01:00 in Havana on 2025-03-09, not a
    # wall-clock 00:00 that never came (and that compares unequal to the next day's start)
    havana = ZoneInfo("America/Havana")
    eve = datetime(2025, 3, 8, 15, tzinfo=havana)
    assert period_end("daily", eve, havana) == period_start("daily", datetime(2025, 3, 9, 15, tzinfo=havana), havana)
    spend, _clock, _seen = board(eve.astimezone(UTC))
    spend.tz = havana
    assert spend.report(UPSTREAM, "relay-a")[0] == "$0.00 of $5.00 today (until 01:00)"


def test_spend_shared_for_another_zone_s_day_is_ignored_not_taken_for_a_later_period(caplog):
    # an instance in UTC beside this one in Shanghai (or records from before `timezone` changed):
    # their day starts 8 hours later, was taken for a newer period, and this instance's spend read
    # $0 from then on and its own additions were dropped as an older period's
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)                  # 20:00 in Shanghai
    spend, _clock, _seen = board(now)
    spend.add(CLIENT, "alice", 4.0, now)
    utc_day = datetime(2026, 3, 10, tzinfo=UTC)
    for kind, end in (("daily", datetime(2026, 3, 11, tzinfo=UTC)), ("monthly", datetime(2026, 4, 1, tzinfo=UTC))):
        spend.apply(SpendTotal(CLIENT, "alice", kind, (utc_day if kind == "daily" else utc_day.replace(day=1)).timestamp(),
                               end.timestamp(), 50.0))
    assert spend.spent(CLIENT, "alice", "daily") == 4.0
    spend.add(CLIENT, "alice", 1.0, now)
    assert spend.spent(CLIENT, "alice", "daily") == 5.0 and spend.spent(CLIENT, "alice", "monthly") == 5.0
    assert caplog.text.count("another time zone") == 1

def test_an_upstream_over_its_daily_budget_until_local_midnight_then_the_month_holds():
    spend, clock, seen = board(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))    # 23:00 local
    spend.add(UPSTREAM, "relay-a", 3.0)
    assert spend.over(UPSTREAM, "relay-a") is None
    spend.add(UPSTREAM, "relay-a", 2.5)
    over = spend.over(UPSTREAM, "relay-a")
    assert over.kind == "daily" and over.spent == 5.5 and over.until == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
    clock.now = datetime(2026, 3, 10, 16, 0, tzinfo=UTC)                   # local midnight: a new day
    assert spend.over(UPSTREAM, "relay-a") is None and spend.spent(UPSTREAM, "relay-a", "monthly") == 5.5
    spend.add(UPSTREAM, "relay-a", 4.0)
    spend.add(UPSTREAM, "relay-a", 3.0)                                      # 12.5 this month
    over = spend.over(UPSTREAM, "relay-a")
    # the day's 7.0 is over 5 too, but the month holds it back longer: that is the one told
    assert over.kind == "monthly" and over.until == datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
    clock.now = datetime(2026, 3, 11, 16, 0, tzinfo=UTC)
    over = spend.over(UPSTREAM, "relay-a")
    assert over.kind == "monthly" and over.until == datetime(2026, 3, 31, 16, 0, tzinfo=UTC)   # April 1 local
    clock.now = datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
    assert spend.over(UPSTREAM, "relay-a") is None


def test_budget_events_at_80_and_100_percent_once_per_period():
    spend, clock, seen = board(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    spend.add(CLIENT, "alice", 15.0)
    spend.add(CLIENT, "alice", 1.0)                         # 80 %
    spend.add(CLIENT, "alice", 0.5)
    spend.add(CLIENT, "alice", 5.0)                         # 100 %
    spend.add(CLIENT, "alice", 5.0)
    spend.add(CLIENT, "bob", 500.0)                         # no budget: nothing
    assert [e.reason for e in seen] == ["client alice 80% of its daily budget ($16.00 of $20.00)",
                                        "client alice reached its daily budget ($21.50 of $20.00)"]
    assert all(e.kind == "budget" and e.upstream is None for e in seen)
    assert seen[1].until == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
    clock.now = datetime(2026, 3, 10, 16, 30, tzinfo=UTC)   # the next local day: told again
    spend.add(CLIENT, "alice", 17.0)
    assert len(seen) == 3 and "80%" in seen[2].reason


def test_a_request_begun_before_its_day_ended_is_counted_there_and_not_told_once_the_day_is_over():
    # a stream from 23:59:52 to 00:00:07 crossed the daily budget: "reached (until 00:00)" came
    # seven seconds after the budget had reset, about a day in which nothing is refused any more
    spend, clock, seen = board(datetime(2026, 3, 10, 15, 59, 52, tzinfo=UTC))     # 23:59:52 local
    began = clock.now
    spend.add(CLIENT, "alice", 10.0)
    clock.now = datetime(2026, 3, 10, 16, 0, 7, tzinfo=UTC)
    spend.add(CLIENT, "alice", 15.0, at=began)
    assert seen == [] and spend.spent(CLIENT, "alice", "monthly") == 25.0
    spend.add(CLIENT, "alice", 1.0)                          # the new day: its own lines
    assert seen == []
    spend.add(CLIENT, "alice", 16.0)
    assert [e.reason for e in seen] == ["client alice 80% of its daily budget ($17.00 of $20.00)"]


def test_a_budget_reached_exactly_by_a_sum_of_costs_is_reached():
    spend, _, seen = board(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    spend.configure(parse_rules(RULES_TEXT.replace("budget: {daily: 20}", "budget: {daily: 1}")))
    for _ in range(8):
        spend.add(CLIENT, "alice", 0.1)       # 0.7999999999999999: the 80 % line all the same
    assert [e.reason for e in seen] == ["client alice 80% of its daily budget ($0.80 of $1.00)"]
    spend.add(CLIENT, "alice", 0.1)
    spend.add(CLIENT, "alice", 0.1)           # 0.9999999999999999
    assert spend.over(CLIENT, "alice") is not None
    assert seen[-1].reason == "client alice reached its daily budget ($1.00 of $1.00)"


def test_a_step_past_the_whole_budget_is_told_once_as_reached_not_as_80_percent():
    spend, _, seen = board(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    spend.add(CLIENT, "alice", 13.9)          # 69 %
    spend.add(CLIENT, "alice", 14.0)          # 139 %
    assert [e.reason for e in seen] == ["client alice reached its daily budget ($27.90 of $20.00)"]


def test_a_budget_below_a_cent_is_told_in_the_decimals_it_needs():
    spend, _, seen = board(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    spend.configure(parse_rules(RULES_TEXT.replace("budget: {daily: 20}", "budget: {daily: 0.0003}")))
    spend.add(CLIENT, "alice", 0.00021)
    spend.add(CLIENT, "alice", 0.00012)
    assert [e.reason for e in seen] == ["client alice reached its daily budget ($0.00033 of $0.00030)"]
    over = spend.over(CLIENT, "alice")
    assert over.describe("client key alice") == "client key alice has spent $0.00033 of its daily budget of " \
                                                "$0.00030 today"
    assert spend.report(CLIENT, "alice")[0].startswith("$0.00033 of $0.00030 today")
    from ccswitch.money import usd
    assert usd(0.00081, 50) == ("$0.00081", "$50.00")      # each in its own decimals, not $50.00000


def test_a_restart_keeps_the_days_spend_from_the_ledgers_rows():
    spend, clock, _ = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    spend.add(UPSTREAM, "relay-a", 9.0, at=datetime(2026, 3, 9, 10, tzinfo=UTC))       # the day before
    spend.add(UPSTREAM, "relay-a", 1.0, at=datetime(2026, 3, 9, 15, 59, tzinfo=UTC))   # 23:59 local, the day before
    for hour, usd in ((1, 2.0), (9, 1.5)):                                              # 09:00 and 17:00 local
        spend.add(UPSTREAM, "relay-a", usd, at=datetime(2026, 3, 10, hour, tzinfo=UTC))
    assert spend.spent(UPSTREAM, "relay-a", "daily") == 3.5
    assert spend.report(UPSTREAM, "relay-a") == ["$3.50 of $5.00 today (until 00:00)",
                                                 "$13.50 of $12.00 this month (until 2026-04-01)"]


def test_a_start_up_load_tells_no_line_the_ledger_reached_by_itself():
    spend, _, seen = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    spend.load([(CLIENT, "alice", 17.0, datetime(2026, 3, 10, 9, tzinfo=UTC)),
                (CLIENT, "alice", 5.0, datetime(2026, 3, 10, 10, tzinfo=UTC))])     # over its 20: told before
    assert seen == [] and spend.over(CLIENT, "alice") is not None


def test_a_late_ledger_read_tells_the_line_this_run_s_spend_took_it_across():
    # the ledger could not be read at the start (PostgreSQL down): budgets counted from 0 meanwhile
    spend, _, seen = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    spend.add(CLIENT, "alice", 3.0)                                # this run's, under 80 % alone
    spend.load([(CLIENT, "alice", 15.0, datetime(2026, 3, 10, 9, tzinfo=UTC)),
                (CLIENT, "alice", 3.0, datetime(2026, 3, 10, 10, tzinfo=UTC))])   # the ledger's 18: 80 % told then
    assert spend.over(CLIENT, "alice") is not None
    assert [e.reason for e in seen] == ["client alice reached its daily budget ($21.00 of $20.00)"]


def test_a_start_up_load_over_two_days_tells_nothing_the_ledger_reached_by_itself():
    # yesterday's small sum is no period any more: measured against today's spend, it was told
    # today's line as news, under yesterday's name
    spend, _, seen = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    spend.load([(CLIENT, "alice", 1.0, datetime(2026, 3, 9, 3, tzinfo=UTC)),       # the 9th in Shanghai
                (CLIENT, "alice", 22.0, datetime(2026, 3, 10, 9, tzinfo=UTC))])    # today's, over its 20
    assert seen == [] and spend.spent(CLIENT, "alice", "daily") == 22.0


def test_with_a_shared_state_a_late_ledger_read_leaves_the_line_to_the_instances_that_added_the_spend():
    # this run's spend went to the shared total, and the instance whose addition crossed the line told it
    spend, _, seen = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    spend.alone = False
    spend.add(CLIENT, "alice", 3.0)
    spend.load([(CLIENT, "alice", 18.0, datetime(2026, 3, 10, 9, tzinfo=UTC))])
    assert spend.over(CLIENT, "alice") is not None and seen == []


def test_a_ledger_read_after_the_shared_total_came_in_is_not_counted_on_top_of_it():
    # Redis's total already holds what the (shared) ledger holds: the read finishing after the
    # catch-up added it again, $50 read as $100, and the next catch-up wrote $100 back for all
    spend, clock, seen = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    spend.alone = False
    start, end = period_start("monthly", clock.now, TZ), period_end("monthly", clock.now, TZ)
    spend.add(UPSTREAM, "relay-a", 1.0)                                 # this run's, sent to Redis
    spend.apply(SpendTotal(UPSTREAM, "relay-a", "monthly", start.timestamp(), end.timestamp(), 7.0))
    spend.load([(UPSTREAM, "relay-a", 6.0, datetime(2026, 3, 9, 9, tzinfo=UTC))])     # before this run
    assert spend.spent(UPSTREAM, "relay-a", "monthly") == 7.0
    # a Redis that lost its data knows less than the ledger and this run together: they count
    spend.load([(UPSTREAM, "relay-a", 8.0, datetime(2026, 3, 9, 9, tzinfo=UTC))])
    assert spend.spent(UPSTREAM, "relay-a", "monthly") == 9.0
    assert spend.spent(UPSTREAM, "relay-a", "daily") == 1.0           # the ledger's rows were yesterday's
    assert seen == []


def test_in_memory_a_late_ledger_read_and_this_run_s_spend_add_up_per_period():
    spend, _, _ = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    spend.add(UPSTREAM, "relay-a", 1.0)
    spend.load([(UPSTREAM, "relay-a", 2.0, datetime(2026, 3, 9, 9, tzinfo=UTC)),      # yesterday's
                (UPSTREAM, "relay-a", 0.5, datetime(2026, 3, 10, 9, tzinfo=UTC))])    # today's
    assert spend.spent(UPSTREAM, "relay-a", "daily") == 1.5
    assert spend.spent(UPSTREAM, "relay-a", "monthly") == 3.5


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
def test_without_a_timezone_days_and_months_start_at_the_machines_own_midnights_dst_and_all(monkeypatch, zone):
    monkeypatch.setenv("TZ", zone)
    rules = parse_rules(RULES_TEXT.replace("timezone: Asia/Shanghai\n", ""))
    local = ZoneInfo(zone)
    for moment in (datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC)):  # winter, summer
        assert period_start("daily", moment, rules.tz) == moment.astimezone(local).replace(hour=0)
    spend = SpendBoard(Clock(datetime(2026, 3, 20, 12, tzinfo=UTC)))       # before the spring switch
    spend.configure(rules)
    spend.add(UPSTREAM, "relay-a", 11.0)
    spend.clock.now = datetime(2026, 3, 30, 12, tzinfo=UTC)                 # after it, and a reload
    spend.configure(parse_rules(RULES_TEXT.replace("timezone: Asia/Shanghai\n", "")))
    spend.add(UPSTREAM, "relay-a", 2.0)
    assert spend.spent(UPSTREAM, "relay-a", "monthly") == 13.0
    assert spend.over(UPSTREAM, "relay-a").kind == "monthly"


def test_a_new_timezone_carries_the_current_periods_spend_over():
    spend, clock, seen = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))     # 20:00 in Shanghai
    spend.add(UPSTREAM, "relay-a", 4.5)                                       # 90 % of the day's 5: told
    spend.add(UPSTREAM, "relay-a", 3.0, at=datetime(2026, 3, 2, tzinfo=UTC))  # earlier this month
    spend.configure(parse_rules(RULES_TEXT.replace("Asia/Shanghai", "UTC")))
    assert (spend.spent(UPSTREAM, "relay-a", "daily"), spend.spent(UPSTREAM, "relay-a", "monthly")) == (4.5, 7.5)
    spend.add(UPSTREAM, "relay-a", 0.1)                                       # still 80 %: not told again
    assert len(seen) == 1
    spend.add(UPSTREAM, "relay-a", 0.5)                                       # 5.1: reached
    assert len(seen) == 2 and "reached its daily budget ($5.10" in seen[1].reason
    assert spend.over(UPSTREAM, "relay-a").until == datetime(2026, 3, 11, tzinfo=UTC)


def test_with_a_shared_state_each_line_is_told_once_by_the_addition_that_took_the_total_across_it():
    """Two instances and Redis's order of their additions (INCRBYFLOAT): each line is told by
    the one whose addition crossed it, although both views cross both lines."""
    now = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    a, _, told_a = board(now)
    b, _, told_b = board(now)
    a.alone = b.alone = False
    start, end = period_start("daily", now, TZ).timestamp(), period_end("daily", now, TZ).timestamp()
    shared = 0.0

    def add(node, other, usd):
        nonlocal shared
        node.add(UPSTREAM, "relay-a", usd)
        shared += usd                                      # Redis adds, and answers the total
        total = SpendTotal(UPSTREAM, "relay-a", "daily", start, end, shared)
        node.apply(total, added=usd)
        other.apply(total)                                 # published to the other

    add(a, b, 3.0)
    add(b, a, 0.9)                                         # 3.9
    assert told_a == told_b == []
    add(a, b, 0.2)                                         # 4.1: a took it across 80 % (4.0)
    add(b, a, 1.0)                                         # 5.1: b took it across 100 %
    add(a, b, 0.5)
    assert [e.reason for e in told_a] == ["upstream relay-a 80% of its daily budget ($4.10 of $5.00)"]
    assert [e.reason for e in told_b] == ["upstream relay-a reached its daily budget ($5.10 of $5.00)"]
    assert a.spent(UPSTREAM, "relay-a", "daily") == b.spent(UPSTREAM, "relay-a", "daily") == 5.6


def test_a_shared_total_a_float_short_of_a_line_has_crossed_it_for_the_next_addition_too():
    # a's $0.10 took Redis's total to 0.9999999999999999 of $1 (reached: a told it); b's next
    # addition starts from that total and must not tell it again
    now = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    b, _, told_b = board(now)
    b.configure(parse_rules(RULES_TEXT.replace("budget: {daily: 5", "budget: {daily: 1")))
    b.alone = False
    start, end = period_start("daily", now, TZ).timestamp(), period_end("daily", now, TZ).timestamp()
    b.add(UPSTREAM, "relay-a", 0.05)
    b.apply(SpendTotal(UPSTREAM, "relay-a", "daily", start, end, 0.9999999999999999 + 0.05), added=0.05)
    assert told_b == []


def test_spend_not_yet_in_a_shared_total_counts_but_its_line_is_left_for_its_own_answer():
    now = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    spend, _, told = board(now)
    spend.alone = False
    start, end = period_start("daily", now, TZ).timestamp(), period_end("daily", now, TZ).timestamp()
    spend.add(UPSTREAM, "relay-a", 1.5)                    # not answered yet
    spend.apply(SpendTotal(UPSTREAM, "relay-a", "daily", start, end, 3.0), unsent=1.5)   # another's 3.0
    assert spend.spent(UPSTREAM, "relay-a", "daily") == 4.5 and told == []
    spend.apply(SpendTotal(UPSTREAM, "relay-a", "daily", start, end, 4.5), added=1.5)    # its own answer
    assert [e.reason for e in told] == ["upstream relay-a 80% of its daily budget ($4.50 of $5.00)"]


def test_a_budget_raised_by_a_reload_has_its_new_lines_told():
    spend, _, seen = board(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    spend.configure(parse_rules(RULES_TEXT.replace("budget: {daily: 20}", "budget: {daily: 2}")))
    spend.add(CLIENT, "alice", 2.0)
    assert [e.reason for e in seen] == ["client alice reached its daily budget ($2.00 of $2.00)"]
    spend.configure(parse_rules(RULES_TEXT.replace("budget: {daily: 20}", "budget: {daily: 4}")))
    spend.add(CLIENT, "alice", 1.3)                # 3.30 of 4: its 80 % line
    spend.add(CLIENT, "alice", 0.8)                # 4.10 of 4
    spend.add(CLIENT, "alice", 0.1)
    assert [e.reason for e in seen[1:]] == ["client alice 80% of its daily budget ($3.30 of $4.00)",
                                            "client alice reached its daily budget ($4.10 of $4.00)"]
    assert len({e.episode for e in seen}) == 3     # each its own episode: none is taken for a repeat


def test_a_budget_lowered_or_added_by_a_reload_below_the_spend_is_told_at_once():
    """No request crosses a line the spend is past already (an upstream over it gets none): the
    reload itself is the news, or the operator never hears it was cut off for the period."""
    spend, _, seen = board(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    spend.add(UPSTREAM, "relay-a", 1.0)
    spend.add(CLIENT, "bob", 1.25)
    assert seen == []
    spend.configure(parse_rules(RULES_TEXT.replace("{daily: 5, monthly: 12}", "{daily: 1.2, monthly: 12}")))
    spend.configure(parse_rules(RULES_TEXT.replace("{daily: 5, monthly: 12}", "{daily: 0.9, monthly: 12}")
                                .replace("key: bob-key-00000000}", "key: bob-key-00000000, budget: {daily: 1.5}}")))
    spend.configure(parse_rules(RULES_TEXT.replace("{daily: 5, monthly: 12}", "{daily: 0.9, monthly: 12}")
                                .replace("key: bob-key-00000000}", "key: bob-key-00000000, budget: {daily: 1.5}}")))
    assert [e.reason for e in seen] == ["upstream relay-a 80% of its daily budget ($1.00 of $1.20)",
                                        "upstream relay-a reached its daily budget ($1.00 of $0.90)",
                                        "client bob 80% of its daily budget ($1.25 of $1.50)"]   # once each


def test_a_budget_lowered_in_the_reload_that_moves_the_timezone_is_told_too():
    spend, _, seen = board(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    spend.add(UPSTREAM, "relay-a", 1.0)
    spend.configure(parse_rules(RULES_TEXT.replace("{daily: 5, monthly: 12}", "{daily: 0.9, monthly: 12}")
                                .replace("timezone: Asia/Shanghai", "timezone: Asia/Tokyo")))
    assert [e.reason for e in seen] == ["upstream relay-a reached its daily budget ($1.00 of $0.90)"]


@pytest.mark.parametrize("amounts,shown", [
    ((0.016, 0.02), ("$0.016", "$0.020")),         # not "$0.02 of $0.02" at 80 %
    ((0.011, 0.01), ("$0.011", "$0.010")),
    ((0.00081, 50), ("$0.00081", "$50.00")),
    ((16.0, 20.0), ("$16.00", "$20.00")),
    ((20.004, 20.0), ("$20.004", "$20.000")),
    ((0.02, 0.02), ("$0.020", "$0.020")),          # the same amount: the same text
    # below a dollar: two significant digits, in one precision ($0.04 of $0.05 read as 80 %)
    ((0.042, 0.05), ("$0.042", "$0.050")),
    ((0.0525, 0.04), ("$0.053", "$0.040")),
    ((0.13, 1.0), ("$0.13", "$1.00")),
    ((0.000002, 0.5), ("$0.000002", "$0.500")),    # the limit a decimal finer, not six
    ((0.5, 0.0005), ("$0.500", "$0.00050")),
    ((0.0042, 0.05), ("$0.0042", "$0.0500")),      # the limit a decimal finer, as the finer spend is
    ((0.042, 1.0), ("$0.042", "$1.00")),           # a dollar is no amount below one
    ((0.001, 5.0), ("$0.0010", "$5.00")),          # two significant digits, not $0.00100
    ((4.9e-7, 5.0), ("<$0.000001", "$5.00")),      # above zero: never $0.000000
    ((5e-7, 5.0), ("<$0.000001", "$5.00")),        # nor when six decimals round it down
    # the same costs summed in another order (two instances) differ in a float's last bits: one
    # text for both, rounded half up ($0.103 on one instance and $0.104 on the other before)
    ((0.10349999999999998, 0.1), ("$0.104", "$0.100")),
    ((0.1035, 0.1), ("$0.104", "$0.100")),
    ((0.10350000000000001, 0.1), ("$0.104", "$0.100")),
    ((1e-6, 5.0), ("$0.000001", "$5.00")),         # a millionth is shown as one, not as less than one
])
def test_amounts_that_differ_are_never_shown_alike(amounts, shown):
    from ccswitch.money import usd
    assert usd(*amounts) == shown


def test_with_a_shared_state_a_budget_lowered_by_a_reload_is_told_too_under_one_claim():
    """Every instance reloading says it; the claim (the same name on each) lets one tell it."""
    spend, _, seen = board(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    spend.alone = False
    spend.add(UPSTREAM, "relay-a", 1.0)
    assert seen == []                                  # spend is told by whoever crossed the shared total
    spend.configure(parse_rules(RULES_TEXT.replace("{daily: 5, monthly: 12}", "{daily: 0.9, monthly: 12}")))
    [told] = seen
    assert told.reason == "upstream relay-a reached its daily budget ($1.00 of $0.90)"
    assert told.claim == f"budget:{told.episode}" and told.episode.startswith("upstream:relay-a:daily:")


def test_a_request_that_cost_nothing_opens_no_period_and_tells_no_instance():
    spend, _, _ = board(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    sent = []
    spend.on_change = sent.append
    spend.add(UPSTREAM, "relay-a", 0.0)
    assert sent == [] and spend.view() == [] and spend.spent(UPSTREAM, "relay-a", "daily") == 0


def test_a_ledger_read_whose_rows_come_out_of_order_counts_each_in_its_own_period():
    # the ledger's sums come one per upstream, client and day in no order of time: a day read
    # after a later one is no part of that later day (the month holds both)
    spend, _, _ = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    spend.load([(UPSTREAM, "relay-a", 0.5, datetime(2026, 3, 10, 9, tzinfo=UTC)),      # today's
                (UPSTREAM, "relay-a", 2.0, datetime(2026, 3, 9, 9, tzinfo=UTC))])      # yesterday's, read after
    assert spend.spent(UPSTREAM, "relay-a", "daily") == 0.5
    assert spend.spent(UPSTREAM, "relay-a", "monthly") == 2.5


def test_a_ledger_read_after_a_larger_shared_total_leaves_that_total_standing():
    # other instances' spend is in the shared total and not in this run's own: the larger view stands
    spend, clock, seen = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    spend.alone = False
    start, end = period_start("monthly", clock.now, TZ), period_end("monthly", clock.now, TZ)
    spend.add(UPSTREAM, "relay-a", 1.0)
    spend.apply(SpendTotal(UPSTREAM, "relay-a", "monthly", start.timestamp(), end.timestamp(), 10.0))
    spend.load([(UPSTREAM, "relay-a", 6.0, datetime(2026, 3, 9, 9, tzinfo=UTC))])     # 6 + this run's 1 < 10
    assert spend.spent(UPSTREAM, "relay-a", "monthly") == 10.0


def test_a_ledger_read_replaces_a_period_older_than_its_own():
    # a shared total of last month's still held (the month turned): the ledger's rows of this
    # month are the spend now, whatever last month's came to
    spend, clock, _ = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    before = datetime(2026, 2, 20, tzinfo=UTC)
    start, end = period_start("monthly", before, TZ), period_end("monthly", before, TZ)
    spend.apply(SpendTotal(UPSTREAM, "relay-a", "monthly", start.timestamp(), end.timestamp(), 30.0))
    spend.load([(UPSTREAM, "relay-a", 4.0, datetime(2026, 3, 9, 9, tzinfo=UTC))])
    assert spend.spent(UPSTREAM, "relay-a", "monthly") == 4.0
    assert spend.shared(UPSTREAM, "relay-a", "monthly").usd == 4.0          # what other instances are told


def test_a_late_ledger_read_after_a_new_timezone_still_adds_this_run_s_spend():
    # this run's own spend moves with the period into the new zone: the ledger read after it
    # is counted on top of it, not in its place
    spend, _, _ = board(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))                # 20:00 in Shanghai
    spend.add(UPSTREAM, "relay-a", 3.0)
    spend.configure(parse_rules(RULES_TEXT.replace("Asia/Shanghai", "UTC")))
    spend.load([(UPSTREAM, "relay-a", 5.0, datetime(2026, 3, 2, tzinfo=UTC))])    # earlier this month
    assert spend.spent(UPSTREAM, "relay-a", "monthly") == 8.0


def test_a_ledger_row_that_cost_nothing_opens_no_period():
    spend, _, _ = board(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    spend.load([(UPSTREAM, "relay-a", 0.0, datetime(2026, 3, 10, 1, tzinfo=UTC))])
    assert spend.view() == [] and spend.shared(UPSTREAM, "relay-a", "daily") is None


def test_a_told_line_is_not_told_again_after_a_zone_and_an_amount_changed_away_and_back():
    text = ("timezone: {tz}\nupstreams:\n  - {{name: relay-a, protocol: anthropic, base_url: 'http://127.0.0.1:9', "
            "api_key: k-relay-a-0000, budget: {{daily: {d}}}}}\n")
    now = datetime(2026, 3, 30, 10, 0, tzinfo=UTC)      # 19:00 in Tokyo, 12:00 in Berlin
    events, seen = Events(), []
    events.subscribe(seen.append)
    board = SpendBoard(lambda: now, events)
    board.configure(parse_rules(text.format(tz="Asia/Tokyo", d=5)))
    board.add(UPSTREAM, "relay-a", 6.0)                 # reached: told once
    board.configure(parse_rules(text.format(tz="Europe/Berlin", d=8)))     # another zone and amount: not reached
    board.configure(parse_rules(text.format(tz="Asia/Tokyo", d=5)))        # back: the same day, the same line
    assert [e.episode for e in seen] == ["upstream:relay-a:daily:2026-03-30T00:00:00+09:00:1.0:5.0"]
