"""Recoveries told once they last, so that an upstream going in and out of cooldown is one
outage to a person, not a storm of webhooks.

An upstream that fails some requests and serves others (and a route's last upstream, tried in
its cooldown all the same) can recover and cool down again several times a second.  A recovery
is held for a while: a cooldown of the same upstream before it is told takes it back, and is not
told either (as far as anyone was told, the outage goes on); a recovery that lasts is told
then, saying how many short cooldowns were left untold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from ccswitch.routing.events import Event


class Settling:
    """Holds each upstream's latest `recovered` for `seconds()` before handing it to `tell`."""

    def __init__(self, seconds: Callable[[], float], tell: Callable[[Event], None]) -> None:
        self.seconds = seconds
        self._tell = tell
        self._held: dict[str, tuple[Event, asyncio.TimerHandle]] = {}
        self._untold: dict[str, int] = {}    # cooldowns taken back since the last recovery told

    def takes(self, event: Event) -> bool:
        """Whether `event` is held or absorbed here (not to be told now)."""
        name = event.upstream
        if name is None:
            return False
        if event.kind == "cooldown" and name in self._held:
            self._held.pop(name)[1].cancel()
            self._untold[name] = self._untold.get(name, 0) + 1
            return True
        seconds = self.seconds()
        if event.kind != "recovered" or seconds <= 0:
            return False
        if name in self._held:              # not after a cooldown of ours: a recovery told again
            self._held.pop(name)[1].cancel()
        handle = asyncio.get_running_loop().call_later(seconds, self._release, name)
        self._held[name] = (event, handle)
        return True

    def flush(self) -> None:
        """Tell every held recovery now (the proxy stops)."""
        for name in list(self._held):
            self._held[name][1].cancel()
            self._release(name)

    def _release(self, name: str) -> None:
        event, _ = self._held.pop(name)
        untold = self._untold.pop(name, 0)
        if untold:
            event = replace(event, reason=f"{event.reason} ({untold} shorter cooldown{'s' if untold > 1 else ''} "
                                          "in between not told)")
        self._tell(event)
