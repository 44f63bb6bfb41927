"""An upstream going in and out of cooldown is one outage to a person, not a storm of webhooks.

An upstream that fails some requests and serves others (and a route's last upstream, tried in
its cooldown all the same) can recover and cool down again several times a second.  A first
recovery is told at once.  Should the upstream cool down again within `seconds` of it, it is
flapping: that cooldown is told, and its next recovery is held until it has lasted `seconds`.
A cooldown before then takes the held recovery back and is not told either (as far as anyone
was told, the outage goes on); the recovery that lasts is told, saying how many short cooldowns
went untold.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from ccswitch.routing.events import Event


class Settling:
    """Tells `tell` each upstream's cooldowns and recoveries, damped as above."""

    def __init__(self, seconds: Callable[[], float], tell: Callable[[Event], None],
                 clock: Callable[[], float] = time.monotonic,
                 cooling: Callable[[str], bool] = lambda name: False,
                 absorbed: Callable[[Event], None] = lambda event: None) -> None:
        """`cooling(name)`: whether the upstream is in a cooldown now (another instance's, with
        a shared state, comes without an event); `absorbed(event)`: a cooldown taken back (with a
        shared state, another instance may have told the recovery held here)."""
        self.seconds = seconds
        self._tell = tell
        self._absorbed = absorbed
        self._clock = clock
        self._cooling = cooling
        self._closed = False
        self._held: dict[str, tuple[Event, asyncio.TimerHandle]] = {}
        self._recovered_at: dict[str, float] = {}   # when each upstream's last told recovery was
        self._flapping: set[str] = set()            # back in cooldown soon after a told recovery
        self._untold: dict[str, int] = {}           # cooldowns taken back since the last told recovery

    def takes(self, event: Event) -> bool:
        """Whether `event` is held or absorbed here (not to be told now)."""
        name = event.upstream
        if name is None or event.kind not in ("cooldown", "recovered") or self._closed:
            return False
        seconds = self.seconds()
        if event.kind == "cooldown":
            if name in self._held:
                self._held.pop(name)[1].cancel()
                self._untold[name] = self._untold.get(name, 0) + 1
                self._absorbed(event)
                return True
            told = self._recovered_at.get(name)
            if seconds > 0 and told is not None and self._clock() - told < seconds:
                self._flapping.add(name)
            return False
        if name in self._held:              # a recovery told again (by a probe and a request)
            self._held.pop(name)[1].cancel()
        elif name not in self._flapping or seconds <= 0:
            self._flapping.discard(name)
            self._recovered_at[name] = self._clock()
            return False
        handle = asyncio.get_running_loop().call_later(seconds, self._release, name)
        self._held[name] = (event, handle)
        return True

    def flush(self) -> None:
        """Tell every held recovery now, and each one from now on at once (the proxy stops)."""
        self._closed = True
        for name in list(self._held):
            self._held[name][1].cancel()
            self._release(name)

    def _release(self, name: str) -> None:
        event, _ = self._held.pop(name)
        if self._cooling(name):     # back in a cooldown no event told of here (also at shutdown)
            self._untold[name] = self._untold.get(name, 0) + 1
            return
        self._flapping.discard(name)
        self._recovered_at[name] = self._clock()
        untold = self._untold.pop(name, 0)
        if untold:
            event = replace(event, reason=f"{event.reason} ({untold} shorter cooldown{'s' if untold > 1 else ''} "
                                          "in between not told)")
        self._tell(event)
