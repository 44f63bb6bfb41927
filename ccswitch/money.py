"""Amounts of USD for people: cents, or as many decimals as the smallest amount below a cent
needs to show two significant digits ($0.0070, $0.00015), never more than six, in one precision
for a table's column (`cost_digits`); a budget's "spent of limit" pair, read one by one, to two
significant digits below a dollar (`usd`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

MAX_COST_DIGITS = 6


def cost_digits(costs: Iterable[float]) -> int:
    """Decimals for costs shown together: 2, or enough for the smallest non-zero one below a cent."""
    smallest = min((c for c in costs if c > 0), default=None)
    if smallest is None or smallest >= 0.01:
        return 2
    # the first significant digit's place, and one more ($0.0010 for a tenth of a cent, not $0.00100)
    return min(MAX_COST_DIGITS, math.ceil(-math.log10(smallest)) + 1)


def usd(*amounts: float) -> tuple[str, ...]:
    """Each amount as `$1.23`, or below a dollar to two significant digits (`$0.00081 of $50.00`,
    `$0.00033 of $0.00030`); amounts all below a dollar get a decimal more where another has
    more (`$0.042 of $0.050`, `$0.000002 of $0.500`): a budget's figures are read one by one,
    not down a column, and $0.042 read as $0.04 is not the 84 % it is.  Amounts that differ
    never read alike: `$0.0499 of $0.0500` (up to six decimals; a float's rounding noise stays
    hidden)."""
    digits = [_two_significant(amount) for amount in amounts]
    if len(amounts) > 1 and all(amount < 1 for amount in amounts):
        most = max(digits)
        digits = [min(most, n + 1) for n in digits]
    shown = tuple(_dollars(amount, n) for amount, n in zip(amounts, digits, strict=True))
    if not _clash(amounts, shown):
        return shown
    for finest in range(max(digits) + 1, MAX_COST_DIGITS + 1):
        finer = tuple(_dollars(amount, finest) for amount in amounts)
        if not _clash(amounts, finer):
            return finer
    return shown


def _two_significant(amount: float) -> int:
    """Decimals for two significant digits of an amount below a dollar (2 from there on)."""
    if amount <= 0 or amount >= 0.1:
        return 2
    return min(MAX_COST_DIGITS, math.ceil(-math.log10(amount)) + 1)


def _dollars(amount: float, digits: int) -> str:
    # half up from the amount to nine decimals: the same costs summed in another order (another
    # instance) differ in a float's last bits, and $0.1035 must not read $0.103 on one, $0.104 on the other
    exact = Decimal(repr(round(amount, 9))).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
    shown = f"${exact:,.{digits}f}"
    if amount > 0 and (amount < 10 ** -MAX_COST_DIGITS or not shown.strip("$0.,")):   # not $0.000000
        return f"<${10 ** -MAX_COST_DIGITS:.{MAX_COST_DIGITS}f}"
    return shown


def _clash(amounts: tuple[float, ...], shown: tuple[str, ...]) -> bool:
    """Two different amounts shown as the same text."""
    return len(set(shown)) < len(set(zip(amounts, shown, strict=True)))
