"""The small value parsers behind rules.yaml's fields: durations, ``HH:MM`` times, weekdays,
status keys, header names and values, host names, proxies, the state and ledger URLs; and
``RulesError`` and ``glob_lookup``.  The models that use them are in config.models.

Pure module: no mitmproxy, no HTTP.  A value that may hold a secret is wrapped before it is
checked, so a rejected one never shows in an error message.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from ccswitch.config.database_url import PostgresURL, is_postgres_url, refuse_other_databases
from ccswitch.config.state_url import RedisURL
from ccswitch.net.proxy import Proxy, parse_proxy
from ccswitch.wire.headers import sendable

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_HHMM_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_STATUS_KEY_RE = re.compile(r"^(?:[3-5]\d\d|[3-5]xx)$")   # a 1xx or 2xx answer is never judged
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")     # a tab is text in a header; nothing else below 0x20


T = TypeVar("T")


def glob_lookup(table: Mapping[str, T], key: str) -> T | None:
    """Exact key, then the first matching glob (in the table's order), then "*"."""
    if key in table:
        return table[key]
    for pattern, value in table.items():
        if pattern != "*" and fnmatch.fnmatchcase(key, pattern):
            return value
    return table.get("*")


_WILD = "*?["


def shadowed_globs(table: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(glob, the earlier glob that takes every name it matches) for each entry `glob_lookup`
    never reaches: `claude-sonnet-*` after `claude-*`.  Exact names are looked up first, and
    only a plain prefix glob is judged (enough for how tables are written)."""
    found: list[tuple[str, str]] = []
    earlier: list[str] = []     # the plain `prefix*` globs so far, as their prefixes
    for pattern in table:
        if pattern == "*" or not any(c in pattern for c in _WILD):
            continue
        literal = pattern[:min(pattern.index(c) for c in _WILD if c in pattern)]
        if (by := next((p for p in earlier if literal.startswith(p)), None)) is not None:
            found.append((pattern, by + "*"))
        elif pattern.endswith("*") and not any(c in pattern[:-1] for c in _WILD):
            earlier.append(pattern[:-1])
    return found


class RulesError(Exception):
    """Invalid rules. ``problems``: every problem as ``FILE: field.path: message``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


#: the longest duration taken: a year (an endless cooldown or timeout is `ccswitch.disable` or a
#: large number, and past this the clock arithmetic of cooldowns and probes overflows)
MAX_DURATION = 366 * 86400.0


def parse_duration(value: Any) -> float:
    """``500ms``, ``30s``, ``10m``, ``2h`` or a bare number of seconds -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        if value < 0:
            raise ValueError("duration must not be negative")
        return _at_most_a_year(float(value))
    m = _DURATION_RE.match(value.strip()) if isinstance(value, str) else None
    if m:
        return _at_most_a_year(float(m.group(1)) * _UNITS[m.group(2)])
    if isinstance(value, str) and value.strip().startswith("-"):
        raise ValueError("duration must not be negative")
    raise ValueError("duration must be a number of seconds or like 500ms, 30s, 10m, 2h")


def _at_most_a_year(seconds: float) -> float:
    if seconds > MAX_DURATION:
        raise ValueError(f"duration must be at most a year ({MAX_DURATION:.0f} s, or 8784h)")
    return seconds


def parse_hhmm(text: Any, *, allow_24: bool = False) -> int:
    """``"HH:MM"`` -> minutes after midnight (``24:00`` only with allow_24)."""
    m = _HHMM_RE.match(text.strip()) if isinstance(text, str) else None
    if m:
        h, mi = int(m.group(1)), int(m.group(2))
        if (h < 24 and mi < 60) or (allow_24 and h == 24 and mi == 0):
            return h * 60 + mi
    raise ValueError(f"time must be HH:MM between 00:00 and {'24:00' if allow_24 else '23:59'}")


def format_hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def status_key(v: str) -> str:
    v = v.strip().lower()
    if not _STATUS_KEY_RE.match(v):
        raise ValueError('status key must be a code 300-599 or a class "3xx".."5xx" (a 2xx answer '
                         'is a success, never judged by these rules)')
    return v


def _as_written(value: Any) -> str:
    """A YAML value as the rules file spells it (`true`, not Python's `True`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else repr(value)


SHOWN_AT_MOST = 40    # characters: a longer value in a message may be a key pasted in the wrong place


SHORT_VALUE = 20      # characters: no weekday or hours window is longer


def shown(value: Any, at_most: int = SHOWN_AT_MOST) -> str:
    """`value` as the rules file spells it for a message, or only its length when it is long."""
    if len(str(value)) <= at_most:
        return _as_written(value)
    return f"(a value of {len(str(value))} characters, not shown)"


def parse_days(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)):
        return value
    days: set[int] = set()
    unknown = []
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 6:
            days.add(item)
            continue
        text = item.strip().lower() if isinstance(item, str) else ""
        first, sep, last = text.partition("-")
        ends = [weekday(first), weekday(last) if sep else weekday(first)]
        if None in ends:
            unknown.append(shown(item, SHORT_VALUE))      # every one at once, not the first alone
            continue
        a, b = ends
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    if unknown:
        raise ValueError(f"unknown weekday{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                         "(use mon..sun, or a range like mon-fri)")
    if not days:
        raise ValueError("days must not be empty (use enabled: false to switch an upstream off)")
    return frozenset(days)


_FULL_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def weekday(text: str) -> int | None:
    for names in (WEEKDAYS, _FULL_WEEKDAYS):
        if text in names:
            return names.index(text)
    return None


def header_name(v: str) -> str:
    if not _HEADER_NAME_RE.match(v):
        raise ValueError("invalid header name")
    if v.lower() in ("content-length", "transfer-encoding"):
        # the upstream could never be sent a request: ccswitch's client refuses to frame one twice
        raise ValueError(f"{v} frames each request's body, which ccswitch sets per request: remove it")
    return v


def header_value(v: Any) -> Any:
    """What HTTP can carry in a header (checked here, since the HTTP library's refusal would
    quote the value, a key, in its message)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        return v
    if "\r" in v or "\n" in v or "\0" in v:
        raise ValueError("header value must not contain line breaks")
    if not sendable(v):
        raise ValueError("must be latin-1 text: a header cannot carry a character beyond U+00FF")
    if _CONTROL.search(v):
        raise ValueError("must not contain control characters")
    if v != v.strip(" \t"):
        raise ValueError("must not begin or end with a space or tab (did it come so from an env file?)")
    return v


def activate_time(v: Any) -> str:
    return format_hhmm(parse_hhmm(v))


def some_hours(windows: tuple[Any, ...]) -> tuple[Any, ...]:
    # an empty list reads as "never" to some and "all day" to others: neither is guessed, as with days
    if not windows:
        raise ValueError("hours must not be empty (leave it out for all day, or use enabled: false "
                         "to switch an upstream off)")
    return windows


def distinct_times(times: tuple[str, ...]) -> tuple[str, ...]:
    # after activate_time: "6:00" and 06:00 are one time, probed (and retried) once
    return tuple(dict.fromkeys(times))


def hidden(value: Any) -> Any:
    # a proxy URL may hold a password: wrapped first, a rejected one shows as '**********' in errors
    return SecretStr(value) if isinstance(value, str) else value


def proxy_setting(value: Any) -> Proxy | None:
    if value is None or isinstance(value, Proxy):
        return value
    if isinstance(value, SecretStr):
        return parse_proxy(value.get_secret_value())
    raise ValueError("must be direct or a proxy URL like socks5://host:port")


def parse_sticky(value: Any) -> float:
    """`off` (or 0) disables session affinity; otherwise an idle time like `1h`."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return 0.0
    return parse_duration(value)


def not_a_variable(v: str) -> str:
    """A field ccswitch does not expand ${VAR} in: taken as written, it would be sent or matched
    as the text `${VAR}` without a word."""
    if "${" in v:
        raise ValueError("${VAR} is not expanded here (only in api_key, headers and the fields whose docs "
                         "say so): write the value itself")
    return v


def host_name(v: str) -> str:
    v = not_a_variable(v).strip().lower().rstrip(".")
    if "*" in v or "?" in v:   # a TLS handshake is matched by its exact name: list each host
        raise ValueError("must be a host name like api.anthropic.com; wildcards are not supported, "
                         "list each host")
    if not v or any(c in v for c in "/:@") or not v.isprintable() or any(c.isspace() for c in v):
        raise ValueError("must be a host name like api.anthropic.com")
    return v


def state_setting(value: Any) -> RedisURL | None:
    if value is None or isinstance(value, RedisURL):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a redis:// URL")
    return RedisURL.parse(value)


def usage_db_setting(value: Any) -> Path | PostgresURL:
    """A PostgreSQL URL becomes a PostgresURL (its password hidden); other text is a path."""
    if isinstance(value, Path | PostgresURL):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a path or a postgresql:// URL")
    if is_postgres_url(value):
        return PostgresURL.parse(value)
    refuse_other_databases(value)
    return Path(value)
