"""Which upstream issued a stored Responses answer (bounded, oldest forgotten first)."""

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
