"""What requests cost, for budgets: one finished request's row, and the current month's spend
as the ledger holds it (read once at start-up; afterwards spend is counted as rows are written)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

from ccswitch.config.database_url import PostgresURL
from ccswitch.config.models import Rules
from ccswitch.ledger.reading import LedgerReadError, as_text, exists, open_reader
from ccswitch.report.ledger_rows import Pricer, in_proxy_form, row_moment
from ccswitch.report.ledger_values import count_or_zero
from ccswitch.report.totals import Totals

# in the order Totals takes them
_TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_creation_1h_tokens",
                  "cache_read_tokens")


def row_totals(row: Mapping) -> Totals:
    return Totals(1, *(count_or_zero(row.get(column)) for column in _TOKEN_COLUMNS))


def row_cost(pricer: Pricer, row: Mapping) -> float | None:
    """USD of one `requests` row at the report's prices × its upstream's multiplier; None when
    an upstream answered it with a model of no known price, with no tokens too: an unknown price
    is shown as unknown, never as $0 (budgets count it as 0). A row no upstream answered is $0."""
    return pricer.cost(row.get("upstream_model") or row.get("model"), row.get("upstream"), row_totals(row))


class RowPrices:
    """`row_cost` at the prices of the rules a request ran under, one Pricer per rules object
    (a reload's new rules price anew; its Pricer looks each model up once)."""

    def __init__(self) -> None:
        self._pricer: tuple[Rules, Pricer] | None = None

    def __call__(self, row: Mapping, rules: Rules) -> float | None:
        if self._pricer is None or self._pricer[0] is not rules:
            self._pricer = (rules, Pricer(rules))
        return row_cost(self._pricer[1], row)


Amount = tuple[datetime, str | None, str | None, float]     # ts, upstream, client, usd


@dataclass
class LedgerSpend:
    rows: list[Amount] = field(default_factory=list)
    unpriced: set[str] = field(default_factory=set)     # models with tokens and no known price
    error: str | None = None                            # why the ledger could not be read (nothing counted)
    unreadable: int = 0                                 # rows left out: their time cannot be read
    requests: int = 0                                   # priced requests read (rows may hold their sums)


class DaySums:
    """Amounts summed per upstream, client and local day (each sum at its day's first row's
    time): what budgets count from them is the same, and a month of a busy ledger is a few
    hundred sums in memory and additions on the proxy's loop instead of one per request."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._days: dict[tuple, list] = {}

    def add(self, ts: datetime, upstream: str | None, client: str | None, usd: float) -> None:
        key = (upstream, client, ts.astimezone(self.tz).date())
        if (held := self._days.get(key)) is None:
            self._days[key] = [ts, upstream, client, usd]
        else:
            held[3] += usd

    def rows(self) -> list[Amount]:
        return [(ts, upstream, client, usd) for ts, upstream, client, usd in self._days.values()]


def by_day(rows: list[Amount], tz: tzinfo) -> list[Amount]:
    sums = DaySums(tz)
    for row in rows:
        sums.add(*row)
    return sums.rows()


_COLUMNS = ("ts", "upstream", "client", "model", "upstream_model", "input_tokens", "output_tokens",
            "cache_creation_tokens", "cache_creation_1h_tokens", "cache_read_tokens")
_TEXT_COLUMNS = {"ts", "upstream", "client", "model", "upstream_model"}


def _picked(column: str, have: set[str]) -> str:
    """SQL for one of `_COLUMNS`: NULL where an older database lacks it; a name or time as text
    whatever another tool stored (`as_text`), or one row would cost every budget its month."""
    if column not in have:
        return "NULL"
    return as_text(column) if column in _TEXT_COLUMNS else column


def _spend_query(have: set[str], since: datetime, until: datetime | None) -> tuple[str, tuple[str, ...]]:
    """The query for the requests from `since` to before `until` and its bounds. The proxy's
    times (UTC, `+00:00`) are compared as text; a time written by hand in another form (`+09:00`,
    `Z`) may name an instant up to 14 hours from what its text says, so such rows are read a day
    further each side, for the caller to keep those whose instant is in the period."""
    picked = ", ".join(_picked(c, have) for c in _COLUMNS)
    first, wide_first = _text_time(since), _text_time(since - _HAND_WRITTEN_MARGIN)
    query = f"SELECT {picked} FROM requests WHERE upstream IS NOT NULL AND ts >= ? AND (ts >= ? OR {_NOT_UTC})"
    bounds: tuple[str, ...] = (wide_first, first)
    if until is not None:
        query += f" AND ts < ? AND (ts < ? OR {_NOT_UTC})"
        bounds += (_text_time(until + _HAND_WRITTEN_MARGIN), _text_time(until))
    return query, bounds


_HAND_WRITTEN_MARGIN = timedelta(days=1)            # past the furthest offset, 14 hours
_NOT_UTC = f"NOT {in_proxy_form('ts')}"


def _text_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def ledger_spend(target: Path | PostgresURL, rules: Rules, since: datetime, until: datetime | None = None, *,
                 timeout: float = 5.0, per_day: tzinfo | None = None) -> LedgerSpend:
    """Every priced request from `since` to before `until` (aware) in the ledger at `target` (a
    SQLite file, nothing if it has none yet, or a PostgreSQL URL); a database that cannot be read
    counts nothing, and says why in `error`.  `per_day`: summed per local day of that zone as
    read (`DaySums`), not a row per request."""
    out = LedgerSpend()
    sums = DaySums(per_day) if per_day is not None else None
    if not exists(target):
        return out
    pricer = Pricer(rules)
    unreadable: list[str] = []
    try:
        with open_reader(target, timeout=timeout) as reader:
            have = reader.columns("requests")
            if not have:                # a database no ccswitch has written to yet
                return out
            query, bounds = _spend_query(have, since, until)
            for values in reader.execute(query, bounds):
                row = dict(zip(_COLUMNS, values, strict=True))
                # a hand edit (`25:00`): one row must not keep the proxy from starting
                ts = row_moment(row["ts"], unreadable)
                if ts is None or ts < since or (until is not None and ts >= until):
                    continue
                usd = row_cost(pricer, row)
                if usd is None:
                    if row_totals(row).tokens:     # a refused request's model is nothing to warn of
                        out.unpriced.add(row["upstream_model"] or row["model"] or "(no model)")
                    continue
                out.requests += 1
                if sums is None:
                    out.rows.append((ts, row["upstream"], row["client"], usd))
                else:
                    sums.add(ts, row["upstream"], row["client"], usd)
            out.unreadable = len(unreadable)
            if sums is not None:
                out.rows = sums.rows()
    except LedgerReadError as exc:
        return LedgerSpend(error=str(exc))
    return out
