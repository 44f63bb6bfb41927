"""The boards' change records and how another instance's boards take them in (routing.state):
two sets of boards with clocks of their own stand for two instances."""

from dataclasses import replace
from datetime import UTC, datetime

from ccswitch.config.models import Budget, ClientKey, Rules
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.budget import CLIENT, SpendBoard
from ccswitch.routing.changes import (
    BindChange,
    HealthChange,
    IssueChange,
    PreferChange,
    QuotaForget,
    SpendAdded,
    SpendTotal,
    SwitchChange,
    WindowChange,
)
from ccswitch.routing.events import Events
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.issued import IssuedResponses
from ccswitch.routing.quota import QuotaBoard
from ccswitch.routing.state import Boards, InMemoryState

EPOCH = 1_700_000_000.0


class Instance:
    """One instance's boards: wall time shared with the other, a monotonic clock of its own
    (started elsewhere, running at the same pace)."""

    def __init__(self, wall: list[float], monotonic: float) -> None:
        self.wall, self.base = wall, monotonic
        self.events = Events()
        self.told = []
        self.events.subscribe(self.told.append)
        mono = self.monotonic
        self.health = HealthBoard(mono, events=self.events,
                                  wall=lambda: datetime.fromtimestamp(self.wall[0], UTC))
        self.quota = QuotaBoard(lambda: self.wall[0])
        self.sessions = SessionBindings(mono, wall=lambda: self.wall[0])
        self.spend = SpendBoard(lambda: datetime.fromtimestamp(self.wall[0], UTC), events=self.events)
        self.issued = IssuedResponses(wall=lambda: self.wall[0])
        self.boards = Boards(self.health, self.quota, self.sessions, self.spend, self.issued)
        self.sent: list = []
        self.boards.listen(self.sent.append)

    def monotonic(self) -> float:
        return self.wall[0] - EPOCH + self.base

    def tick(self, seconds: float) -> None:
        self.wall[0] += seconds      # for both instances


def pair():
    wall = [EPOCH]
    return Instance(wall, 1000.0), Instance(wall, 555_000.0)


def test_a_cooldown_crosses_over_in_epoch_time_and_lands_on_the_other_monotonic_clock():
    a, b = pair()
    for _ in range(3):
        a.health.record_failure("relay", "HTTP 503", threshold=3, cooldown=60)
    change = a.sent[-1]
    assert change == HealthChange("relay", 3, EPOCH + 60, False, "HTTP 503", change.outage, EPOCH)
    a.tick(10)
    b.boards.apply(change)
    assert b.health.cooling_until("relay") == 555_010.0 + 50      # 50 s left, on b's own clock
    assert b.health.get("relay").failures == 3
    assert b.sent == [] and [e.kind for e in b.told] == []        # neither echoed nor announced again
    a.tick(50)
    assert b.health.cooling_until("relay") is None and b.health.needs_probe("relay")


def test_one_outage_is_announced_once_across_instances():
    a, b = pair()
    a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=30)
    b.boards.apply(a.sent[-1])
    b.health.record_success("relay")           # b's probe answers: the shared outage ends there
    assert [e.kind for e in a.told] == ["cooldown"] and [e.kind for e in b.told] == ["recovered"]
    assert a.told[0].episode == b.told[0].episode
    a.boards.apply(b.sent[-1])
    assert a.health.get("relay").failures == 0 and a.health.get("relay").outage is None
    assert [e.kind for e in a.told] == ["cooldown"]


def test_a_success_is_news_only_after_trouble():
    a, _ = pair()
    a.health.record_success("relay")
    assert a.sent == []
    a.health.record_failure("relay", "HTTP 500", threshold=3, cooldown=60)
    a.health.record_success("relay")
    assert [c.failures for c in a.sent] == [1, 0]


def test_manual_steering_is_shared_and_a_reload_ends_switches_everywhere():
    a, b = pair()
    a.health.switch("relay", False)
    a.health.prefer("backup", a.monotonic() + 600)
    for change in a.sent:
        b.boards.apply(change)
    assert not b.health.enabled("relay", True) and b.health.preferred_name() == "backup"
    assert b.health.preferred[1] == 555_000.0 + 600
    a.sent.clear()
    a.health.sync({"relay": ("fp",), "backup": ("fp2",)})     # a reload
    assert a.sent == [SwitchChange("relay", None, EPOCH)]
    a.health.unprefer()
    assert a.sent[-1] == PreferChange(None, 0.0, EPOCH)
    for change in a.sent:
        b.boards.apply(change)
    assert b.health.enabled("relay", True) and b.health.preferred_name() is None


