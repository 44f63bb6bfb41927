"""What requests cost, for budgets: one finished request's row, and the current month's spend
as the ledger holds it (read once at start-up; afterwards spend is counted as rows are written)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ccswitch.config.models import Rules
from ccswitch.ledger import schema
from ccswitch.report.data import Pricer
from ccswitch.report.totals import Totals

log = logging.getLogger("ccswitch")


def row_cost(pricer: Pricer, row: Mapping) -> float | None:
    """USD of one `requests` row at the report's prices × its upstream's multiplier; None when
    its model has no known price (budgets count it as 0)."""
    t = Totals(1, row.get("input_tokens") or 0, row.get("output_tokens") or 0,
               row.get("cache_creation_tokens") or 0, row.get("cache_creation_1h_tokens") or 0,
               row.get("cache_read_tokens") or 0)
    if not t.tokens:
        return 0.0
    return pricer.cost(row.get("upstream_model") or row.get("model"), row.get("upstream"), t)


@dataclass
class LedgerSpend:
    rows: list[tuple[datetime, str | None, str | None, float]] = field(default_factory=list)  # ts, upstream, client, usd
    unpriced: set[str] = field(default_factory=set)     # models with tokens and no known price


_COLUMNS = ("ts", "upstream", "client", "model", "upstream_model", "input_tokens", "output_tokens",
            "cache_creation_tokens", "cache_creation_1h_tokens", "cache_read_tokens")


def ledger_spend(path: Path, rules: Rules, since: datetime) -> LedgerSpend:
    """Every priced request since `since` (aware) in the ledger at `path`; nothing if it has no file yet."""
    out = LedgerSpend()
    if not path.exists():
        return out
    pricer = Pricer(rules)
    conn = schema.connect(str(path), readonly=True)
    try:
        have = schema.columns(conn, "requests")
        picked = ", ".join(c if c in have else "NULL" for c in _COLUMNS)
        cursor = conn.execute(f"SELECT {picked} FROM requests WHERE ts >= ? AND upstream IS NOT NULL",
                              (since.astimezone(UTC).isoformat(timespec="milliseconds"),))
        for values in cursor:
            row = dict(zip(_COLUMNS, values, strict=True))
            usd = row_cost(pricer, row)
            if usd is None:
                out.unpriced.add(row["upstream_model"] or row["model"] or "(no model)")
                continue
            out.rows.append((datetime.fromisoformat(row["ts"]), row["upstream"], row["client"], usd))
    except sqlite3.Error as exc:
        log.error("ccswitch: cannot read the spend so far from %s: %s (budgets start from 0)", path, exc)
    finally:
        conn.close()
    return out
