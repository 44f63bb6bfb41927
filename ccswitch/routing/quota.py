"""What an upstream's responses say about its rate limits, and what ccswitch remembers of it.

Every response (any status, streamed or not) may carry rate-limit headers; each family names
one or more *windows* (a 5-hour plan window, a per-minute token bucket, …) with how much of it
is used and when it resets.  `parse_windows` reads them, `rejection_reset` says how long a 429
should cool for, and `QuotaBoard` keeps each upstream's live windows for the planner.

Families read (header names are case-insensitive):
* Anthropic subscription: `anthropic-ratelimit-unified-<w>-{utilization,reset,status}` for any
  window `<w>` (`5h`, `7d`, `7d_opus`, …), `…-unified-status`, `…-unified-reset`,
  `…-unified-representative-claim`.
* Anthropic API keys: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
  {limit,remaining,reset}` (reset in RFC 3339).
* OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset a duration, `6m0s`).
* ChatGPT Codex backend: `x-codex-{primary,secondary}-{used-percent,reset-after-seconds,reset-at}`.

A malformed value drops that window or that field, never raises: these run in the request path.
Windows other instances should know go out through `QuotaBoard.on_change` (routing.changes).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ccswitch.routing.changes import Feed, QuotaForget, WindowChange, notify

log = logging.getLogger("ccswitch.quota")

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

def _rate_limit_headers(headers: Headers) -> dict[str, str]:
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


def _read(found: dict[str, str], now: float) -> tuple[list[Window], bool]:
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
    found = _rate_limit_headers(headers)
    return _read(found, now)[0] if found else []


def rejection_reset(headers: Headers, now: float, *, lone: bool = True) -> float | None:
    """For a 429 (or an in-stream rate-limit error): epoch seconds when the window that rejected
    resets, else what retry-after-ms / retry-after says, else the reset of a used-up window
    (remaining 0, Codex at 100 %), else (`lone`: headers of the refusal itself) a reset reported
    with no window or status at all (`_lone_reset`), else None.  Never the latest of all windows:
    a 5-hour rejection must not cool for the 7-day window; nor the routine reset of a window that
    was still serving (a 2xx head's, before an in-stream error): that may be hours away."""
    found = _rate_limit_headers(headers)
    windows, status_reported = _read(found, now) if found else ([], False)
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


# --------------------------------------------------------------------------- the board

@dataclass(frozen=True)
class _Seen:
    window: Window
    until: float        # when it stops counting: its reset, or a while after it was seen


class QuotaBoard:
    """Each upstream's live windows, as its responses last described them.  Keyed by upstream
    name so it outlives a rules reload; all on one event loop, so no locks."""

    def __init__(self, clock: Callable[[], float] = time.time, unknown_reset_ttl: float = 300.0) -> None:
        self.clock = clock
        self.unknown_reset_ttl = unknown_reset_ttl
        self._windows: dict[str, dict[str, _Seen]] = {}
        self.on_change: Feed | None = None   # the shared state's hook (None: this instance alone)

    def record(self, upstream: str, headers: Headers) -> None:
        """Learn from one response: each window named in the headers replaces that window;
        windows not named stay until their own reset."""
        found = _rate_limit_headers(headers)
        if not found:
            return
        now = self.clock()
        windows, status_reported = _read(found, now)
        if not windows and not status_reported:
            return
        known = self._windows.setdefault(upstream, {})
        if status_reported:
            # a fresh overall status supersedes an overall rejection
            if known.pop("unified", None) is not None and self.on_change is not None:
                notify(self.on_change, WindowChange(upstream, "unified", 0.0, None, False, 0.0))
        for window in windows:
            old = known.get(window.name)
            if window.rejected and not (old is not None and old.window.rejected):
                log.info("upstream %s: its %s window rejects requests%s", upstream, window.name,
                         "" if window.resets_at is None else f" for {window.resets_at - now:.0f}s")
            until = window.resets_at if window.resets_at is not None else now + self.unknown_reset_ttl
            known[window.name] = _Seen(window, until)
            # only news is shared: a window unchanged since it was last told (a believed-until
            # without a reset moves on with every answer: told again once it moved a quarter)
            if self.on_change is not None and (old is None or old.window != window
                                               or until - old.until > self.unknown_reset_ttl / 4):
                notify(self.on_change, _shared(upstream, window, until))

    def _live(self, upstream: str) -> list[_Seen]:
        known = self._windows.get(upstream)
        if not known:
            return []
        now = self.clock()
        for name in [name for name, seen in known.items() if seen.until <= now]:
            del known[name]
        return list(known.values())

    def windows(self, upstream: str) -> list[Window]:
        """The live windows: reset not passed (one without a reset lives `unknown_reset_ttl`)."""
        return [seen.window for seen in self._live(upstream)]

    def utilization(self, upstream: str) -> tuple[float, Window] | None:
        """The highest live window's utilization and the window, None if nothing is known."""
        live = self.windows(upstream)
        if not live:
            return None
        top = max(live, key=lambda w: (w.utilization, w.rejected))
        return top.utilization, top

    def full(self, upstream: str, drain_at: float) -> Window | None:
        """The window that makes the upstream full (utilization >= drain_at or rejected) — if
        several, the one that resets last — or None.  The upstream is full until its reset."""
        blocking = [seen for seen in self._live(upstream)
                    if seen.window.rejected or seen.window.utilization >= drain_at]
        return max(blocking, key=lambda seen: seen.until).window if blocking else None

    def full_until(self, upstream: str, drain_at: float) -> float | None:
        """When the upstream stops being full (for a window without a reset, when ccswitch stops
        believing it), or None if it is not full."""
        blocking = [seen.until for seen in self._live(upstream)
                    if seen.window.rejected or seen.window.utilization >= drain_at]
        return max(blocking) if blocking else None

    def sync(self, names: Iterable[str]) -> None:
        """After a rules reload: forget upstreams that are gone."""
        keep = set(names)
        for name in [name for name in self._windows if name not in keep]:
            del self._windows[name]

    def forget(self, upstream: str) -> None:
        self._windows.pop(upstream, None)
        notify(self.on_change, QuotaForget(upstream))

    # ------------------------------------------------------------------ shared with other instances

    def shared(self, upstream: str, window: str) -> WindowChange | None:
        seen = next((s for s in self._live(upstream) if s.window.name == window), None)
        return None if seen is None else _shared(upstream, seen.window, seen.until)

    def view(self) -> list[WindowChange]:
        """Every live window, as other instances take it."""
        return [_shared(name, seen.window, seen.until) for name in list(self._windows) for seen in self._live(name)]

    def apply(self, change: WindowChange | QuotaForget) -> None:
        """Take another instance's record in, without echoing it."""
        if isinstance(change, QuotaForget):
            self._windows.pop(change.upstream, None)
            return
        known = self._windows.setdefault(change.upstream, {})
        if change.until <= self.clock():
            known.pop(change.window, None)
            return
        window = Window(change.window, change.utilization, change.resets_at, change.rejected)
        known[change.window] = _Seen(window, change.until)


def _shared(upstream: str, window: Window, until: float) -> WindowChange:
    return WindowChange(upstream, window.name, window.utilization, window.resets_at, window.rejected, until)
