"""What the request hook has learnt of a request so far, for the ledger row of an answer
ccswitch gives itself (a refusal, a 503 before start, its own 500)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ccswitch.clock import utc_now
from ccswitch.ledger.rows import own_answer_row
from ccswitch.routing.admission import streamed
from ccswitch.routing.classify import RouteMatch


@dataclass
class Known:
    started: datetime
    body: dict | None = None
    session: str | None = None
    client: str | None = None

    def own_answer_row(self, request_id: str, match: RouteMatch, status: int, message: str) -> dict:
        body = self.body or {}
        model = body.get("model")
        return own_answer_row(
            request_id=request_id, started_at=self.started, route=match.route, endpoint=match.endpoint,
            model=model if isinstance(model, str) else None, status=status,
            stream=streamed(body, match.endpoint),       # as its routed twin's
            error=message[:500], latency_ms=int((utc_now() - self.started).total_seconds() * 1000),
            session=self.session, client=self.client)