def test_only_news_about_windows_is_shared():
    a, b = pair()
    headers = [("anthropic-ratelimit-unified-5h-utilization", "0.5"),
               ("anthropic-ratelimit-unified-5h-reset", str(int(EPOCH + 3600)))]
    a.quota.record("relay", headers)
    a.quota.record("relay", headers)            # the same again: nothing new
    assert a.sent == [WindowChange("relay", "5h", 0.5, EPOCH + 3600, False, EPOCH + 3600, at=EPOCH)]
    a.quota.record("relay", [headers[0][:1] + ("0.97",), headers[1]])
    assert a.sent[-1].utilization == 0.97
    for change in a.sent:
        b.boards.apply(change)
    assert b.quota.full("relay", 0.95).name == "5h"
    a.quota.forget("relay")
    assert a.sent[-1] == QuotaForget("relay", EPOCH)
    b.boards.apply(a.sent[-1])
    assert b.quota.windows("relay") == []


def test_a_window_learnt_by_the_time_of_a_reset_is_not_taken_back_one_learnt_after_it_is():
    # an instance that missed the reset still held the window, and its merge brought it back
    a, b = pair()
    headers = [("anthropic-ratelimit-unified-5h-utilization", "0.99"),
               ("anthropic-ratelimit-unified-5h-reset", str(int(EPOCH + 3600)))]
    b.quota.record("relay", headers)
    stale = b.sent[-1]
    a.tick(5)
    a.quota.forget("relay")
    assert a.boards.merge_in(stale) is None and a.quota.full("relay", 0.95) is None
    a.tick(5)
    b.quota.record("relay", headers[:1] + [("anthropic-ratelimit-unified-5h-reset", str(int(EPOCH + 3601)))])
    a.boards.merge_in(b.sent[-1])            # learnt after the reset: it stands
    assert a.quota.full("relay", 0.95) is not None
    b.boards.apply(QuotaForget("relay", EPOCH + 5))    # the reset reaches b late: only what was before it goes
    assert b.quota.full("relay", 0.95) is not None


def test_a_window_already_over_is_not_taken_in():
    _, b = pair()
    b.boards.apply(WindowChange("relay", "5h", 1.0, EPOCH - 1, True, EPOCH - 1))
    assert b.quota.windows("relay") == []


def test_a_binding_travels_with_its_last_use_and_the_newest_use_wins():
    a, b = pair()
    a.sessions.bind("messages", "s1", "relay", 600)
    a.tick(100)
    b.boards.apply(a.sent[-1])
    assert b.sessions.bound("messages", "s1") == "relay"
    a.tick(501)                                # idle past its TTL on b too: 601 s since its last use
    assert b.sessions.bound("messages", "s1") is None
    b.sessions.bind("messages", "s2", "other", 600)
    b.boards.apply(BindChange("messages", "s2", "relay", 600, EPOCH))   # used long before b's own use
    assert b.sessions.bound("messages", "s2") == "other"


def test_a_binding_that_only_restarts_its_idle_time_is_retold_sparingly():
    a, _ = pair()
    a.sessions.bind("messages", "s1", "relay", 600)
    a.tick(30)
    a.sessions.bind("messages", "s1", "relay", 600)     # within 10 % of the TTL: not retold
    assert len(a.sent) == 1
    a.tick(31)
    a.sessions.bind("messages", "s1", "relay", 600)
    a.sessions.bind("messages", "s1", "other", 600)     # moved: always news
    assert [c.upstream for c in a.sent] == ["relay", "relay", "other"]


def rules_with_budget():
    return Rules(timezone="UTC", client_keys=[ClientKey(name="k", key="secret-k", budget=Budget(daily=1.0))])


def test_spend_is_shared_per_period_and_totals_only_raise():
    a, b = pair()
    for inst in (a, b):
        inst.spend.configure(rules_with_budget())
    a.spend.add(CLIENT, "k", 0.4)
    kinds = [(c.period, c.usd) for c in a.sent]
    assert all(isinstance(c, SpendAdded) for c in a.sent) and kinds == [("daily", 0.4), ("monthly", 0.4)]
    daily = a.sent[0]
    assert datetime.fromtimestamp(daily.start, UTC).hour == 0 and daily.end - daily.start == 86400
    b.spend.add(CLIENT, "k", 0.3)
    b.boards.apply(SpendTotal(CLIENT, "k", "daily", daily.start, daily.end, 0.7))
    assert b.spend.spent(CLIENT, "k", "daily") == 0.7
    b.boards.apply(SpendTotal(CLIENT, "k", "daily", daily.start, daily.end, 0.5))   # late and smaller
    assert b.spend.spent(CLIENT, "k", "daily") == 0.7
    b.boards.apply(SpendTotal(CLIENT, "k", "daily", daily.start, daily.end, 1.2))
    assert b.spend.over(CLIENT, "k") is not None
    assert [e.kind for e in b.told] == []         # the instance that crossed it announces it


