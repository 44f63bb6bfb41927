"""Which upstream issued a stored Responses answer (bounded, oldest forgotten first)."""

from ccswitch.routing.changes import IssueChange
from ccswitch.routing.issued import IssuedResponses


def test_the_issuer_of_each_id_is_kept_and_the_oldest_forgotten_past_the_capacity():
    issued = IssuedResponses(capacity=3)
    for i, upstream in enumerate("abcd"):
        issued.record(f"resp_{i}", upstream)
    assert issued.issuer("resp_0") is None and len(issued) == 3
    assert [issued.issuer(f"resp_{i}") for i in (1, 2, 3)] == ["b", "c", "d"]
    issued.record("resp_1", "b")            # seen again: kept longest
    issued.record("resp_4", "e")
    assert issued.issuer("resp_1") == "b" and issued.issuer("resp_2") is None


def test_each_issuer_recorded_here_is_told_with_its_time_and_one_told_by_another_instance_is_kept():
    told = []
    issued = IssuedResponses(capacity=2, wall=lambda: 1_700_000_000.0)
    issued.on_change = told.append
    issued.record("resp_1", "a")
    assert told == [IssueChange("resp_1", "a", 1_700_000_000.0)]
    issued.apply(IssueChange("resp_2", "b", 1_699_999_000.0))
    assert issued.issuer("resp_2") == "b" and len(told) == 1
    assert issued.shared("resp_2") == IssueChange("resp_2", "b", 1_699_999_000.0)
    issued.apply(IssueChange("resp_3", "c", 1_699_999_500.0))   # within the same bound: the oldest goes
    assert issued.issuer("resp_2") is None and issued.issuer("resp_1") == "a" and len(issued) == 2


def test_a_catch_up_bringing_in_older_ids_of_other_instances_keeps_this_one_s_newest():
    # they were kept in the order heard of: a day of the fleet's ids loaded after an outage pushed
    # out this instance's own last ones, and its own follow-ups lost their issuer
    clock = [100.0]
    issued = IssuedResponses(capacity=3, wall=lambda: clock[0])
    for i in range(3):
        clock[0] += 1
        issued.record(f"own_{i}", "a")
    for i in range(50):
        issued.apply(IssueChange(f"theirs_{i}", "b", 10.0 + i))
    assert [issued.issuer(f"own_{i}") for i in range(3)] == ["a", "a", "a"] and len(issued) == 3
    issued.apply(IssueChange("theirs_new", "b", 200.0))          # a newer one: the oldest own one goes
    assert issued.issuer("theirs_new") == "b" and issued.issuer("own_0") is None
    for _ in range(10):                                          # the same id issued again and again
        clock[0] += 1
        issued.record("own_2", "a")
    assert len(issued._by_age) <= 2 * issued.capacity and issued.issuer("own_2") == "a"
