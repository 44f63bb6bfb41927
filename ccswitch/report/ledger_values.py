"""The ledger's numeric columns as the report reads them.

SQLite keeps whatever a row was given, so a database edited by hand or written by another tool
may hold text where a count or a time belongs: a token count that is no number counts as 0 (as
SQL's sum() reads it), a time that is no number is missing, as NULL is. Numeric text is its number.
"""
from __future__ import annotations

from typing import Any

from ccswitch.wire.numbers import as_number


def count_or_zero(value: Any) -> float | int:
    """A token count: what is missing or no number counts as 0."""
    if type(value) is int:      # what ccswitch writes: the live page reads every recorded row
        return value
    number = as_number(value)
    return 0 if number is None else number


def ms_or_none(value: Any) -> int | None:
    """A time in milliseconds, None when it is missing or no number."""
    number = as_number(value)
    return None if number is None else round(number)
