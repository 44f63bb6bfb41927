import logging
import math

import pytest

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
    account_digest,
    decode,
    encode,
    merge,
    notify,
)

EXAMPLES = [
    HealthChange("relay", 3, 1_700_000_060.5, True, "HTTP 429", "2023-11-14T22:14:20+00:00", 1_700_000_000.0),
    HealthChange("relay", 0, 0.0, False, None, None, 1.0),
    SwitchChange("relay", False, 5.0),
    SwitchChange("relay", None, 6.0),
    PreferChange("relay", 1_700_000_600.0, 7.0),
    PreferChange(None, 0.0, 8.0),
    WindowChange("relay", "5h", 0.42, 1_700_003_600.0, False, 1_700_003_600.0),
    WindowChange("relay", "tokens", 1.0, None, True, 1_700_000_300.0),
    WindowChange("relay", "7d", 0.5, 1_700_600_000.0, False, 1_700_600_000.0, account="0123456789abcdef"),
    QuotaForget("relay"),
    BindChange("messages", "sess-1 ünïcode", "relay", 3600.0, 1_700_000_000.0),
    SpendAdded("client", "key-1", "daily", 1_699_920_000.0, 1_700_006_400.0, 0.25),
    SpendTotal("upstream", "relay", "monthly", 1_698_796_800.0, 1_701_388_800.0, 12.5),
    IssueChange("resp_0123abc", "relay", 1_700_000_000.0, account="0123456789abcdef"),
    QuotaForget("relay", 1_700_000_000.0),
    WindowChange("relay", "5h", 0.42, 1_700_003_600.0, False, 1_700_003_600.0, at=1_700_000_000.0),
]


@pytest.mark.parametrize("change", EXAMPLES, ids=lambda c: type(c).__name__)
def test_every_record_survives_its_wire_form(change):
    assert decode(encode(change)) == change


@pytest.mark.parametrize("data", [
    None, [], "health", {"t": "nope"},
    {**encode(EXAMPLES[0]), "failures": "3"},          # a string where a number belongs
    {**encode(EXAMPLES[0]), "failures": True},         # a bool is not a count
    {**encode(EXAMPLES[0]), "cooling_end": math.nan},  # NaN is no time
    {**encode(EXAMPLES[0]), "upstream": None},         # not optional
    {k: v for k, v in encode(EXAMPLES[10]).items() if k != "ttl"},
    {**encode(EXAMPLES[0]), "account": None},          # an account is a text when said
])
def test_a_malformed_record_is_a_value_error_never_a_half_built_one(data):
    with pytest.raises(ValueError):
        decode(data)


def test_a_record_of_an_older_ccswitch_without_an_account_is_read_as_one_that_says_none():
    data = {k: v for k, v in encode(EXAMPLES[0]).items() if k != "account"}
    assert decode(data) == EXAMPLES[0] and decode(data).account == ""


def test_an_account_is_named_by_a_digest_that_tells_keys_apart_and_shows_none():
    one, other = account_digest(("https://r", "digest-1", "anthropic")), account_digest(("https://r", "digest-2", "anthropic"))
    assert one != other and len(one) == 16 and "digest" not in one
    assert one == account_digest(("https://r", "digest-1", "anthropic"))


def test_an_integer_time_is_taken_as_a_float():
    data = {**encode(EXAMPLES[2]), "at": 5}
    assert decode(data).at == 5.0 and isinstance(decode(data).at, float)


def test_the_newest_word_on_health_wins_both_ways():
    cooling = HealthChange("r", 3, 2000.0, False, "HTTP 503", "ep", at=100.0)
    answered = HealthChange("r", 0, 0.0, False, None, None, at=150.0)   # a 2xx after the cooldown began
    assert merge(cooling, answered) == answered
    assert merge(answered, cooling) == answered
    assert merge(None, cooling) == cooling


def test_a_failure_seen_elsewhere_while_a_cooldown_ran_does_not_end_it():
    # instance 1 cooled r while Redis was down; instance 2 then saw one failure of its own
    cooling = HealthChange("r", 3, 3700.0, False, "HTTP 503", "ep", at=100.0)
    one_failure = HealthChange("r", 1, 0.0, False, "HTTP 503", None, at=150.0)
    assert merge(cooling, one_failure) == cooling and merge(one_failure, cooling) == cooling
    after_it = HealthChange("r", 1, 0.0, False, "HTTP 503", None, at=4000.0)   # the cooldown was over
    assert merge(cooling, after_it) == after_it and merge(after_it, cooling) == after_it
    shorter = HealthChange("r", 1, 400.0, True, "HTTP 429", "ep2", at=150.0)   # a failure, too: no shorter
    assert merge(cooling, shorter) == cooling and merge(shorter, cooling) == cooling
    longer = HealthChange("r", 1, 9000.0, True, "HTTP 429", "ep2", at=150.0)
    assert merge(cooling, longer) == longer and merge(longer, cooling) == longer


def test_switches_preferences_and_bindings_keep_the_latest():
    old, new = SwitchChange("r", False, 1.0), SwitchChange("r", None, 2.0)
    assert merge(old, new) == new and merge(new, old) == new
    used_before = BindChange("messages", "s", "a", 60.0, at=10.0)
    used_after = BindChange("messages", "s", "b", 60.0, at=20.0)
    assert merge(used_before, used_after) == used_after and merge(used_after, used_before) == used_after
    assert merge(PreferChange("a", 900.0, 3.0), PreferChange(None, 0.0, 4.0)).upstream is None


def test_a_response_s_issuer_keeps_its_latest_word():
    # one issuer per id: the later record only moves its day in the shared store on
    earlier, later = IssueChange("resp_1", "a", 10.0), IssueChange("resp_1", "a", 20.0)
    assert merge(earlier, later) == later and merge(later, earlier) == later


def test_a_window_that_resets_later_wins_then_the_fuller_one():
    early = WindowChange("r", "5h", 0.9, 1000.0, False, 1000.0)
    later = WindowChange("r", "5h", 0.1, 5000.0, False, 5000.0)    # the next window: the old one is over
    assert merge(early, later) == later and merge(later, early) == later
    fuller = WindowChange("r", "5h", 0.95, 5000.0, False, 5000.0)
    assert merge(later, fuller) == fuller and merge(fuller, later) == fuller


def test_spend_takes_the_larger_total():
    small = SpendTotal("client", "k", "daily", 0.0, 86400.0, 1.0)
    large = SpendTotal("client", "k", "daily", 0.0, 86400.0, 3.0)
    assert merge(small, large) == large and merge(large, small) == large


def test_a_failing_hook_never_reaches_the_caller(caplog):
    caplog.set_level(logging.ERROR, "ccswitch.state")
    def broken(change):
        raise RuntimeError("bug")

    notify(broken, EXAMPLES[2])        # no exception
    notify(None, EXAMPLES[2])
    assert "could not take a change" in caplog.text
