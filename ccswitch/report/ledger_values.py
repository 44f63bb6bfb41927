"""The ledger's numeric columns as the report reads them.

SQLite keeps whatever a row was given, so a database edited by hand or written by another tool
may hold text where a count or a time belongs: a token count that is no number counts as 0 (as
SQL's sum() reads it), a time that is no number is missing, as NULL is. Numeric text is its number.
"""
from __future__ import annotations

from typing import Any

from ccswitch.wire.numbers import as_number

#: the largest count the writer stores (`wire.usage`): past it, a hand edit or garbage
MAX_COUNT = 2 ** 53


def count_or_zero(value: Any) -> int:
    """A token count as the writer stores it: what is missing, no number, below 0 or past
    `MAX_COUNT` (only a hand edit leaves those) counts as 0; a fraction is rounded."""
    if type(value) is int and 0 <= value <= MAX_COUNT:    # what ccswitch writes: the live page reads every row
        return value
    number = as_number(value)
    return 0 if number is None or not 0 <= number <= MAX_COUNT else round(number)


def ms_or_none(value: Any) -> int | None:
    """A time in milliseconds, None when it is missing or no number."""
    number = as_number(value)
    return None if number is None else round(number)
