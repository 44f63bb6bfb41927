"""Places in a JSON value, for tests that put a value of another type somewhere in a request or
an answer (the fuzz tests of the conversions and the pump)."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any


def places(value: Any, here: tuple = ()) -> Iterator[tuple]:
    """Every place in a JSON value that can be replaced: object members and array items, outermost first."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield here + (key,)
            yield from places(inner, here + (key,))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield here + (i,)
            yield from places(inner, here + (i,))


def replaced(value: Any, path: tuple, new: Any) -> Any:
    """A copy of `value` with `new` at `path`."""
    out = copy.deepcopy(value)
    holder = out
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = copy.deepcopy(new)
    return out
