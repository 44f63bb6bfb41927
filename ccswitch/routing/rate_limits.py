"""What an upstream's responses say about its rate limits: the windows its headers name, and how
long a 429 should cool for.

Every response (any status, streamed or not) may carry rate-limit headers; each family names
one or more *windows* (a 5-hour plan window, a per-minute token bucket, …) with how much of it
is used and when it resets.  `parse_windows` reads them, `rejection_reset` says how long a 429
should cool for; routing.quota's `QuotaBoard` keeps each upstream's live windows.

Families read (header names are case-insensitive):
* Anthropic subscription: `anthropic-ratelimit-unified-<w>-{utilization,reset,status}` for any
  window `<w>` (`5h`, `7d`, `7d_opus`, …), `…-unified-status`, `…-unified-reset`,
  `…-unified-representative-claim`.
* Anthropic API keys: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
  {limit,remaining,reset}` (reset in RFC 3339).
* OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset a duration, `6m0s`).
* ChatGPT Codex backend: `x-codex-{primary,secondary}-{used-percent,reset-after-seconds,reset-at}`.

A malformed value drops that window or that field, never raises: these run in the request path.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

Headers = list[tuple[str, str]]

_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-", "x-codex-")
_UNIFIED = "anthropic-ratelimit-unified-"
# No rate-limit window is longer than a month; a reset further ahead than this is garbage, and
# believing it would sideline an upstream indefinitely.
FARTHEST_RESET = 40 * 86400.0


@dataclass(frozen=True)
class Window:
    name: str                  # "5h", "7d", "unified", "requests", "tokens", "codex-primary", …
    utilization: float         # 0..1 (a value above 1 is kept as is)
    resets_at: float | None    # epoch seconds, None when the upstream gave no reset
    rejected: bool = False     # the upstream said this window rejects requests now


# --------------------------------------------------------------------------- values

def _number(text: str | None) -> float | None:
    """A finite number, or None."""
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fraction(text: str | None, scale: float = 1.0) -> float | None:
    """A utilization (0..1 after dividing by `scale`); negative or non-finite is malformed."""
    value = _number(text)
    if value is None or value < 0:
        return None
    return value / scale + 0.0       # + 0.0: "-0" is 0


def _reset(when: float | None, now: float) -> float | None:
    """An epoch reset, unless it is no time at all or implausibly far ahead.  One in the past
    is kept: it is a fact about a window that is over."""
    if when is None or when <= 0 or when > now + FARTHEST_RESET:
        return None
    return when


def _after(seconds: float | None, now: float) -> float | None:
    if seconds is None or seconds < 0:
        return None
    return _reset(now + seconds, now)


def _epoch(text: str | None, now: float) -> float | None:
    """Unix seconds (Anthropic's unified resets, Codex's reset-at)."""
    return _reset(_number(text), now)


def _rfc3339(text: str | None, now: float) -> float | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return _reset(when.timestamp(), now)
    except (ValueError, OverflowError, OSError):
        return None


_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:h|ms|us|µs|μs|ns|m|s))+", re.ASCII)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|μs|ns|m|s)", re.ASCII)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6,
                 "ns": 1e-9}


def duration_seconds(text: str | None) -> float | None:
    """A Go-style duration as OpenAI sends it (`6m0s`, `1.5s`, `20ms`, `1h2m3.5s`), or a bare
    number of seconds; None if it is neither (negative included)."""
    if text is None:
        return None
    text = text.strip()
    plain = _number(text)
    if plain is not None:
        return plain if plain >= 0 else None
    if not _DURATION.fullmatch(text):
        return None
    total = sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in _DURATION_PART.findall(text))
    return total if math.isfinite(total) else None


def _first(headers: Headers, name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def retry_after(headers: Headers, now: float) -> float | None:
    """Seconds from `now` that `retry-after-ms`, else `retry-after` (seconds or an HTTP date),
    asks to wait; a date in the past is 0; None when absent or malformed."""
    millis = _number(_first(headers, "retry-after-ms"))
    if millis is not None and millis >= 0 and millis / 1000 <= FARTHEST_RESET:
        return millis / 1000
    value = _first(headers, "retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is None:
        try:
            when = parsedate_to_datetime(value)
            if when.tzinfo is None:        # "-0000" means UTC of unknown origin
                when = when.replace(tzinfo=UTC)
            seconds = max(0.0, when.timestamp() - now)
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            return None
    if seconds is None or seconds < 0 or seconds > FARTHEST_RESET:
        return None
    return seconds


# --------------------------------------------------------------------------- families

def rate_limit_headers(headers: Headers) -> dict[str, str]:
    """The rate-limit headers, lower-cased, first occurrence of each: one cheap pass, empty for
    the usual response of a relay that sends none."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name[:1] in "aAxX":
            lower = name.lower()
            if lower.startswith(_PREFIXES) and lower not in found:
                found[lower] = value.strip() if isinstance(value, str) else ""
    return found


