"""Which upstream issued a stored Responses answer: a request that continues one
(`previous_response_id`) can only be served there — another upstream, or another account of the
same API, answers `previous_response_not_found`.  Bounded: the oldest ids are forgotten first;
one forgotten (or issued before a restart, or to another instance) is routed as any request."""

from __future__ import annotations

from collections import OrderedDict

#: ids remembered (about 150 bytes each): a busy day's worth of stored responses
CAPACITY = 100_000


class IssuedResponses:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._issuer: OrderedDict[str, str] = OrderedDict()

    def record(self, response_id: str, upstream: str) -> None:
        self._issuer[response_id] = upstream
        self._issuer.move_to_end(response_id)
        if len(self._issuer) > self.capacity:
            self._issuer.popitem(last=False)

    def issuer(self, response_id: str) -> str | None:
        return self._issuer.get(response_id)

    def __len__(self) -> int:
        return len(self._issuer)
