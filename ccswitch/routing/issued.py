"""Which upstream issued a stored Responses answer: a request that continues one
(`previous_response_id`) can only be served there — another upstream, or another account of the
same API, answers `previous_response_not_found`.  Bounded: the oldest ids are forgotten first;
one forgotten (or issued before a restart, or to an instance sharing no state with this one) is
routed as any request.  Instances sharing a state tell each other every issuer (routing.changes),
so a follow-up a load balancer sends to another instance still reaches the issuer; the bound is
then the fleet's newest, by when each answer was issued (not by when this instance heard of it:
a catch-up bringing in a day of others' ids must not push out this instance's own last ones)."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from ccswitch.routing.changes import Feed, IssueChange, notify

#: ids remembered (about 250 bytes each): a busy day's worth of stored responses
CAPACITY = 100_000
#: how long other instances can learn an issuer from the shared store (one that starts, or comes
#: back from an outage, after that has to do without it)
SHARED_FOR = 86_400.0


class IssuedResponses:
    def __init__(self, capacity: int = CAPACITY, wall: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self.wall = wall             # epoch seconds: what other instances are told
        self.on_change: Feed | None = None   # the shared state's hook (None: this instance alone)
        self._issuer: dict[str, tuple[str, float]] = {}    # id -> (upstream, issued at)
        self._by_age: list[tuple[float, str]] = []         # (issued at, id), oldest first; stale ones skipped

    def record(self, response_id: str, upstream: str) -> None:
        at = self.wall()
        self._keep(response_id, upstream, at)
        if self.on_change is not None:
            notify(self.on_change, IssueChange(response_id, upstream, at))

    def issuer(self, response_id: str) -> str | None:
        found = self._issuer.get(response_id)
        return None if found is None else found[0]

    def __len__(self) -> int:
        return len(self._issuer)

    def forget(self, upstream: str) -> None:
        """A reload gave `upstream`'s name another account: what it issued is the old account's, and
        a request continuing one is routed as any (its entries by age are skipped as stale)."""
        self._issuer = {rid: held for rid, held in self._issuer.items() if held[0] != upstream}

    def _keep(self, response_id: str, upstream: str, at: float) -> None:
        self._issuer[response_id] = (upstream, at)
        heapq.heappush(self._by_age, (at, response_id))
        while len(self._issuer) > self.capacity:
            oldest_at, oldest = heapq.heappop(self._by_age)
            held = self._issuer.get(oldest)
            if held is not None and held[1] == oldest_at:
                del self._issuer[oldest]
        if len(self._by_age) > 2 * self.capacity:      # ids issued again left their old entries
            self._by_age = [(at, rid) for rid, (_, at) in self._issuer.items()]
            heapq.heapify(self._by_age)

    # ------------------------------------------------------------------ shared with other instances

    def apply(self, change: IssueChange) -> None:
        """Another instance's issuer."""
        self._keep(change.response_id, change.upstream, change.at)

    def shared(self, response_id: str) -> IssueChange | None:
        found = self._issuer.get(response_id)
        return None if found is None else IssueChange(response_id, *found)

    def view(self) -> list[IssueChange]:
        """The issuers other instances could still learn from the shared store."""
        since = self.wall() - SHARED_FOR
        return [IssueChange(response_id, upstream, at)
                for response_id, (upstream, at) in self._issuer.items() if at > since]
