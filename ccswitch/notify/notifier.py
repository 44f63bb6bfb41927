"""Events in, webhook POSTs out, and nothing in between that a request waits for.

`Notifier.offer` is an event-bus listener: it runs inside `Events.emit` on the request path,
so it only filters (does any hook want this kind?), de-duplicates (is this occurrence news?)
and queues.  Each hook has its own lane — a bounded queue and one worker task — so a hook that
hangs or fails delays only its own notifications; a full lane drops its oldest event (the
newest say where things stand now)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable

from ccswitch.config.models import NotifyHook, Rules
from ccswitch.notify.dedupe import Deduper
from ccswitch.notify.payload import clean
from ccswitch.notify.settle import Settling
from ccswitch.notify.webhook import WebhookPoster, hook_host
from ccswitch.routing.events import Event

log = logging.getLogger("ccswitch.notify")

Deliver = Callable[[NotifyHook, Event], Awaitable[object]]
#: the shared state's `claim`: whether this instance tells an occurrence (`Event.claim`) that
#: holds until a time (epoch seconds)
Claim = Callable[[str, float], Awaitable[bool]]
#: the shared state's `claim_state`: whether this instance tells that a claim's subject is now
#: in a state (`Event.state`) for an episode; the last argument: a cooldown the damper took back
ClaimState = Callable[[str, str, str, bool], Awaitable[bool]]
#: how long an occurrence with no known end stays claimed
UNKNOWN_END = 3600.0
UNSENT_NAMED = 10     # a stop names this many undelivered notifications, then counts the rest


class Lane:
    """One hook's queue and its worker: events are posted one after another, in order."""

    def __init__(self, hook: NotifyHook, deliver: Deliver, capacity: int) -> None:
        self.hook = hook
        self.capacity = capacity
        self.queue: deque[Event] = deque()
        self.busy = False
        self.retired = False          # its hook left the rules: the lane ends once it ran empty
        self.dropped = 0              # events dropped since the lane last ran empty
        self.current: Event | None = None   # the event being posted
        self._deliver = deliver
        self._wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"ccswitch-notify-{hook_host(hook)}")

    @property
    def idle(self) -> bool:
        return not self.queue and not self.busy

    def retire(self) -> None:
        self.retired = True
        self._wake.set()

    def push(self, event: Event) -> None:
        if len(self.queue) >= self.capacity:
            self.queue.popleft()
            self.dropped += 1
            if self.dropped == 1:     # one line per backlog, not one per dropped event
                log.warning("ccswitch: notifications to %s are backed up (%d queued): dropping the "
                            "oldest until it catches up", hook_host(self.hook), self.capacity)
        self.queue.append(event)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            while not self.queue:
                if self.retired:
                    return
                if self.dropped:
                    log.warning("ccswitch: notifications to %s caught up; %d were dropped",
                                hook_host(self.hook), self.dropped)
                    self.dropped = 0
                self._wake.clear()
                await self._wake.wait()
            event = self.current = self.queue.popleft()
            self.busy = True
            try:
                await self._deliver(self.hook, event)
            except Exception:   # a bug here must not end the lane: later events still go out
                log.exception("ccswitch: posting a %s notification to %s failed", event.kind, hook_host(self.hook))
            finally:
                self.busy, self.current = False, None

    def unsent(self) -> list[Event]:
        """The events not (yet) delivered: the one being posted, then those queued."""
        return [*([self.current] if self.current is not None else []), *self.queue]


