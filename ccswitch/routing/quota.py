"""What ccswitch remembers of each upstream's rate limits: its live windows, as its responses'
headers last described them (read by routing.rate_limits), for the planner (full or not, and
until when).  Windows other instances should know go out through `QuotaBoard.on_change`
(routing.changes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ccswitch.routing.changes import Feed, QuotaForget, WindowChange, notify
from ccswitch.routing.rate_limits import Headers, Window, rate_limit_headers, read_windows

log = logging.getLogger("ccswitch.quota")


@dataclass(frozen=True)
class _Seen:
    window: Window
    until: float        # when it stops counting: its reset, or a while after it was seen
    at: float           # when a response last described it (here or on another instance)


class QuotaBoard:
    """Each upstream's live windows, as its responses last described them.  Keyed by upstream
    name so it outlives a rules reload; all on one event loop, so no locks."""

    def __init__(self, clock: Callable[[], float] = time.time, unknown_reset_ttl: float = 300.0) -> None:
        self.clock = clock
        self.unknown_reset_ttl = unknown_reset_ttl
        self._windows: dict[str, dict[str, _Seen]] = {}
        # upstream -> when its windows were last forgotten (`ccswitch.reset`): a window learnt
        # before that, still held by an instance that missed the reset, is not taken back
        self._forgot: dict[str, float] = {}
        self.on_change: Feed | None = None   # the shared state's hook (None: this instance alone)

    def record(self, upstream: str, headers: Headers) -> None:
        """Learn from one response: each window named in the headers replaces that window;
        windows not named stay until their own reset."""
        found = rate_limit_headers(headers)
        if not found:
            return
        now = self.clock()
        windows, status_reported = read_windows(found, now)
        if not windows and not status_reported:
            return
        known = self._windows.setdefault(upstream, {})
        if status_reported:
            # a fresh overall status supersedes an overall rejection
            if known.pop("unified", None) is not None and self.on_change is not None:
                notify(self.on_change, WindowChange(upstream, "unified", 0.0, None, False, 0.0, at=now))
        for window in windows:
            old = known.get(window.name)
            if window.rejected and not (old is not None and old.window.rejected):
                log.info("ccswitch: upstream %s: its %s window rejects requests%s", upstream, window.name,
                         "" if window.resets_at is None else f" for {window.resets_at - now:.0f}s")
            until = window.resets_at if window.resets_at is not None else now + self.unknown_reset_ttl
            known[window.name] = _Seen(window, until, now)
            # only news is shared: a window unchanged since it was last told (a believed-until
            # without a reset moves on with every answer: told again once it moved a quarter)
            if self.on_change is not None and (old is None or old.window != window
                                               or until - old.until > self.unknown_reset_ttl / 4):
                notify(self.on_change, _shared(upstream, known[window.name]))

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
        for name in [name for name in self._forgot if name not in keep]:
            del self._forgot[name]

    def forget(self, upstream: str) -> None:
        """Every window of the upstream forgotten, by every instance (`ccswitch.reset`)."""
        change = QuotaForget(upstream, self.clock())
        self._windows.pop(upstream, None)
        self._forget(change)
        notify(self.on_change, change)

    def drop(self, upstream: str) -> None:
        """Every window of the upstream forgotten here only: a reload gave it another key, whose
        windows these are not.  Not told to other instances: those still on the old key keep
        its windows, those on the new key have learnt the new key's (the records carry their
        account, see routing.state)."""
        self._windows.pop(upstream, None)

    # ------------------------------------------------------------------ shared with other instances

    def shared(self, upstream: str, window: str) -> WindowChange | None:
        seen = next((s for s in self._live(upstream) if s.window.name == window), None)
        return None if seen is None else _shared(upstream, seen)

    def shared_forget(self, upstream: str) -> QuotaForget | None:
        """The upstream's last `ccswitch.reset` known here, None if none."""
        at = self._forgot.get(upstream)
        return None if at is None else QuotaForget(upstream, at)

    def view(self) -> list[WindowChange]:
        """Every live window, as other instances take it."""
        return [_shared(name, seen) for name in list(self._windows) for seen in self._live(name)]

    def apply(self, change: WindowChange | QuotaForget) -> None:
        """Take another instance's record in, without echoing it."""
        if isinstance(change, QuotaForget):
            self._forget(change if change.at else QuotaForget(change.upstream, self.clock()))
            return
        if change.at <= self._forgot.get(change.upstream, float("-inf")):
            return      # learnt by the upstream's last reset: that reset forgot it
        known = self._windows.setdefault(change.upstream, {})
        if change.until <= self.clock():
            known.pop(change.window, None)
            return
        window = Window(change.window, change.utilization, change.resets_at, change.rejected)
        known[change.window] = _Seen(window, change.until, change.at)

    def _forget(self, change: QuotaForget) -> None:
        """The windows learnt by the time of the reset forgotten, and that time kept."""
        self._forgot[change.upstream] = max(change.at, self._forgot.get(change.upstream, change.at))
        known = self._windows.get(change.upstream, {})
        for name in [name for name, seen in known.items() if seen.at <= change.at]:
            del known[name]


def _shared(upstream: str, seen: _Seen) -> WindowChange:
    window = seen.window
    return WindowChange(upstream, window.name, window.utilization, window.resets_at, window.rejected, seen.until,
                        at=seen.at)
