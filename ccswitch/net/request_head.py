"""The head of a request sent upstream, written by ccswitch's client (net.http1) and checked
first: what HTTP cannot carry is refused before a byte is sent."""

from __future__ import annotations

import re

from ccswitch.wire.headers import named_by_connection

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_METHOD = re.compile(_TOKEN)
_NAMES = re.compile(rf"{_TOKEN}(?:\n{_TOKEN})*")     # every name, one per line
_TARGET = re.compile(r"[^\x00-\x20\x7f]+")
# a header value may not hold a control character other than a tab (CR and LF above all)
_NOT_IN_VALUES = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> tuple[bytes, bool]:
    """The request's head as sent, and whether it lets the connection stay open.  Names, values
    and the target are checked in C, all at once (every request sent upstream is); values lose
    surrounding blanks, as HTTP reads them.  ValueError for what HTTP cannot carry, naming its
    kind only: the value may be a key."""
    names = "\n".join([name for name, _ in headers])
    values = [value.strip(" \t") for _, value in headers]
    # a line break inside one name would pass for the line between two: counted
    if (not _METHOD.fullmatch(method) or not _TARGET.fullmatch(target) or not _NAMES.fullmatch(names)
            or names.count("\n") != len(headers) - 1 or _NOT_IN_VALUES.search("\t".join(values))):
        raise ValueError("a method, target or header HTTP cannot carry")
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for (name, _), value in zip(headers, values, strict=True)]
    lines.append("\r\n")
    try:
        head = "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("a header value HTTP cannot carry") from None
    return head, "close" not in named_by_connection(headers)
