"""mitmproxy's own methods that ccswitch wraps (where mitmproxy 12 offers no hook), each found
again under a wrapper an earlier load of the package installed (a script reload)."""

from __future__ import annotations

from collections.abc import Callable

#: the attribute a wrapper keeps mitmproxy's own method in; not `__wrapped__`, which mitmproxy's
#: own decorators (`@expect`) set
_ORIGINAL = "_ccswitch_original"


def mitmproxys(cls: type, name: str) -> Callable:
    """`cls.name` as mitmproxy defines it, even if a wrapper of ccswitch's stands there now."""
    method = getattr(cls, name)
    return getattr(method, _ORIGINAL, method)


def wrap(cls: type, name: str, wrapper: Callable, original: Callable) -> None:
    """`wrapper` in place of `cls.name` (mitmproxy's `original`), once per process."""
    setattr(wrapper, _ORIGINAL, original)
    if getattr(cls, name) is not wrapper:
        setattr(cls, name, wrapper)
