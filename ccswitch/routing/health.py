"""Per-upstream health: consecutive failures, cooldown, half-open probing.

Keyed by upstream name so it outlives a rules reload; time comes from an
injected clock so tests never sleep.  Everything runs on mitmproxy's single
event loop, so plain attributes suffice (no locks).  An outage — from the first
cooldown to the next 2xx — is announced on the event bus once as `cooldown` and
once as `recovered`, however often a failed probe sends the upstream back.

What other instances should know (failures, cooldowns, manual switches, `ccswitch.use`) goes
out through the optional `on_change` hook as records (routing.changes) with epoch times;
`apply` takes another instance's record in without echoing it or announcing anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ccswitch.clock import utc_now
from ccswitch.routing.changes import Feed, HealthChange, PreferChange, SwitchChange, cut, notify
from ccswitch.routing.events import Event, Events

log = logging.getLogger("ccswitch.health")

Clock = Callable[[], float]


def health_claim(name: str) -> str:
    """The claim of an upstream's told state (`Event.state`): `cooldown` or `recovered`."""
    return f"health:{name}"


@dataclass
class UpstreamHealth:
    failures: int = 0
    cooling_until: float = 0.0
    probing: bool = False      # after a cooldown, one request at a time tests the upstream
    was_cooling: bool = False  # a cooldown started and its end is not yet logged
    switched: bool | None = None  # ccswitch.enable / disable until the next reload; None = the rules'
    last_error: str | None = None
    rate_limited: bool = False  # the cooldown lasts until a reset the upstream itself reported
    cooling_since: float = 0.0  # when this instance began the cooldown under way (clock time)
    outage: str | None = None   # the open outage's episode (its first cooldown's end), until a 2xx
    changed_at: float = 0.0     # epoch of the last change shared with other instances (0: none yet)
    # its last 2xx here (clock time; 0: none): no news while healthy, but in a merge after an
    # outage of the shared state it ends a cooldown another instance began before it
    succeeded: float = 0.0


