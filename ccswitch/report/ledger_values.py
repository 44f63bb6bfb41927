"""The ledger's numeric columns as the report reads them.

SQLite keeps whatever a row was given, so a database edited by hand or written by another tool
may hold text where a count or a time belongs: a token count that is no number counts as 0 (as
SQL's sum() reads it), a time that is no number is missing, as NULL is. Numeric text is its number.
"""
from __future__ import annotations

import math
from decimal import Decimal
from typing import Any


def as_number(value: Any) -> float | int | None:
    """The number a column holds (numeric text included); None for NULL, other text, NaN or infinity."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, Decimal)):
        return value if isinstance(value, int) else float(value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value):
        return int(value) if value.is_integer() else value
    return None


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
