"""Per-upstream health: consecutive failures, cooldown, half-open probing.

Keyed by upstream name so it outlives a rules reload; time comes from an
injected clock so tests never sleep.  Everything runs on mitmproxy's single
event loop, so plain attributes suffice (no locks).  An outage — from the first
cooldown to the next 2xx — is announced on the event bus once as `cooldown` and
once as `recovered`, however often a failed probe sends the upstream back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ccswitch.clock import utc_now
from ccswitch.routing.events import Event, Events

log = logging.getLogger("ccswitch.health")

Clock = Callable[[], float]


@dataclass
class UpstreamHealth:
    failures: int = 0
    cooling_until: float = 0.0
    probing: bool = False      # after a cooldown, one request at a time tests the upstream
    was_cooling: bool = False  # a cooldown started and its end is not yet logged
    fingerprint: tuple | None = None
    switched: bool | None = None  # ccswitch.enable / disable until the next reload; None = the rules'
    last_error: str | None = None
    rate_limited: bool = False  # the cooldown lasts until a reset the upstream itself reported
    outage: str | None = None   # the open outage's episode (its first cooldown's end), until a 2xx


class HealthBoard:
    def __init__(self, clock: Clock = time.monotonic, *, events: Events | None = None,
                 wall: Callable[[], datetime] = utc_now) -> None:
        self.clock = clock
        self.events = events   # cooldowns and recoveries are announced here (the notifier listens)
        self.wall = wall       # UTC wall time, for when a cooldown ends
        self._state: dict[str, UpstreamHealth] = {}
        self.preferred: tuple[str, float] | None = None  # (name, until) from ccswitch.use

    def get(self, name: str) -> UpstreamHealth:
        return self._state.setdefault(name, UpstreamHealth())

    def sync(self, fingerprints: dict[str, tuple]) -> None:
        """After a reload: forget removed upstreams, reset those whose identity changed,
        and drop manual enable/disable switches (they last until the next reload)."""
        for name in list(self._state):
            if name not in fingerprints:
                del self._state[name]
        for name, fp in fingerprints.items():
            state = self.get(name)
            if state.fingerprint is not None and state.fingerprint != fp:
                self._state[name] = UpstreamHealth(fingerprint=fp)
                log.info("upstream %s changed its base_url, key or protocol: health reset", name)
            else:
                state.fingerprint = fp
                state.switched = None

    # ------------------------------------------------------------------ queries

    def cooling_until(self, name: str) -> float | None:
        """When the cooldown ends (clock time), or None if it is not cooling."""
        state = self._state.get(name)
        if state is None:
            return None
        now = self.clock()
        if state.cooling_until > now:
            return state.cooling_until
        if state.was_cooling:
            state.was_cooling = False
            log.info("upstream %s: cooldown over, the next request probes it", name)
        return None

    def busy_probing(self, name: str) -> bool:
        state = self._state.get(name)
        return bool(state and state.probing)

    def needs_probe(self, name: str) -> bool:
        state = self._state.get(name)
        return bool(state and state.failures > 0 and state.cooling_until and
                    state.cooling_until <= self.clock())

    def preferred_name(self) -> str | None:
        if self.preferred and self.preferred[1] > self.clock():
            return self.preferred[0]
        self.preferred = None
        return None

    # ------------------------------------------------------------------ updates

    def begin_probe(self, name: str) -> None:
        self.get(name).probing = True

    def end_probe(self, name: str) -> None:
        self.get(name).probing = False

    def record_success(self, name: str) -> None:
        state = self.get(name)
        if state.failures or state.cooling_until:
            log.info("upstream %s recovered", name)
        if state.outage is not None and self.events is not None:
            self.events.emit(Event("recovered", name, "answered with a 2xx again after its cooldown",
                                   episode=state.outage))
        state.outage = None
        state.failures = 0
        state.cooling_until = 0.0
        state.was_cooling = False
        state.last_error = None
        state.rate_limited = False

    def record_failure(self, name: str, reason: str, *, threshold: int, cooldown: float,
                       at_least: float = 0.0) -> None:
        """One failure; at `threshold` consecutive ones the upstream cools down.
        A failed probe after a cooldown sends it straight back."""
        state = self.get(name)
        now = self.clock()
        was_probe = state.cooling_until and state.cooling_until <= now
        state.failures += 1
        state.last_error = reason
        if state.failures >= threshold or was_probe:
            length = max(cooldown, at_least)
            state.cooling_until = now + length
            state.was_cooling = True
            state.rate_limited = False
            log.warning("upstream %s: cooldown for %.0fs after %d consecutive failure(s) (last: %s)",
                        name, length, state.failures, reason)
            self._announce_cooldown(name, state, length, f"cooling down for {length:.0f}s after "
                                    f"{state.failures} consecutive failure(s) (last: {reason})")

    def record_rate_limit(self, name: str, reason: str, *, seconds: float, reset_known: bool) -> None:
        """A 429 (or an in-stream rate-limit error): cool down at once, for as long as the
        upstream said (`reset_known`) or for the configured cooldown."""
        state = self.get(name)
        state.failures += 1
        state.last_error = reason
        state.cooling_until = self.clock() + max(0.0, seconds)
        state.was_cooling = True
        state.rate_limited = reset_known
        log.warning("upstream %s: rate limited, cooling down for %.0fs%s (%s)", name, seconds,
                    " (until the reset it reported)" if reset_known else "", reason)
        self._announce_cooldown(name, state, seconds, f"rate limited ({reason}); cooling down for {seconds:.0f}s"
                                + (" until the reset it reported" if reset_known else ""))

    def _announce_cooldown(self, name: str, state: UpstreamHealth, seconds: float, reason: str) -> None:
        """The first cooldown of an outage is news; one after a failed probe is the same outage."""
        if state.outage is not None:
            return
        until = self.wall() + timedelta(seconds=max(0.0, seconds))
        state.outage = until.isoformat(timespec="seconds")
        if self.events is not None:
            self.events.emit(Event("cooldown", name, reason, until=until, episode=state.outage))

    def reset(self, name: str) -> None:
        fp = self.get(name).fingerprint
        self._state[name] = UpstreamHealth(fingerprint=fp)

    def switch(self, name: str, enabled: bool) -> None:
        self.get(name).switched = enabled

    def enabled(self, name: str, by_rules: bool) -> bool:
        state = self._state.get(name)
        return by_rules if state is None or state.switched is None else state.switched