class Notifier:
    """Posts the events the rules' `notify` hooks ask for, once per occurrence."""

    def __init__(self, rules: Callable[[], Rules], poster: WebhookPoster, *, capacity: int = 100,
                 dedupe: Deduper | None = None, claim: Claim | None = None,
                 claim_state: ClaimState | None = None, settle: Callable[[], float] = lambda: 0.0,
                 cooling: Callable[[str], bool] = lambda name: False,
                 shared: Callable[[], bool] = lambda: False) -> None:
        """`settle()`: seconds that tell a flapping upstream; `cooling(name)`: whether it is in
        a cooldown now (see `Settling`); `shared()`: whether instances share what they told."""
        self._rules = rules
        self._shared = shared
        self.settling = Settling(settle, self._accept, cooling=cooling, absorbed=self._absorbed)
        self._claim = claim
        self._claim_state = claim_state
        self._claiming: set[asyncio.Task] = set()
        self._last_claim: dict[str, asyncio.Task] = {}    # per claim name: its claims in order
        self.poster = poster
        self.capacity = capacity
        self.dedupe = Deduper() if dedupe is None else dedupe
        self.lanes: dict[NotifyHook, Lane] = {}
        self._retiring: dict[asyncio.Task, Lane] = {}    # lanes of hooks a reload removed, still sending
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._hooks: tuple[NotifyHook, ...] = ()

    def start(self) -> None:
        """Bind to the running event loop: lanes run there, and events emitted on another thread go there."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def offer(self, event: Event) -> None:
        """The bus listener: cheap, never blocks, never raises into the emitter."""
        if self._loop is None or self._loop.is_closed():
            return
        if threading.get_ident() != self._thread:   # e.g. a budget crossed as the ledger thread writes
            self._loop.call_soon_threadsafe(self.offer, event)
            return
        if not self.settling.takes(event):
            self._accept(event)

    def _absorbed(self, event: Event) -> None:
        """A cooldown the damper took back.  With a shared state another instance may have told
        the recovery held here: its claim of the state decides (told only if the hooks' last word
        is not a cooldown already)."""
        if self._shared() and event.state:
            self._accept(event, absorbed=True)

    def _accept(self, event: Event, absorbed: bool = False) -> None:
        """Filtered, de-duplicated, cleaned, claimed where shared: then queued for its hooks."""
        if self._loop is None or self._loop.is_closed():
            return
        rules = self._rules()
        if rules.notify is not self._hooks:
            self._forget_removed(rules.notify)
        hooks = self._hooks_for(event, rules)
        if not hooks or not self.dedupe.first(event):
            return
        event = clean(event, rules.secret_texts())   # the keys in force when it happened
        if event.claim and (self._claim_state if event.state else self._claim) is not None:
            # one claim of a name after the other, told in that order (a cooldown, then the
            # recovery of a request that was under way, must not reach Redis or the hooks swapped)
            before = self._last_claim.get(event.claim)
            task = self._loop.create_task(self._claimed(event, absorbed, before))
            self._claiming.add(task)
            self._last_claim[event.claim] = task
            task.add_done_callback(lambda done, name=event.claim: self._claimed_done(name, done))
            return
        self._push(event, hooks)

    @staticmethod
    def _hooks_for(event: Event, rules: Rules) -> list[NotifyHook]:
        return [hook for hook in rules.notify if event.kind in hook.events]

    def _claimed_done(self, name: str, task: asyncio.Task) -> None:
        self._claiming.discard(task)
        if self._last_claim.get(name) is task:
            del self._last_claim[name]

    async def _claimed(self, event: Event, absorbed: bool, before: asyncio.Task | None) -> None:
        """Told only when this instance claims the occurrence first (or the state, changing it),
        after the claim of the same name before it."""
        if before is not None:
            await asyncio.wait([before])
        try:
            if event.state:
                told_here = await self._claim_state(event.claim, event.state, event.episode, absorbed)
            else:   # until the condition ends, when known
                until = event.until.timestamp() if event.until is not None else time.time() + UNKNOWN_END
                told_here = await self._claim(event.claim, until)
        except Exception:   # a bug in the claim: telling twice beats never telling
            log.exception("ccswitch: claiming the %s notification failed; it is sent from here", event.kind)
            told_here = True
        if told_here:    # the hooks in force now: a reload may have come during the claim
            self._push(event, self._hooks_for(event, self._rules()))

    def _push(self, event: Event, hooks: list[NotifyHook]) -> None:
        for hook in hooks:
            lane = self.lanes.get(hook)
            if lane is None:
                lane = self.lanes[hook] = Lane(hook, self._deliver, self.capacity)
            lane.push(event)

    async def _deliver(self, hook: NotifyHook, event: Event) -> None:
        await self.poster.deliver(hook, event, self._rules().secret_texts())

    def _forget_removed(self, hooks: tuple[NotifyHook, ...]) -> None:
        """After a reload: a hook no longer configured keeps its lane only until it ran empty."""
        self._hooks = hooks
        for hook, lane in list(self.lanes.items()):
            if hook not in hooks:
                del self.lanes[hook]
                lane.retire()
                self._retiring[lane.task] = lane
                lane.task.add_done_callback(lambda task: self._retiring.pop(task, None))

    async def aclose(self, grace: float = 2.0) -> None:
        """Tell held recoveries, give queued notifications `grace` seconds to go out, then stop every lane."""
        self.settling.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self._claiming or self._retiring or any(not lane.idle for lane in self.lanes.values()):
                    await asyncio.sleep(0.05)
        for lane in [*self.lanes.values(), *self._retiring.values()]:   # a stop must not lose them without a word
            if unsent := lane.unsent():
                named = [event.kind + (f" ({event.upstream})" if event.upstream else "") for event in unsent]
                more = f", and {len(named) - UNSENT_NAMED} more" if len(named) > UNSENT_NAMED else ""
                log.warning("ccswitch: stopping with %d notification%s to %s not delivered: %s%s", len(unsent),
                            "s" * (len(unsent) != 1), hook_host(lane.hook), ", ".join(named[:UNSENT_NAMED]), more)
        if self._claiming:
            log.warning("ccswitch: stopping with %d notification%s not told: the instances' claim on them "
                        "(Redis) had not answered", len(self._claiming), "s" * (len(self._claiming) != 1))
        tasks = [*self._claiming, *self._retiring, *(lane.task for lane in self.lanes.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.lanes.clear()
        self._loop = None
