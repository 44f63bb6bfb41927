"""What happens to upstreams and routes that someone may want to hear about: a cooldown, a
recovery, a full window, a budget crossed, a route answered by ccswitch itself, failed
activations.  Emitting is synchronous and cheap (the request path emits); listeners such as
the webhook notifier queue what they need and do their work elsewhere."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

log = logging.getLogger("ccswitch.events")


@dataclass(frozen=True)
class Event:
    kind: str                        # cooldown | recovered | full | budget | exhausted | activation_failed
    upstream: str | None             # None for a client key's budget or a route-wide event
    reason: str                      # a sentence for people; never key text
    route: str | None = None
    until: datetime | None = None    # when the condition ends, when known (UTC)
    #: what makes two events the same occurrence (e.g. one cooldown, one window, one budget period):
    #: listeners de-duplicate on (kind, upstream, episode)
    episode: str = ""
    #: the occurrence's name across instances ("" when it is this instance's own news): with a
    #: shared state, only the instance that claims it first tells it, so two instances that see
    #: it at the same moment, before either has heard of the other's, do not both announce it
    claim: str = ""
    #: a claim of a state instead (an upstream's `cooldown` or `recovered`): told by the instance
    #: that moves the claim's last told state to this one, however soon after the last change
    state: str = ""
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    client: str | None = None        # the client key a budget event is about (for the log; its reason names it)


#: ends within one quarter hour are one occurrence to tell: a per-minute bucket refilled again
#: and again (`x-ratelimit-reset-tokens: 1.5s`, a new reset on every answer) is news once a
#: quarter hour, not once an answer
NEWS_GRID = 900.0


def news_slot(moment: float, grid: float = NEWS_GRID) -> str:
    """The end of the `grid`-second slot `moment` (epoch seconds) falls in, as an episode's text
    for an event whose end moves (UTC, to the minute)."""
    return f"{datetime.fromtimestamp(math.ceil(moment / grid) * grid, UTC):%Y-%m-%dT%H:%M}"


Listener = Callable[[Event], None]


class Events:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:   # a listener's bug must never fail the request that emitted
                log.exception("ccswitch: an event listener failed on %s", event.kind)