class HealthBoard:
    def __init__(self, clock: Clock = time.monotonic, *, events: Events | None = None,
                 wall: Callable[[], datetime] = utc_now) -> None:
        self.clock = clock
        self.events = events   # cooldowns and recoveries are announced here (the notifier listens)
        self.wall = wall       # UTC wall time, for when a cooldown ends
        self._state: dict[str, UpstreamHealth] = {}
        self.preferred: tuple[str, float] | None = None  # (name, until) from ccswitch.use
        self.on_change: Feed | None = None   # the shared state's hook (None: this instance alone)
        self._switched_at: dict[str, float] = {}
        self._accounts: dict[str, tuple] | None = None   # the rules' upstreams' fingerprints (`sync`)
        # removed from the rules while cooling down, with their fingerprints: back before the
        # cooldown's end as the same account, they are still cooling (not a way round a retry-after)
        self._parked: dict[str, tuple[tuple, object, UpstreamHealth]] = {}    # (fingerprint, way, health)
        self._ways: dict[str, object] = {}    # how each upstream is reached (`sync`)
        self._preferred_at = 0.0

    def get(self, name: str) -> UpstreamHealth:
        return self._state.setdefault(name, UpstreamHealth())

    def sync(self, fingerprints: dict[str, tuple], ways: dict[str, object] | None = None) -> list[str]:
        """After a reload: forget removed upstreams, reset those whose identity changed (named
        in the answer), and drop manual enable/disable switches (they last until the next reload).
        `ways`: how each upstream is reached (its proxy, credentials included; None: directly): a
        cooldown its proxy caused ends when that changes (a mended password need not wait it out)."""
        changed = []
        before, self._accounts = self._accounts or {}, dict(fingerprints)
        ways_before, self._ways = self._ways, dict(ways or {})
        now = self.clock()
        self._parked = {name: parked for name, parked in self._parked.items() if parked[2].cooling_until > now}
        for name in list(self._state):
            if name not in fingerprints:   # its hooks were told of a cooldown: they hear it is over
                old = self._state.pop(name)
                if old.cooling_until > now and name in before:
                    self._parked[name] = (before[name], ways_before.get(name), old)
                self._outage_ended(name, old, "removed from the rules: no longer watched")
        for name, fp in fingerprints.items():
            if name in before or (parked := self._parked.pop(name, None)) is None:
                continue
            account, way, health = parked
            # back as the same account, and not through a mended proxy that caused its cooldown
            if account == fp and not (way != self._ways.get(name) and _proxys_doing(health.last_error)):
                # its hooks heard the outage end at the removal: a new one is theirs to hear of
                self._state[name] = replace(health, outage=None, switched=None, probing=False)
                log.info("ccswitch: upstream %s is back in the rules within its cooldown: %s left", name,
                         seconds_text(health.cooling_until - now))
        if self.preferred is not None and self.preferred[0] not in fingerprints:
            log.info("ccswitch: ccswitch.use %s ends: the rules no longer have it", self.preferred[0])
            self.unprefer()    # not to come back unasked with an upstream of that name added again
        for name, fp in fingerprints.items():
            state = self.get(name)
            if before.get(name, fp) != fp:
                self._state[name] = UpstreamHealth()
                changed.append(name)
                log.info("ccswitch: upstream %s changed its base_url, key or protocol: health reset", name)
                self._outage_ended(name, state, "its base_url, key or protocol changed: taken as healthy")
            elif state.switched is not None:     # a reload ends the switch for every instance
                log.info("ccswitch: the reload ends ccswitch.%s %s: the rules' enabled is in force again",
                         "enable" if state.switched else "disable", name)
                state.switched = None
                self._share_switch(name)
            if name not in changed and name in ways_before and ways_before[name] != self._ways.get(name) \
                    and state.cooling_until and _proxys_doing(state.last_error):
                log.info("ccswitch: upstream %s changed its proxy: the cooldown its proxy caused ends", name)
                self.reset(name, "its proxy changed: taken as healthy")
        return changed

    # ------------------------------------------------------------------ queries

    def is_current(self, name: str, fingerprint: tuple) -> bool:
        """Whether `fingerprint` (`Upstream.fingerprint`) is the account the rules give `name` now:
        a request sent before a reload gave the upstream another key, or removed it, answers for
        an account the rules no longer have (before the first `sync`, every one is current)."""
        return self._accounts is None or self._accounts.get(name) == fingerprint

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
            log.info("ccswitch: upstream %s: cooldown over, the next request probes it", name)
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

    def record_success(self, name: str, began: float | None = None, by: str = "") -> None:
        """A 2xx; `began`: when its request was sent (clock time).  One sent before a rate limit
        cooled the upstream down says nothing of the window that refused since: it ends nothing.
        `by`: what answered, when not a client's request (` to its activation probe`)."""
        state = self.get(name)
        now = self.clock()
        if began is not None and state.rate_limited and state.cooling_until > now and began < state.cooling_since:
            return
        state.succeeded = now
        if state.cooling_until:     # failures below the threshold never cooled it down: nothing ends
            log.info("ccswitch: upstream %s recovered", name)
        news = bool(state.failures or state.cooling_until or state.outage or state.rate_limited or state.last_error)
        self._outage_ended(name, state, f"answered with a 2xx again{by} after its cooldown")
        state.outage = None
        state.failures = 0
        state.cooling_until = 0.0
        state.was_cooling = False
        state.last_error = None
        state.rate_limited = False
        if news:
            self._share(name, state)

    def record_failure(self, name: str, reason: str, *, threshold: int, cooldown: float,
                       at_least: float = 0.0) -> None:
        """One failure; at `threshold` consecutive ones the upstream cools down.
        A failed probe after a cooldown sends it straight back.  One while it cools (a request
        under way when the cooldown began) counts, but the cooldown ends when it was to, unless
        this failure asks for longer (`at_least`)."""
        state = self.get(name)
        now = self.clock()
        was_probe = state.cooling_until and state.cooling_until <= now
        state.failures += 1
        state.last_error = reason
        if state.cooling_until > now:
            state.cooling_until = max(state.cooling_until, now + at_least)
        elif state.failures >= threshold or was_probe:
            length = max(cooldown, at_least)
            state.cooling_until, state.cooling_since = now + length, now
            state.was_cooling = True
            state.rate_limited = False
            # a failed probe sends it back below the threshold: said so, not read as the threshold met
            after = (f"its probe after a cooldown failed ({state.failures} consecutive failure(s))"
                     if state.failures < threshold else f"{state.failures} consecutive failure(s)")
            said = f"{seconds_text(length)} after {after} (last: {reason})"
            log.warning("ccswitch: upstream %s: cooldown for %s", name, said)
            self._announce_cooldown(name, state, length, f"cooling down for {said}")
        self._share(name, state)

    def record_rate_limit(self, name: str, reason: str, *, seconds: float, reset_known: bool,
                          began: float | None = None) -> None:
        """A 429 (or an in-stream rate-limit error): cool down at once, for as long as the
        upstream said (`reset_known`) or for the configured cooldown.  `began`: when its request
        was sent (clock time)."""
        state = self.get(name)
        state.failures += 1
        state.last_error = reason
        now = self.clock()
        end = now + max(0.0, seconds)
        # a request sent during a cooldown for failures (the route's last upstream is tried all
        # the same) that the upstream answers with its reset is the later news: that reset stands
        later = reset_known and not state.rate_limited and began is not None and began >= state.cooling_since
        if end <= state.cooling_until and not later:
            # a request under way when a longer cooldown began: that one ends when it was to
            self._share(name, state)
            return
        state.cooling_until, state.cooling_since = end, now
        state.was_cooling = True
        state.rate_limited = reset_known
        log.warning("ccswitch: upstream %s: rate limited, cooling down for %s%s (%s)", name, seconds_text(seconds),
                    " (until the reset it reported)" if reset_known else "", reason)
        self._announce_cooldown(name, state, seconds, f"rate limited ({reason}); cooling down for {seconds_text(seconds)}"
                                + (" until the reset it reported" if reset_known else ""))
        self._share(name, state)

    def _announce_cooldown(self, name: str, state: UpstreamHealth, seconds: float, reason: str) -> None:
        """The first cooldown of an outage is news; one after a failed probe is the same outage."""
        if state.outage is not None:
            return
        until = self.wall() + timedelta(seconds=max(0.0, seconds))
        # to the microsecond: two outages whose cooldowns end in the same second are two stories
        state.outage = until.isoformat(timespec="microseconds")
        if self.events is not None:
            # two instances that reach the threshold at once each name the outage by their own
            # cooldown's end: the claim is of the upstream's told state, so one of them tells it,
            # and the next outage is told however soon it follows an early recovery
            self.events.emit(Event("cooldown", name, reason, until=until, episode=state.outage,
                                   claim=health_claim(name), state="cooldown"))

    def reset(self, name: str, reason: str = "reset with ccswitch.reset: taken as healthy") -> None:
        old = self.get(name)
        self._state[name] = UpstreamHealth()
        self._outage_ended(name, old, reason)
        self._share(name, self._state[name])
        if old.switched is not None:
            self._share_switch(name)

    def _outage_ended(self, name: str, old: UpstreamHealth, reason: str) -> None:
        """An outage ended (a 2xx, a reset, a new identity): the hooks, told of its cooldown, are
        told it is over.  Claimed as the upstream's state, as its cooldown was: instances that
        cooled it down at once named the outage each their own way, and may each see a 2xx at once."""
        if old.outage is not None and self.events is not None:
            self.events.emit(Event("recovered", name, reason, episode=old.outage, claim=health_claim(name),
                                   state="recovered"))

    def switch(self, name: str, enabled: bool) -> None:
        self.get(name).switched = enabled
        self._share_switch(name)

    def prefer(self, name: str, until: float) -> None:
        """`ccswitch.use`: prefer `name` until `until` (clock time)."""
        self.preferred = (name, until)
        self._preferred_at = self._now_epoch()
        notify(self.on_change, self.shared_preference())

    def unprefer(self) -> None:
        self.preferred = None
        self._preferred_at = self._now_epoch()
        notify(self.on_change, self.shared_preference())

    def enabled(self, name: str, by_rules: bool) -> bool:
        state = self._state.get(name)
        return by_rules if state is None or state.switched is None else state.switched

    # ------------------------------------------------------------------ shared with other instances

    def _now_epoch(self) -> float:
        return self.wall().timestamp()

    def _to_epoch(self, moment: float) -> float:
        """A clock (monotonic) time as epoch seconds."""
        return moment - self.clock() + self._now_epoch()

    def _from_epoch(self, epoch: float) -> float:
        return epoch - self._now_epoch() + self.clock()

    def _share(self, name: str, state: UpstreamHealth) -> None:
        state.changed_at = self._now_epoch()
        if self.on_change is not None:
            notify(self.on_change, self.shared(name))

    def _share_switch(self, name: str) -> None:
        self._switched_at[name] = self._now_epoch()
        notify(self.on_change, self.shared_switch(name))

    def shared(self, name: str) -> HealthChange:
        """The upstream's health as other instances take it."""
        state = self.get(name)
        at = state.changed_at
        if state.succeeded and not state.failures and not state.cooling_until:   # healthy since its last 2xx
            at = max(at, self._to_epoch(state.succeeded))
        return self._record(name, state, at)

    def told(self, name: str) -> HealthChange | None:
        """The upstream's health as this instance last told it or took it in (None: neither yet):
        its word for other instances' live records, without the 2xx it kept to itself since."""
        state = self._state.get(name)
        return None if state is None or not state.changed_at else self._record(name, state, state.changed_at)

    def _record(self, name: str, state: UpstreamHealth, at: float) -> HealthChange:
        end = self._to_epoch(state.cooling_until) if state.cooling_until else 0.0
        return HealthChange(name, state.failures, end, state.rate_limited, cut(state.last_error), state.outage, at)

    def known(self, name: str) -> bool:
        """Whether this instance has a word of its own on the upstream: a change, or a 2xx."""
        state = self._state.get(name)
        return state is not None and bool(state.changed_at or state.succeeded)

    def shared_switch(self, name: str) -> SwitchChange:
        state = self._state.get(name)
        return SwitchChange(name, None if state is None else state.switched, self._switched_at.get(name, 0.0))

    def shared_preference(self) -> PreferChange:
        if self.preferred is None:
            return PreferChange(None, 0.0, self._preferred_at)
        return PreferChange(self.preferred[0], self._to_epoch(self.preferred[1]), self._preferred_at)

    def view(self) -> list[HealthChange | SwitchChange | PreferChange]:
        """Everything this instance would tell another one: the health of upstreams that changed
        or answered a 2xx since start (after an outage of the shared state, that 2xx may end a
        cooldown another instance began before it), the switches, the preference."""
        found: list[HealthChange | SwitchChange | PreferChange] = [
            self.shared(name) for name in self._state if self.known(name)]
        found += [self.shared_switch(name) for name, state in self._state.items() if state.switched is not None]
        if self.preferred_name() is not None:
            found.append(self.shared_preference())
        return found

    def apply(self, change: HealthChange | SwitchChange | PreferChange) -> None:
        """Take another instance's record in: nothing is echoed or announced (the instance that
        saw it announced it), though a cooldown learned this way is logged."""
        if isinstance(change, SwitchChange):
            self.get(change.upstream).switched = change.enabled
            self._switched_at[change.upstream] = change.at
            return
        if isinstance(change, PreferChange):
            until = self._from_epoch(change.until) if change.upstream is not None else 0.0
            self.preferred = (change.upstream, until) if change.upstream is not None else None
            self._preferred_at = change.at
            return
        state = self.get(change.upstream)
        now = self.clock()
        was_cooling = state.cooling_until > now
        # a cooldown that has ended still matters (the next request probes): never 0, which means none
        until = max(self._from_epoch(change.cooling_end), 1e-6) if change.cooling_end else 0.0
        if until != state.cooling_until:     # begun by the other instance by the time it told it
            state.cooling_since = self._from_epoch(change.at)
        state.cooling_until = until
        state.failures = change.failures
        state.rate_limited = change.rate_limited
        state.last_error = change.last_error
        state.outage = change.outage
        state.changed_at = change.at
        state.was_cooling = state.cooling_until > now
        if state.was_cooling and not was_cooling:
            log.info("ccswitch: upstream %s: cooling down for %s (learned from another instance)",
                     change.upstream, seconds_text(state.cooling_until - now))


def _proxys_doing(error: str | None) -> bool:
    """Whether a failure was the proxy's: its own refusal (`proxy socks5://…: …`), or a connect
    through it that timed out."""
    return error is not None and (error.startswith("proxy ") or "(through proxy " in error)


def seconds_text(seconds: float) -> str:
    """`300s`, and under ten seconds as much as it takes (`0.3s`, `1.5s`): a `cooldown: 300ms` is
    not "0s"."""
    if seconds >= 10:
        return f"{seconds:.0f}s"
    return (f"{max(0.0, seconds):.3f}".rstrip("0").rstrip(".") or "0") + "s"
