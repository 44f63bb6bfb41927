"""A token count read from the ledger counts as the writer would have stored it (`count_or_zero`)."""
from ccswitch.report.ledger_values import MAX_COUNT, count_or_zero


def test_a_count_past_what_the_writer_stores_counts_as_0_in_every_form():
    # only a hand edit leaves one: a huge number would dwarf every real spend
    for huge in (MAX_COUNT + 1, 2 ** 60, float(2 ** 60), "1e20", 1e20):
        assert count_or_zero(huge) == 0, huge
    assert count_or_zero(MAX_COUNT) == MAX_COUNT


def test_a_fractional_count_is_rounded_not_cut():
    assert count_or_zero(2.7) == 3 and count_or_zero("2.7") == 3 and count_or_zero(2.2) == 2
