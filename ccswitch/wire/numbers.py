"""Numbers as other programs write them: an upstream's usage object, a ledger another tool wrote."""
from __future__ import annotations

import math
from decimal import Decimal
from typing import Any


def as_number(value: Any) -> float | int | None:
    """The number a value holds (numeric text included); None for None, other text, NaN or infinity."""
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
