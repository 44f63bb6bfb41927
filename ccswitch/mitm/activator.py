"""mitmproxy glue for activation probes: the loop, the command, the records."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from mitmproxy import exceptions

from ccswitch.activation.history import PastProbe, restore
from ccswitch.activation.probe import ProbeResult, Schedule, Slot, send_probe
from ccswitch.clock import ms_since, utc_now
from ccswitch.config.models import Rules, Upstream
from ccswitch.dial.shutdown import CUT_BY_SHUTDOWN
from ccswitch.ledger.reading import LedgerReadError, as_text, exists, open_reader
from ccswitch.mitm.commands import ccswitch_command, known_upstream
from ccswitch.mitm.gateway import UPSTREAM_TLS_OPTIONS, Gateway, upstream_tls
from ccswitch.mitm.lifecycle import hook_task
from ccswitch.net import http1
from ccswitch.routing.events import Event
from ccswitch.routing.limits import cool_rate_limited, learn_windows

log = logging.getLogger("ccswitch.activation")
#: how long a claimed activation time stays another instance's (its slot names its day)
_CLAIM_HOLDS = 2 * 86400.0


#: seconds between looks at the schedule
TICK_EVERY = 1.0

class Activator:
    """Fires each upstream's `activate_at` probes; `ccswitch.activate NAME` fires one now."""

    def __init__(self, gateway: Gateway, clock: Callable[[], datetime] | None = None) -> None:
        self.gateway = gateway
        self.clock = clock or (lambda: utc_now())
        self.schedule = gateway.activations
        self.client: http1.UpstreamClient | None = None
        self._task: asyncio.Task | None = None

    def running(self) -> None:
        self.client = http1.UpstreamClient(ssl_context=upstream_tls())
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def configure(self, updated) -> None:
        if self.client is not None and updated & UPSTREAM_TLS_OPTIONS:
            self.client.ssl_context = upstream_tls()

    def done(self) -> asyncio.Task:
        return hook_task(self._stop(), "activation stop")

    async def _stop(self) -> None:
        # the router's drain waited for the probes in flight (`gateway.probes`) before it closed
        # the ledger; any left now are past the grace period
        if self._task:
            self._task.cancel()
        for task in list(self.gateway.probes):
            task.cancel()
        if self.client:
            await self.client.aclose()

    def now(self, rules: Rules) -> datetime:
        return self.clock().astimezone(rules.tz)

    async def seed(self) -> None:
        """The schedule as the ledger left it; the series a stop cut short past `grace` is told
        (`activation_failed`), as one that used its tries is."""
        rules = self.gateway.rules
        # in a thread: a ledger that takes its time to answer (PostgreSQL) holds up no request;
        # nothing else touches the schedule before the first tick
        try:
            ended = await asyncio.to_thread(seed_from_ledger, self.schedule, rules, self.now(rules))
        except Exception as exc:    # rows another tool wrote (a ts that is no time): probes still go
            log.warning("ccswitch: could not read past activations: %r (a probe that already fired today "
                        "may fire again)", exc)
            return
        for slot, tries in ended:
            reason = (f"the {slot.at} activation probe of {slot.day} failed {tries} time(s); its tries left "
                      "were past the grace period when ccswitch started again")
            log.warning("ccswitch: %s: %s", slot.upstream, reason)
            self.gateway.events.emit(Event("activation_failed", slot.upstream, reason, episode=f"{slot.day} {slot.at}"))

    async def _loop(self) -> None:
        await self.seed()
        failing = None
        while True:
            try:
                self.tick()
                failing = None
            except Exception as exc:   # a bug must not end the day's probes: said once, tried each tick
                if repr(exc) != failing:
                    log.exception("ccswitch: activation schedule failed (tried again each tick)")
                failing = repr(exc)
            await asyncio.sleep(TICK_EVERY)

    def tick(self) -> list[asyncio.Task]:
        """Start every probe that is due now (reads the current rules: reloads reschedule)."""
        rules = self.gateway.rules
        now = self.now(rules)
        self.schedule.forget_before(now.date() - timedelta(days=1))
        health = self.gateway.health
        started = []
        for upstream, slot in self.schedule.due(rules, now, lambda u: health.enabled(u.name, u.enabled)):
            self.schedule.started(slot)
            started.append(self._spawn(upstream, slot))
        return started

    def _spawn(self, upstream: Upstream, slot: Slot | None) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._probe(upstream, slot))
        self.gateway.probes.add(task)
        task.add_done_callback(self.gateway.probes.discard)
        return task

    async def _probe(self, upstream: Upstream, slot: Slot | None) -> ProbeResult | None:
        """The probe's result; None when another instance sends this time's probe."""
        if slot is not None and not await self._ours(upstream, slot):
            return None
        sent_at, started = self.clock(), time.monotonic()
        try:
            # the router's client once it runs (one pool, one `max_connections` cap), else its own
            client = self.gateway.upstream_client or self.client
            result = await send_probe(client, upstream, allow_url=self.gateway.allow_url, clock=self.clock,
                                      connect_timeout=self.gateway.rules.timeouts.connect)
        except asyncio.CancelledError:
            # only the shutdown cancels a probe (the router's cut past its grace period, or ours):
            # it reached the upstream or was on its way, so it ends as a request cut there does
            self._record(upstream, slot, ProbeResult(upstream.name, False, None, CUT_BY_SHUTDOWN, ms_since(started), sent_at))
            raise
        except Exception as exc:   # a bug of ours is a failed probe, retried like one, not a slot stuck for good
            log.exception("ccswitch: the activation probe for %s failed inside ccswitch", upstream.name)
            result = ProbeResult(upstream.name, False, None, f"internal error: {type(exc).__name__}", 0, self.clock())
        self._record(upstream, slot, result)
        return result

    async def _ours(self, upstream: Upstream, slot: Slot) -> bool:
        """With a shared state, one instance sends each try of a time's probe: the first to claim
        it.  One that loses takes the time as done, so a relay sees one probe, not one per instance
        (each try is claimed: after a restart, an instance goes on with the series the shared
        ledger shows, and still only one sends each try)."""
        tries = self.schedule.slots[slot].tries
        try:
            ours = await self.gateway.state.claim(f"activation:{upstream.name}:{slot.text}:{tries}",
                                                  self.clock().timestamp() + _CLAIM_HOLDS)
        except Exception:       # a bug in the claim: a probe too many beats none
            log.exception("ccswitch: claiming the %s activation of %s failed; it is sent from here", slot.at,
                          upstream.name)
            ours = True
        if not ours:
            self.schedule.finished(slot, True, self.now(self.gateway.rules), 0)
            log.info("ccswitch: the %s activation probe for %s is another instance's", slot.at, upstream.name)
        return ours

    def _record(self, upstream: Upstream, slot: Slot | None, result: ProbeResult) -> None:
        rules = self.gateway.rules
        cut = result.error == CUT_BY_SHUTDOWN
        health = self.gateway.health
        # an answer like any: its rate-limit windows are learnt, and a 429 cools the upstream down
        # (unless a reload gave the upstream another key while the probe ran: not the new key's)
        learn = health.is_current(upstream.name, upstream.fingerprint())
        if learn and result.limits:
            learn_windows(self.gateway.quota, self.gateway.events, upstream.name, list(result.limits),
                          rules.failover.drain_at)
        if learn and result.status == 429:
            cool_rate_limited(health, self.gateway.quota, upstream.name, result.error or "HTTP 429",
                              list(result.limits), rules.failover.cooldown, refusal=True)
        given_up = False
        if slot is not None:
            # a cut probe most likely opened the window: done, here as after a restart (history.restore);
            # a 429's retry waits for the reset it reported (sooner, it would only be refused again)
            wait = rules.activation.retry_interval
            if result.status == 429 and (until := health.cooling_until(upstream.name)) is not None:
                wait = max(wait, until - health.clock())
            self.schedule.finished(slot, result.ok or cut, self.now(rules), wait)
            given_up = not result.ok and not cut and self.schedule.gave_up(slot, rules.activation.retries)
            if given_up:
                self.gateway.events.emit(Event(
                    "activation_failed", upstream.name, f"the {slot.at} activation probe of {slot.day} failed "
                    f"{self.schedule.slots[slot].tries} time(s), the last with: {result.error}",
                    episode=f"{slot.day} {slot.at}"))
        if self.gateway.ledger is not None:
            self.gateway.ledger.add("activations", result.row(slot))
        # which time it was for (two missed ones, or a try and a retry, read alike) and, at the
        # last try, that the day's probe is given up
        of = f" ({slot.at}, try {self.schedule.slots[slot].tries})" if slot is not None else ""
        if result.ok:
            if learn:
                health.record_success(upstream.name, by=" to its activation probe")   # ends a cooldown early
            log.info("ccswitch: activation probe for %s%s ok (%d ms)", upstream.name, of, result.latency_ms)
        else:
            log.warning("ccswitch: activation probe for %s%s failed: %s%s", upstream.name, of, result.error,
                        "; no try left for this time today" if slot is not None and given_up else "")

    @ccswitch_command("ccswitch.activate")
    def activate(self, name: str) -> str:
        """Send NAME's activation probe now; the result goes to the event log and the ledger."""
        upstream = known_upstream(self.gateway.rules, name)
        if upstream.auth == "client":
            raise exceptions.CommandError(f"{name} uses the client's credentials: nothing to activate with")
        if lacking := upstream.lacks():
            raise exceptions.CommandError(f"{lacking}: nothing to activate with")
        self._spawn(upstream, None)
        return f"activation probe for {name} sent; the result goes to the event log"


def seed_from_ledger(schedule: Schedule, rules: Rules, now: datetime) -> list[tuple[Slot, int]]:
    """After a restart, each slot as the ledger left it: done, given up, or retried on; the
    slots whose tries left were past the grace period (`history.restore`)."""
    target = rules.usage_db
    if not exists(target):
        return []
    since = (now - timedelta(days=2)).astimezone(UTC).isoformat()
    try:
        with open_reader(target, timeout=1) as reader:
            if "slot" not in reader.columns("activations"):   # none yet, or rows of no slot: nothing to go by
                return []
            rows = list(reader.execute(f"SELECT {as_text('upstream')}, slot, ok, {as_text('error')}, "
                                       f"{as_text('ts')} FROM activations "
                                       "WHERE slot IS NOT NULL AND ts >= ? ORDER BY ts, id", (since,)))
    except LedgerReadError as exc:
        log.warning("ccswitch: could not read past activations: %s", exc)
        return []
    return restore(schedule, [PastProbe(name, slot, bool(ok), error, datetime.fromisoformat(ts))
                       for name, slot, ok, error, ts in rows], rules.activation, now)
