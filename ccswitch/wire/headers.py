"""Header values as text: one character per byte (latin-1), everywhere in ccswitch.

Header bytes need not be ASCII or UTF-8: one client sends `x-user: café` in UTF-8, another
in latin-1.  Holding each byte as the code point of the same value keeps either exactly as
received and gives back the same bytes on the way out (mitmproxy's own `Headers.items()`
decodes UTF-8 instead, so flows are read through `fields`).  Text with a character above
U+00FF (a rules header typed by hand, a pasted key) has no such bytes: `sendable` says so
before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterable

#: the prefix of the headers ccswitch itself reads and writes (x-ccswitch-upstream, -session, ...)
OWN_PREFIX = "x-ccswitch-"


def from_wire(fields: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in fields]


def to_wire(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Raises UnicodeEncodeError for text that is not `sendable`."""
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def sendable(text: str) -> bool:
    """Every character below U+0100 (what latin-1 encodes), tested in C, not one by one: each
    header of every request sent upstream is asked."""
    if text.isascii():
        return True
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def named_by_connection(headers: Iterable[tuple[str, str]]) -> set[str]:
    """The header names a message's `connection` header lists: they are for its own hop only
    (RFC 9110 §7.6.1), like `connection` itself."""
    return {name.strip().lower() for key, value in headers if key.lower() == "connection"
            for name in value.split(",") if name.strip()}
