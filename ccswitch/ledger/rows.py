"""Ledger rows from a finished job (or from an answer ccswitch gave itself)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ccswitch.config.models import Rules
from ccswitch.dial.job import Job
from ccswitch.wire.redact import scrub_text
from ccswitch.wire.usage import Usage


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _stored(error: str | None, job: Job) -> str | None:
    """An error as stored: without the key text of any upstream or client in the rules (an answer
    was scrubbed of its own upstream's keys and the client's; its text may quote another's)."""
    if error is None:
        return None
    return scrub_text(error, job.rules.secret_texts(), "surrogatepass")


def request_row(job: Job) -> dict[str, Any]:
    req = job.request
    final = job.attempts[-1] if job.attempts and job.upstream else None
    usage = (final.usage if final else None) or Usage()
    protocol = next((u.protocol for u in job.candidates if u.name == job.upstream), None)
    return {
        "request_id": job.token, "ts": _iso(job.started_at), "route": req.route, "endpoint": req.endpoint,
        "upstream": job.upstream, "upstream_protocol": protocol, "model": req.model,
        "upstream_model": job.upstream_model if job.upstream else None, "status": job.status,
        "stream": int(req.stream), "attempts": len(job.attempts), "latency_ms": job.latency_ms,
        "ttfb_ms": job.ttfb_ms, "error": _stored(job.error, job), "session": job.session, "affinity": job.affinity,
        "client": job.client,
        **usage.columns(),
    }


def attempt_rows(job: Job) -> list[dict[str, Any]]:
    rows = []
    for n, attempt in enumerate(job.attempts, 1):
        usage = (attempt.usage or Usage()).columns()
        usage.pop("cache_creation_1h_tokens")
        rows.append({"request_id": job.token, "ts": _iso(job.started_at), "n": n, "upstream": attempt.upstream,
                     "status": attempt.status, "error": _stored(attempt.error, job), "ms": attempt.ms, **usage,
                     "said": _stored(attempt.said, job)})     # the live page's, not a ledger column
    return rows


def own_answer_row(*, request_id: str, started_at: datetime, route: str, endpoint: str, model: str | None,
                   stream: bool, status: int, error: str, latency_ms: int, session: str | None = None,
                   affinity: str | None = None, client: str | None = None) -> dict[str, Any]:
    """A request ccswitch answered itself: no upstream, no attempts.  No upstream served it, so
    its session's binding did not change: ``affinity`` stays NULL unless the caller knows better."""
    return {"request_id": request_id, "ts": _iso(started_at), "route": route, "endpoint": endpoint,
            "upstream": None, "model": model, "status": status, "stream": int(stream), "attempts": 0,
            "latency_ms": latency_ms, "ttfb_ms": latency_ms, "error": error, "session": session,
            "affinity": affinity if session is not None else None, "client": client, **Usage().columns()}


#: a row's text a client chose (errors are scrubbed where they are made: `_stored`, and a
#: refusal's message before it is answered)
_CLIENT_TEXT = ("model", "upstream_model", "session")


def without_keys(row: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """`row` with any key text of the rules scrubbed from the fields a client's text reaches:
    no key is ever stored, whatever a client sends as its model or session."""
    for name in _CLIENT_TEXT:
        if isinstance(text := row.get(name), str):
            row[name] = rules.scrub(text)
    return row