def test_quiet_spend_is_no_news():
    a, _ = pair()
    a.spend.load([(CLIENT, "k", 1.0, a.spend.clock())])     # the start-up load from the ledger
    assert a.sent == []


def test_merging_takes_the_better_view_and_says_what_the_store_should_take():
    a, _ = pair()
    a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    mine = a.sent[-1]
    stored_older = HealthChange("relay", 0, 0.0, False, None, None, EPOCH - 100)
    assert a.boards.merge_in(stored_older) == mine               # this instance's is newer: write it
    stored_newer = HealthChange("relay", 0, 0.0, False, None, None, EPOCH + 5)
    assert a.boards.merge_in(stored_newer) is None               # the store's is newer: take it
    assert a.health.get("relay").failures == 0
    a.spend.add(CLIENT, "k", 2.0)
    daily = a.sent[-2]
    stored = SpendTotal(CLIENT, "k", "daily", daily.start, daily.end, 1.5)
    assert a.boards.merge_in(stored) == SpendTotal(CLIENT, "k", "daily", daily.start, daily.end, 2.0)
    assert a.boards.merge_in(SpendTotal(CLIENT, "k", "daily", daily.start, daily.end, 9.0)) is None
    assert a.spend.spent(CLIENT, "k", "daily") == 9.0


def test_a_2xx_seen_after_another_instances_cooldown_began_ends_it_in_the_merge_after_an_outage():
    # the shared state down: a's 503 cools the relay; a second later b (which cannot know) is
    # served by it; back up, both views merge on b's word, the newer one
    a, b = pair()
    a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    cooled = a.sent[-1]
    a.tick(1)
    b.health.record_success("relay")
    assert b.sent == []                                  # a 2xx of a healthy upstream is no news
    merged = b.boards.merge_in(cooled)
    assert merged is not None and merged.failures == 0 and not merged.cooling_end
    assert b.health.cooling_until("relay") is None
    assert a.boards.merge_in(merged) is None and a.health.cooling_until("relay") is None
    c, _ = pair()                                        # a 2xx before the cooldown began: it stands
    c.tick(-1)
    c.health.record_success("relay")
    c.tick(2)
    assert c.boards.merge_in(cooled) is None and c.health.cooling_until("relay") is not None


def test_the_2xx_wins_whichever_instance_catches_up_first():
    # b first: its catch-up writes what it knows, its 2xx included; a's catch-up then merges it
    a, b = pair()
    a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    a.tick(1)
    b.health.record_success("relay")
    [written] = [c for c in b.boards.view() if isinstance(c, HealthChange)]
    assert written.failures == 0 and written.at == EPOCH + 1
    merged = a.boards.merge_in(written)
    assert merged is None and a.health.cooling_until("relay") is None     # the store's word stands


def test_the_view_is_everything_another_instance_should_know():
    a, _ = pair()
    a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    a.health.switch("backup", False)
    a.sessions.bind("messages", "s1", "relay", 600)
    a.spend.add(CLIENT, "k", 0.1)
    a.issued.record("resp_1", "relay")
    kinds = sorted(type(c).__name__ for c in a.boards.view())
    assert kinds == ["BindChange", "HealthChange", "IssueChange", "SpendTotal", "SpendTotal", "SwitchChange"]


async def test_in_memory_state_shares_nothing():
    a, _ = pair()
    state = InMemoryState()
    await state.start(a.boards)
    a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    assert a.sent == [] and a.health.on_change is None
    await state.stop()


def accounts(*instances, **keys) -> None:
    for instance in instances:
        instance.boards.sync_accounts({name: ("https://relay", key, "anthropic") for name, key in keys.items()})


def old_and_new_key():
    """Two instances whose rules give `relay` another key each; the first has learnt its key
    cooling and full."""
    a, b = pair()
    accounts(a, relay="old")
    accounts(b, relay="new")
    a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    a.quota.record("relay", [("anthropic-ratelimit-unified-5h-utilization", "0.99"),
                             ("anthropic-ratelimit-unified-5h-reset", str(int(EPOCH + 3600)))])
    return a, b


