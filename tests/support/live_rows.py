"""Finished requests as ledger rows, for the live page's tests (unit, addon and browser)."""

from __future__ import annotations

from datetime import UTC, datetime

from ccswitch.dial.job import Attempt
from ccswitch.ledger.rows import attempt_rows, request_row
from ccswitch.report.spend import RowPrices
from ccswitch.wire.usage import Usage
from tests.support.helpers import CLIENT_KEY, make_job, rules_for

TZ = "Europe/Berlin"
# 2026-12-02 10:00 in Berlin
NOON_ISH = datetime(2026, 12, 2, 9, 0, tzinfo=UTC).timestamp()


def rules(extra: str = ""):
    return rules_for(("a", "anthropic", "http://127.0.0.1:9"), ("b", "anthropic", "http://127.0.0.1:9"),
                     extra=f"timezone: {TZ}\nclient_keys: ['{CLIENT_KEY}']\n" + extra)


def finished(rules_, *attempts: Attempt, model="claude-sonnet-4-5", upstream_model=None, at=None,
             path="/v1/messages", latency=1500, ttfb=300):
    """A job as the dialer leaves it: attempts made, the last one answered the client."""
    job = make_job(rules_, path=path, body={"model": model, "max_tokens": 5, "stream": True, "messages": []})
    job.attempts = list(attempts)
    last = attempts[-1] if attempts else None
    job.upstream = last.upstream if last else None
    job.upstream_model = upstream_model or model
    job.status = last.status if last else None
    job.error = last.error if last else None
    job.latency_ms, job.ttfb_ms = latency, ttfb
    if at is not None:
        job.started_at = at
    return job


def note(board, rules_, job):
    """As the gateway counts a finished request: priced once, at the rules it ran under."""
    row = request_row(job)
    board.note(row, attempt_rows(job), RowPrices()(row, rules_))


USAGE = Usage(input_tokens=1000, output_tokens=200, cache_creation_tokens=3000, cache_creation_1h_tokens=0,
              cache_read_tokens=50_000, reasoning_tokens=40)
