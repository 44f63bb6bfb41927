"""Reading the ledger for a report: the queries (token counts as the writer stores them, in
SQLite's or PostgreSQL's dialect), a row's time however it was written, and the prices of rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, tzinfo

from ccswitch.config.models import Rules
from ccswitch.ledger.reading import LedgerReader, as_text
from ccswitch.report import prices, timeline
from ccswitch.report.latency import Timing, Timings
from ccswitch.report.ledger_values import MAX_COUNT, ms_or_none
from ccswitch.report.totals import Totals, UsageRow


def _parse_utc(text: str) -> datetime:
    dt = datetime.fromisoformat(text.strip().replace(" ", "T").replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def row_moment(text: object, unreadable: list[str]) -> datetime | None:
    """A row's time, or None (kept in `unreadable`) when it is none: a database edited by hand
    may hold `25:00`, and one such row must not cost the whole report."""
    try:
        return _parse_utc(str(text))
    except ValueError:
        unreadable.append(str(text))
        return None


def in_proxy_form(column: str) -> str:
    """SQL: the time in `column` is in the form the proxy writes (UTC, `+00:00`), which sorts and
    cuts as text; another (a hand edit's `Z`, `+09:00`, none) is read as the instant it names."""
    return f"{column} LIKE '%+00:00'"


def minute_sql(column: str) -> str:
    """SQL for the text a row's time is grouped by: the proxy writes every time as UTC (`+00:00`),
    whose first 16 characters are its UTC minute; any other form (a hand edit: `Z`, `+09:00`, no
    offset) is kept whole, for `row_minute` to read as the instant it names, as each row's own
    time is read (cut to 16 characters, its offset was dropped: a `+09:00` row was counted on one
    day and its latency on another). Only the proxy's form is tested for, so its rows stay cheap."""
    return f"CASE WHEN {in_proxy_form(column)} THEN substr({column}, 1, 16) ELSE {column} END"


def row_minute(text: object, unreadable: list[str]) -> datetime | None:
    """The UTC minute of a group's `minute_sql` text, or None as `row_moment` says."""
    moment = row_moment(text, unreadable)
    if moment is None or not (moment.second or moment.microsecond):     # the proxy's rows: a minute already
        return moment
    return moment.replace(second=0, microsecond=0)


def _count(column: str) -> str:
    """SQL for a token column as `count_or_zero` reads one: a count below 0 or past `MAX_COUNT`,
    which only a hand edit leaves, counts as 0."""
    return f"CASE WHEN {column} >= 0 AND {column} <= {MAX_COUNT} THEN {column} ELSE 0 END"


def read_rows(reader: LedgerReader, sql: str, since: date, until: date, before: int = 1) -> Iterator[tuple]:
    # UTC ISO text sorts by time: widen by a day each side (time zones), filter local days later
    yield from reader.execute(sql, ((since - timedelta(days=before)).isoformat(),
                                    (until + timedelta(days=2)).isoformat()))


_REQUESTS_SQL = """
SELECT {minute} AS minute, {route}, {upstream}, {model}, NULLIF({upstream_model}, ''), {session}, {client},
       endpoint = 'count_tokens',
       CASE WHEN upstream IS NULL AND error IN ('client_closed', 'killed') THEN error END, count(*),
       sum({input}), sum({output}), sum({cache_write}),
       sum({cache_1h}), sum({cache_read}),
       sum({reasoning}), {failovers}, {errors},
       {moved}
FROM requests
WHERE ts >= ? AND ts < ?
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
ORDER BY 1
"""

# rows whose time is no `YYYY-MM-DDTHH:MM` text (a hand edit): no period's range of text holds them,
# so they are found apart, to be counted in the note on rows left out (as those in range that fail)
_SHAPELESS_TIME_SQL = """
SELECT ts FROM requests
WHERE NOT (ts >= ? AND ts < ?) AND (length(ts) < 16 OR substr(ts, 5, 1) <> '-' OR substr(ts, 8, 1) <> '-'
      OR substr(ts, 11, 1) NOT IN ('T', ' ') OR substr(ts, 14, 1) <> ':' OR NOT (substr(ts, 1, 1) BETWEEN '0' AND '9'))
   OR ts IS NULL
"""


def shapeless_times(reader: LedgerReader, since: date, until: date, before: int) -> list[str]:
    """The times of the rows outside the period's range of text whose text is not a time's
    (`not-a-time`, NULL): no period holds them (those in range that fail are `usage_rows`')."""
    return [str(ts) for (ts,) in read_rows(reader, _SHAPELESS_TIME_SQL, since, until, before)]


# successful answers only (see latency.py); a time in the range of text is text (every BLOB sorts after it)
_TIMINGS_SQL = f"""
SELECT ts, {as_text("upstream")}, latency_ms, ttfb_ms FROM requests
WHERE ts >= ? AND ts < ? AND endpoint != 'count_tokens' AND upstream IS NOT NULL AND error IS NULL
  AND coalesce(status, 0) BETWEEN 100 AND 399 AND latency_ms IS NOT NULL
"""


def _requests_sql(reader: LedgerReader) -> str:
    """The query for the columns this database has (a database older than session affinity,
    read-only so not migrated, reads as requests without a session) in the reader's dialect."""
    has = reader.columns("requests")
    return _REQUESTS_SQL.format(minute=minute_sql("ts"), route=as_text("route"), upstream=as_text("upstream"),
                                model=as_text("model"), upstream_model=as_text("upstream_model"),
                                session=as_text("session") if "session" in has else "NULL",
                                client=as_text("client") if "client" in has else "NULL",
                                input=_count("input_tokens"), output=_count("output_tokens"),
                                cache_write=_count("cache_creation_tokens"), cache_read=_count("cache_read_tokens"),
                                reasoning=_count("reasoning_tokens"),
                                cache_1h=reader.least(_count("cache_creation_1h_tokens"),
                                                      _count("cache_creation_tokens")),
                                failovers=reader.count_if("attempts > 1"),
                                errors=reader.count_if("error IS NOT NULL OR coalesce(status, 0) >= 400"),
                                moved=reader.count_if("affinity = 'moved'") if "affinity" in has else "0")

ACTIVATIONS_SQL = f"""
SELECT ts, {as_text("upstream")}, ok, status, {as_text("error")} FROM activations
WHERE ts >= ? AND ts < ? ORDER BY ts
"""


class Pricer:
    """Prices rows: one price look-up per billed model, each upstream's multiplier."""

    def __init__(self, rules: Rules):
        self.multipliers = {up.name: up.price_multiplier for up in rules.upstreams}
        self.overrides = rules.prices
        self._prices: dict[str | None, prices.Price | None] = {}

    def cost(self, model: str | None, upstream: str | None, t: Totals) -> float | None:
        if upstream is None and not t.tokens:
            return 0.0      # answered by no upstream (ccswitch refused it, or every attempt failed): nothing billed
        if model not in self._prices:
            self._prices[model] = prices.price_for(model, self.overrides)
        price = self._prices[model]
        if price is None:
            return None
        return prices.cost_at(price, t.input, t.output, t.cache_write, t.cache_write_1h, t.cache_read,
                              self.multipliers.get(upstream or "", 1.0))


def usage_rows(reader: LedgerReader, since: date, until: date, tz: tzinfo | None, pricer: Pricer,
                before: int, unreadable: list[str]) -> Iterator[tuple[UsageRow, bool]]:
    """Priced rows (by the text of their time: see `_blocks`), each with whether it is a
    count_tokens row."""
    for (minute, route, upstream, model, sent, session, client, is_count, gone, n, inp, out, cw, cw1h, cr, reas, fo,
         err, moved) in read_rows(reader, _requests_sql(reader), since, until, before):
        moment = row_minute(minute, unreadable)
        if moment is None:
            continue
        # a hand edit may leave a fraction: whole tokens, as the writer stores them
        inp, out, cw, cw1h, cr, reas = (round(v or 0) for v in (inp, out, cw, cw1h, cr, reas))
        t = Totals(n, inp, out, cw, cw1h, cr, reas, fo or 0, err or 0, moved or 0)
        usd = pricer.cost(sent or model, upstream, t)
        if usd is None:
            t.unpriced_tokens, t.unpriced_requests = t.tokens, t.requests
        else:
            t.cost = usd
        yield UsageRow(moment, timeline.local(moment, tz).date(), route, upstream, model, sent, session, t, client,
                       gone), bool(is_count)


def read_timings(reader: LedgerReader, since: date, until: date, tz: tzinfo | None) -> Timings:
    out = []
    for ts, upstream, latency_ms, ttfb_ms in read_rows(reader, _TIMINGS_SQL, since, until):
        moment, latency = row_moment(ts, []), ms_or_none(latency_ms)     # the requests' own count says so
        if moment is not None and latency is not None and since <= timeline.local(moment, tz).date() <= until:
            out.append(Timing(moment, upstream, latency, ms_or_none(ttfb_ms)))
    return Timings(out)