def test_records_carry_the_account_they_were_learned_under_and_another_account_s_are_left_out():
    a, b = old_and_new_key()
    assert {change.account for change in a.sent} == {a.boards.accounts["relay"]} != {""}
    for change in a.sent:
        b.boards.apply(change)
        assert b.boards.merge_in(change) is None        # b knows nothing of the new key to write back
    assert b.health.cooling_until("relay") is None and b.quota.full("relay", 0.95) is None
    # what b learns of the new key stands against the old key's record in a merge, and is written back
    b.health.record_failure("relay", "HTTP 500", threshold=5, cooldown=60)
    mine = b.boards.local(("h", "relay"))
    assert b.boards.merge_in(a.sent[0]) == mine and b.health.get("relay").failures == 1
    # a record that says no account (an older ccswitch's) is taken as the rules' account
    accounts(b, relay="old")
    b.boards.apply(replace(a.sent[-1], account=""))
    assert b.quota.full("relay", 0.95) is not None


def test_an_upstream_the_rules_do_not_name_takes_any_account_s_records():
    a, b = pair()
    accounts(a, relay="old")
    a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    b.boards.apply(a.sent[-1])
    assert a.sent[-1].account and b.health.cooling_until("relay") is not None


def test_what_this_instance_would_write_or_tell_carries_the_account_of_its_rules():
    # a catch-up writes back `merge_in`'s record and every `view` record: each says whose it is,
    # so an instance with another key under that name leaves it out
    a, b = old_and_new_key()
    own = a.boards.accounts["relay"]
    assert a.boards.local(("h", "relay")).account == own
    written = a.boards.merge_in(HealthChange("relay", 0, 0.0, False, None, None, EPOCH - 100))
    assert written is not None and written.account == own
    viewed = [c for c in a.boards.view() if isinstance(c, HealthChange | WindowChange)]
    assert len(viewed) == 2 and {c.account for c in viewed} == {own}
    for change in viewed:
        b.boards.apply(change)
    assert b.health.cooling_until("relay") is None and b.quota.full("relay", 0.95) is None


def test_the_issuer_of_a_stored_response_is_shared_with_its_account_and_kept_a_day():
    a, b = pair()
    accounts(a, b, relay="one")
    a.issued.record("resp_1", "relay")
    assert a.sent == [IssueChange("resp_1", "relay", EPOCH, a.boards.accounts["relay"])]
    b.boards.apply(a.sent[-1])
    assert b.issued.issuer("resp_1") == "relay" and b.sent == []       # not echoed
    assert b.boards.local(("r", "resp_1")) == a.sent[-1]
    a.tick(86_400)                  # a day on, the store has let it go: a catch-up does not write it back
    assert a.issued.issuer("resp_1") == "relay" and a.boards.view() == []


def test_a_response_issued_under_another_key_of_that_name_is_not_pinned_there():
    a, b = pair()
    accounts(a, relay="old")
    accounts(b, relay="new")        # b's `relay` is another account: it cannot continue a's response
    a.issued.record("resp_1", "relay")
    b.boards.apply(a.sent[-1])
    assert b.boards.merge_in(a.sent[-1]) is None
    assert b.issued.issuer("resp_1") is None


def test_two_instances_changing_one_upstream_at_once_settle_on_the_same_view():
    # within the milliseconds a record travels, a's 2xx and b's failure that starts a cooldown
    # crossed: each took the other's as the newer word, a cooling and b not, for good (b's next
    # failure then ended a's cooldown too)
    for cooldown_first in (False, True):
        a, b = pair()
        a.health.record_failure("relay", "HTTP 503", threshold=2, cooldown=60)
        b.boards.apply(a.sent[-1])
        if cooldown_first:
            b.health.record_failure("relay", "HTTP 503", threshold=2, cooldown=60)
            a.tick(0.001)
            a.health.record_success("relay")
        else:
            a.health.record_success("relay")
            a.tick(0.001)
            b.health.record_failure("relay", "HTTP 503", threshold=2, cooldown=60)
        a.boards.apply(b.sent[-1])
        b.boards.apply(a.sent[-1])
        cooling = (a.health.cooling_until("relay") is not None, b.health.cooling_until("relay") is not None)
        assert cooling == ((False, False) if cooldown_first else (True, True)), cooldown_first


def test_a_2xx_kept_to_itself_does_not_keep_another_instance_s_cooldown_out():
    # a healthy upstream's 2xx is no news: judged against it, another instance's cooldown was left
    # out and never heard of again (that one cooling, this one not, for good); told back, it ended
    # the cooldown without a "recovered" and, under traffic, bounced between instances
    a, b = pair()
    b.health.record_success("relay")
    a.health.record_failure("relay", "HTTP 503", threshold=1, cooldown=60)
    a.tick(0.001)
    b.health.record_success("relay")                       # while a's record travels
    b.boards.apply(a.sent[-1])
    assert a.health.cooling_until("relay") is not None and b.health.cooling_until("relay") is not None
    assert b.sent == []                                    # nothing told back