_UNIFIED_FIELD = re.compile(r"([a-z0-9_]+)-(utilization|reset|status)", re.ASCII)
_CLAIM_WINDOWS = {"five_hour": "5h", "seven_day": "7d", "seven_day_overage_included": "7d_oi"}
_ALLOWED = ("allowed", "allowed_warning")
_REJECTED = "rejected"
# `overage` (paid usage credits beyond the plan) reports a status of its own, and `rejected`
# there only means "no credits": the plan's windows may still serve.
_STATUS_NOT_A_WINDOW = "overage"


def _claim_window(claim: str | None) -> str | None:
    """The window a representative claim names: five_hour → 5h, seven_day_opus → 7d_opus."""
    if not claim:
        return None
    claim = claim.lower()
    if claim in _CLAIM_WINDOWS:
        return _CLAIM_WINDOWS[claim]
    for long, short in (("five_hour_", "5h_"), ("seven_day_", "7d_")):
        if claim.startswith(long):
            claim = short + claim[len(long):]
    return claim if re.fullmatch(r"[a-z0-9_]+", claim, re.ASCII) else None


def _unified(found: dict[str, str], now: float) -> tuple[list[Window], bool]:
    """Anthropic subscription windows; the flag says the overall status was reported."""
    fields: dict[str, dict[str, str]] = {}
    for key, value in found.items():
        if key.startswith(_UNIFIED):
            match = _UNIFIED_FIELD.fullmatch(key[len(_UNIFIED):])
            if match:
                fields.setdefault(match[1], {})[match[2]] = value
    status = found.get(_UNIFIED + "status", "").lower()
    if not fields and status not in (_REJECTED, *_ALLOWED):
        return [], False
    utilization = {name: _fraction(f.get("utilization")) for name, f in fields.items()}
    rejected = _rejected_windows(status, fields, utilization, found.get(_UNIFIED + "representative-claim"))
    overall_reset = _epoch(found.get(_UNIFIED + "reset"), now)
    windows = []
    for name in [*fields, *(n for n in rejected if n not in fields)]:
        used = utilization.get(name)
        if used is None and name not in rejected:
            continue
        reset = _epoch(fields.get(name, {}).get("reset"), now)
        if name in rejected and reset is None:
            reset = overall_reset      # the unified reset is the binding window's
        windows.append(Window(name, 1.0 if used is None else used, reset, name in rejected))
    return windows, status in (_REJECTED, *_ALLOWED)


def _rejected_windows(status: str, fields: dict[str, dict[str, str]],
                      utilization: dict[str, float | None], claim: str | None) -> set[str]:
    """Which window rejects: the one whose own status says so, else the representative claim,
    else one used up, else the plan as a whole ("unified")."""
    if status in _ALLOWED:
        return set()     # a window may be spent (a model's own allowance) while the plan serves
    said = {name for name, f in fields.items()
            if name != _STATUS_NOT_A_WINDOW and f.get("status", "").lower() == _REJECTED}
    if said or status != _REJECTED:
        return said
    named = _claim_window(claim)
    if named is not None:
        return {named}
    spent = {name for name, used in utilization.items() if used is not None and used >= 1}
    return spent or {"unified"}


_API_KEY_WINDOWS = ("requests", "tokens", "input-tokens", "output-tokens")


def _used(limit: str | None, remaining: str | None) -> float | None:
    """1 − remaining/limit; nothing without a positive limit and a remaining count ≥ 0."""
    total, left = _number(limit), _number(remaining)
    if total is None or left is None or total <= 0 or left < 0:
        return None
    return max(0.0, 1 - left / total)


_OPENAI_WINDOWS = ("requests", "tokens")
_CODEX_WINDOWS = ("primary", "secondary")


def _api_key_reset(found: dict[str, str], name: str, now: float) -> float | None:
    return _rfc3339(found.get(f"anthropic-ratelimit-{name}-reset"), now)


