"""Which hosts are loopback: the listen check, the test guard and the probes ask here; and
the port a URL of the rules names."""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

PORT_RANGE = "the port must be a number from 1 to 65535"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_host(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")


def url_port(parts: SplitResult) -> int | None:
    """The port a URL names, None when it names none. Raises ValueError(PORT_RANGE) for one no
    connection can use: not a number, beyond 65535, or 0 (`:0`, `:00`), which urlsplit takes
    but which fails every connection only at run time."""
    try:
        port = parts.port
    except ValueError:
        raise ValueError(PORT_RANGE) from None
    if port == 0:
        raise ValueError(PORT_RANGE)
    return port


def refuse_unencoded_credentials(text: str, parts: SplitResult) -> None:
    """`u:p/ss@host` (or `?`, `#`): the URL's authority ends at that character, and what follows the
    `:` would read as the port.  Told by an `@` past the authority outside a query (no path or
    fragment has one; a database named with one is written `%40`), or in the query when the
    authority's port is no number or the query's text before it is no `key=value` (`?Secret@db`,
    not `?user=admin@server`).  Two `@` in the authority: Python ends the user's part at the
    last, libpq at the first (it would dial a host named after the password's tail, and say so
    in its error).  Raises ValueError (without the text) naming the fix."""
    if parts.netloc.count("@") > 1:
        raise ValueError("an '@' in the user name or password must be percent-encoded (%40)")
    if "@" in parts.netloc:
        return
    rest = text.split("://", 1)[-1][len(parts.netloc):]
    before_fragment, _, fragment = rest.partition("#")      # as urlsplit reads them
    path, _, query = before_fragment.partition("?")
    before_at, at, _ = query.partition("@")
    if "@" in path + fragment or (at and (not _port_reads(parts) or not ("=" in before_at or "&" in before_at))):
        raise ValueError("a '/', '?' or '#' in the user name or password must be percent-encoded "
                         "(%2F, %3F, %23), or the URL ends there")


def _port_reads(parts: SplitResult) -> bool:
    try:
        _ = parts.port
    except ValueError:
        return False
    return True
