"""How each upstream fared on its attempts, failed ones included.

The usage tables credit a request to the upstream whose answer the client got, so an upstream
that failed and was rescued by the next one shows nothing there; the ``attempts`` table has
every try. A try the client cut (it left, or the flow was killed in mitmproxy) is no failure of
the upstream's and is counted apart. ``count_tokens`` requests are left out, as from every figure
(a relay that has no such endpoint answers each with a 404, and the next upstream is asked).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, tzinfo

from ccswitch.dial.job import CLIENT_CLOSED, KILLED
from ccswitch.ledger.reading import LedgerReader, as_text
from ccswitch.report import timeline
from ccswitch.report.ledger_rows import minute_sql, read_rows, row_moment

# through the requests of the period (their time is indexed, the attempts' is not: a year's ledger
# is not read whole), grouped by minute: a day's local bounds need no finer time
_ATTEMPTS_SQL = f"""
SELECT {minute_sql("a.ts")}, {as_text("a.upstream")}, {as_text("a.error")}, count(*)
FROM requests r JOIN attempts a ON a.request_id = r.request_id
WHERE r.ts >= ? AND r.ts < ? AND r.endpoint != 'count_tokens'
GROUP BY 1, 2, 3
"""
CUT_BY_CLIENT = (CLIENT_CLOSED, KILLED)
KINDS_SHOWN = 2


def failure_kind(error: str) -> str:
    """An attempt's error without its detail, so alike failures count together: `HTTP 429`,
    `connection refused`, `stream error: overloaded_error` (the upstream's own words dropped)."""
    if error.startswith("stream error: "):
        return ": ".join(error.split(": ")[:2])
    return error.split(": ", 1)[0]


@dataclass
class UpstreamAttempts:
    upstream: str
    attempts: int = 0
    failed: int = 0
    cut_by_client: int = 0
    kinds: Counter[str] = field(default_factory=Counter)    # failure kind -> attempts

    @property
    def failed_share(self) -> float:
        return self.failed / self.attempts if self.attempts else 0.0

    def most_common(self, shown: int = KINDS_SHOWN) -> str:
        """'HTTP 429 x12, connection refused x3 (+2 more)'."""
        ranked = sorted(self.kinds.items(), key=lambda kv: (-kv[1], kv[0]))
        text = ", ".join(f"{kind} x{n}" for kind, n in ranked[:shown])
        return text + (f" (+{len(ranked) - shown} more)" if len(ranked) > shown else "")

    def to_dict(self) -> dict:
        return {"attempts": self.attempts, "failed": self.failed, "cut_by_client": self.cut_by_client,
                "failures": dict(sorted(self.kinds.items(), key=lambda kv: (-kv[1], kv[0])))}


def read_attempts(reader: LedgerReader, tables: set[str], since: date, until: date,
                  tz: tzinfo | None) -> list[UpstreamAttempts]:
    """Each upstream's attempts in the period's local days, most attempts first."""
    if not {"attempts", "requests"} <= tables:
        return []
    out: dict[str, UpstreamAttempts] = {}
    for minute, upstream, error, n in read_rows(reader, _ATTEMPTS_SQL, since, until):
        moment = row_moment(minute, [])     # a time that cannot be read is in the requests' note
        if moment is None or not since <= timeline.local(moment, tz).date() <= until:
            continue
        up = out.get(upstream) or out.setdefault(upstream, UpstreamAttempts(str(upstream)))
        up.attempts += n
        if error in CUT_BY_CLIENT:
            up.cut_by_client += n
        elif error is not None:
            up.failed += n
            up.kinds[failure_kind(str(error))] += n
    return sorted(out.values(), key=lambda a: (-a.attempts, a.upstream))


COLUMNS = ("Upstream", "Attempts", "Failed", "Failed %", "Cut by client", "Most common failures")


def rows(attempts: list[UpstreamAttempts]) -> list[list[str]]:
    return [[a.upstream, str(a.attempts), str(a.failed), f"{a.failed_share * 100:.1f}%", str(a.cut_by_client),
             a.most_common()] for a in attempts]


def worth_showing(attempts: list[UpstreamAttempts]) -> bool:
    """The text report shows the table when some attempt failed: otherwise it repeats the usage."""
    return any(a.failed for a in attempts)
