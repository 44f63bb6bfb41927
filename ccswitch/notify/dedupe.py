"""Which events are news: the first of each occurrence.  Emitters say what makes two events the
same occurrence (`Event.episode`: one cooldown, one full window, one budget period); a storm
of requests hitting the same condition then sends one notification, not hundreds."""

from __future__ import annotations

from collections import OrderedDict

from ccswitch.routing.events import Event


class Deduper:
    """Remembers the last `capacity` occurrences seen (oldest forgotten first): memory stays
    bounded however long ccswitch runs; a forgotten occurrence is long over by then."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._seen: OrderedDict[tuple, None] = OrderedDict()

    @staticmethod
    def key(event: Event) -> tuple:
        return event.kind, event.upstream, event.route, event.episode

    def first(self, event: Event) -> bool:
        """True the first time an occurrence is offered; False for every repeat."""
        key = self.key(event)
        if key in self._seen:
            self._seen.move_to_end(key)   # still happening: keep it longest
            return False
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)
