"""Amounts of USD for people: cents, or as many decimals as the smallest amount below a cent
needs to show two significant digits ($0.0070, $0.00015), never more than six.  One precision
for amounts shown together (a table's column, "spent of limit")."""

from __future__ import annotations

import math
from collections.abc import Iterable

MAX_COST_DIGITS = 6


def cost_digits(costs: Iterable[float]) -> int:
    """Decimals for costs shown together: 2, or enough for the smallest non-zero one below a cent."""
    smallest = min((c for c in costs if c > 0), default=None)
    if smallest is None or smallest >= 0.01:
        return 2
    return min(MAX_COST_DIGITS, math.floor(-math.log10(smallest)) + 2)


def usd(*amounts: float) -> tuple[str, ...]:
    """Each amount as `$1.23`, or in the decimals it needs below a cent (`$0.00081 of $50.00`,
    `$0.00033 of $0.00030`): a budget's figures are read one by one, not down a column."""
    return tuple(f"${amount:,.{cost_digits([amount])}f}" for amount in amounts)