def _openai_reset(found: dict[str, str], name: str, now: float) -> float | None:
    return _after(duration_seconds(found.get(f"x-ratelimit-reset-{name}")), now)


def _codex_reset(found: dict[str, str], which: str, now: float) -> float | None:
    prefix = f"x-codex-{which}-"
    reset = _epoch(found.get(prefix + "reset-at"), now)    # absolute: no skew from latency
    return reset if reset is not None else _after(_number(found.get(prefix + "reset-after-seconds")), now)


def _anthropic_api_key(found: dict[str, str], now: float) -> list[Window]:
    windows = []
    for name in _API_KEY_WINDOWS:
        prefix = f"anthropic-ratelimit-{name}-"
        used = _used(found.get(prefix + "limit"), found.get(prefix + "remaining"))
        if used is not None:
            windows.append(Window(name, used, _api_key_reset(found, name, now)))
    return windows


def _openai(found: dict[str, str], now: float) -> list[Window]:
    windows = []
    for name in _OPENAI_WINDOWS:
        used = _used(found.get(f"x-ratelimit-limit-{name}"), found.get(f"x-ratelimit-remaining-{name}"))
        if used is not None:
            windows.append(Window(name, used, _openai_reset(found, name, now)))
    return windows


def _codex(found: dict[str, str], now: float) -> list[Window]:
    windows = []
    for which in _CODEX_WINDOWS:
        used = _fraction(found.get(f"x-codex-{which}-used-percent"), scale=100.0)
        if used is not None:
            windows.append(Window(f"codex-{which}", used, _codex_reset(found, which, now)))
    return windows


def read_windows(found: dict[str, str], now: float) -> tuple[list[Window], bool]:
    unified, status_reported = _unified(found, now)
    return [*unified, *_anthropic_api_key(found, now), *_openai(found, now), *_codex(found, now)], \
        status_reported


def limit_headers(headers: Headers) -> Headers:
    """Only the headers that say when an upstream serves again: what a stream keeps of its head
    for a rate-limit error that may come minutes later."""
    return [(name, value) for name, value in headers
            if name.lower().startswith(_PREFIXES) or name.lower() in ("retry-after", "retry-after-ms")]


def parse_windows(headers: Headers, now: float) -> list[Window]:
    """Every window the headers describe (names case-insensitive). A malformed value makes that
    window (or that field) ignored, never an exception."""
    found = rate_limit_headers(headers)
    return read_windows(found, now)[0] if found else []


def rejection_reset(headers: Headers, now: float, *, lone: bool = True) -> float | None:
    """For a 429 (or an in-stream rate-limit error): epoch seconds when the window that rejected
    resets, else what retry-after-ms / retry-after says, else the reset of a used-up window
    (remaining 0, Codex at 100 %), else (`lone`: headers of the refusal itself) a reset reported
    with no window or status at all (`_lone_reset`), else None.  Never the latest of all windows:
    a 5-hour rejection must not cool for the 7-day window; nor the routine reset of a window that
    was still serving (a 2xx head's, before an in-stream error): that may be hours away."""
    found = rate_limit_headers(headers)
    windows, status_reported = read_windows(found, now) if found else ([], False)
    said = [w.resets_at for w in windows if w.rejected and w.resets_at is not None and w.resets_at > now]
    if said:
        return max(said)          # every window that rejects must have reset
    wait = retry_after(headers, now)
    if wait is not None:
        return now + wait
    spent = [w.resets_at for w in windows
             if w.utilization >= 1 and w.resets_at is not None and w.resets_at > now]
    if spent:
        return max(spent)
    return _lone_reset(found, now) if lone and not windows and not status_reported else None


def _lone_reset(found: dict[str, str], now: float) -> float | None:
    """A reset reported without the figures that make a window of it (`…-unified-reset` without
    a status, `…-tokens-reset` without limit and remaining): the unified reset (Anthropic's
    reset of the window that binds), else the soonest of the others — the only word on when the
    upstream serves again beats a guessed cooldown, and one too soon only costs another 429."""
    unified = _epoch(found.get(_UNIFIED + "reset"), now)
    if unified is not None:
        return unified if unified > now else None
    resets = [*(_api_key_reset(found, name, now) for name in _API_KEY_WINDOWS),
              *(_openai_reset(found, name, now) for name in _OPENAI_WINDOWS),
              *(_codex_reset(found, which, now) for which in _CODEX_WINDOWS)]
    ahead = [when for when in resets if when is not None and when > now]
    return min(ahead) if ahead else None
