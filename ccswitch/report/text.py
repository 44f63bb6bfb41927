"""`ccswitch report`'s text output: the terminal tables (``render_table``) and the JSON document
(``report_json``). What is counted and priced, and how, lives in data.py (``Report``,
``build_report``); charts.py and html.py draw the same report; cli/report.py is the command.

Costs in one table share one precision (``cost_digits``): cents, or as many decimals as the
smallest cost in it needs to show two significant digits, so a $0.0070 day does not sit above
a "$0.01" total; the HTML headline uses the main table's precision.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

from ccswitch.money import cost_digits
from ccswitch.report import attempts
from ccswitch.report.data import BlockSpan, Report, Span, Totals, fmt_tokens, sorted_groups
from ccswitch.report.latency import LatencyStats
from ccswitch.report.terminal import printable, prose, short_label, short_labels, table_lines
from ccswitch.report.timeline import period_label, period_start

VIEW_HEADS = {"day": "Day", "hour": "Hour", "week": "Week", "month": "Month"}

# --------------------------------------------------------------------------- cells


def table_digits(totals: Iterable[Totals]) -> int:
    return cost_digits(t.cost for t in totals)


def fmt_cost(t: Totals, digits: int | None = None) -> str:
    """'$1.23', '$0.0070', '$0.03+?' (some tokens have no price), '?' (none has, or only requests of a
    model without a price are there, even without tokens). ``digits``: the table's precision (None:
    this value's own)."""
    if (t.unpriced_tokens or t.unpriced_requests) and not t.cost:
        return "?"
    digits = cost_digits([t.cost]) if digits is None else digits
    return f"${t.cost:,.{digits}f}" + ("+?" if t.unpriced_tokens else "")


def fmt_hit(t: Totals) -> str:
    return fmt_ratio(t.cache_hit)


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def fmt_ms(ms: float | None) -> str:
    """'850ms', '1.25s', '12.5s'; '-' without a value."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.2f}s" if ms < 10_000 else f"{ms / 1000:.1f}s"


def fmt_left(left: timedelta) -> str:
    minutes = math.ceil(left.total_seconds() / 60)
    return f"{minutes // 60}h {minutes % 60:02d}m"


def sent_as(span: Span, model: str) -> str:
    """What the client's ``model`` went upstream as, most requests first: '' when always as named."""
    targets = span.sent_as.get(model, {})
    if not span.renamed(model):
        return ""
    return ", ".join(name for name, _ in sorted(targets.items(), key=lambda kv: (-kv[1].requests, kv[0])))


def group_label(span: Span, dim: str, label: str, shown: str | None = None) -> str:
    """A group row's label (``shown``: as the table shows it); a model that was renamed shows its
    upstream name(s): 'sonnet -> glm-4.6'."""
    renamed = sent_as(span, label) if dim == "model" else ""
    return (shown or short_label(label)) + (f" -> {renamed}" if renamed else "")


COLUMNS = ("Requests", "Input", "Output", "Cache write", "Cache read", "Hit %", "Cost USD", "Failovers", "Errors",
           "Moved")
LATENCY_COLUMNS = ("Timed", "Latency p50", "Latency p95", "TTFB p50", "TTFB p95")
BLOCK_COLUMNS = ("Start", "End", "Requests", "Input", "Output", "Cache write", "Cache read", "Tokens", "Cost USD",
                 "Status")


def row_cells(t: Totals, digits: int | None = None) -> list[str]:
    return [str(t.requests), fmt_tokens(t.input), fmt_tokens(t.output), fmt_tokens(t.cache_write),
            fmt_tokens(t.cache_read), fmt_hit(t), fmt_cost(t, digits), str(t.failovers), str(t.errors), str(t.moved)]


def latency_cells(s: LatencyStats) -> list[str]:
    return [str(s.requests), fmt_ms(s.latency_p50), fmt_ms(s.latency_p95), fmt_ms(s.ttfb_p50), fmt_ms(s.ttfb_p95)]


def _grid(head: str, rows: list[tuple[str, list[str]]], rules_before: set[int] = frozenset(),
          columns: tuple[str, ...] = COLUMNS, left: int = 1, fit: int | None = None) -> list[str]:
    """A text table; the first ``left`` columns are left-aligned, the rest right-aligned."""
    table = [[printable(c) for c in (head, *columns)], *([printable(c) for c in (label, *values)] for label, values in rows)]
    return table_lines(table, lambda i: i < left, rules_before, fit)


# --------------------------------------------------------------------------- the views


def row_label(report: Report, span: Span) -> str:
    """A main-table row's label: '2026-03-01 Sun', '09:00', '2026-W10 03-02..03-08', '2026-03'."""
    if report.view == "day":
        return span.start.astimezone(report.tz).strftime("%Y-%m-%d %a")
    return span.label


def main_rows(report: Report) -> tuple[list[tuple[str, Span, str | None]], int]:
    """The main table: (label, span, group label or None) for each row with requests, and how many
    rows (days, hours, weeks, months) had none (those yet to come not counted: they could have none)."""
    out: list[tuple[str, Span, str | None]] = []
    idle = 0
    shown = short_labels(report.summary.get(report.by, {})) if report.by else {}
    for span in report.rows():
        if not span.total.requests:
            idle += span.start <= report.now
            continue
        out.append((row_label(report, span), span, None))
        if report.by:
            out += [("  " + group_label(span, report.by, label, shown.get(label)), span, label)
                    for label, _ in sorted_groups(span.groups[report.by])]
    return out, idle


def main_digits(report: Report) -> int:
    """The cost precision of the main table (and the HTML headline)."""
    rows, _ = main_rows(report)
    return table_digits([report.total, *(span.groups[report.by][g] if g else span.total for _, span, g in rows)])


def summary_digits(report: Report, totals: Iterable[Totals]) -> int:
    """The precision of a table beside the main one: never fewer decimals than the main table's."""
    return max(main_digits(report), table_digits(totals))


def main_lines(report: Report, fit: int | None = None) -> list[str]:
    rows, idle = main_rows(report)
    digits = main_digits(report)
    cells = [(label, row_cells(span.groups[report.by][g] if g else span.total, digits)) for label, span, g in rows]
    cells.append(("Total", row_cells(report.total, digits)))
    out = _grid(VIEW_HEADS[report.view], cells, {len(cells) - 1}, fit=fit)
    if idle:
        out.append(f"({idle} {report.view}(s) without requests not shown)")
    return out


def summary_lines(report: Report, dim: str, fit: int | None = None) -> list[str]:
    groups = sorted_groups(report.summary[dim])
    digits = summary_digits(report, (t for _, t in groups))
    shown = short_labels(label for label, _ in groups)
    if dim == "model" and any_renamed(report):      # the client's model, and what it was sent upstream as
        return _grid("Model", [(shown[label], [sent_as(report.whole, label), *row_cells(t, digits)])
                               for label, t in groups], columns=("Sent upstream as", *COLUMNS), left=2, fit=fit)
    return _grid(dim.capitalize(), [(shown[label], row_cells(t, digits)) for label, t in groups], fit=fit)


def any_renamed(report: Report) -> bool:
    """Whether some model was sent upstream under another name (else that column says nothing)."""
    return any(sent_as(report.whole, label) for label in report.summary["model"])


def latency_rows(report: Report) -> list[tuple[str, list[str]]]:
    """Rows of the main view that had timed requests (split by upstream with --by upstream), then the
    whole period and each upstream in it."""
    rows: list[tuple[str, list[str]]] = []
    for span in report.rows():
        s = report.latency(span)
        if not s.requests:
            continue
        rows.append((row_label(report, span), latency_cells(s)))
        if report.by == "upstream":
            rows += [("  " + name, latency_cells(u)) for name, u in report.latency_by_upstream(span).items()]
    rows.append(("All", latency_cells(report.latency())))
    rows += [("  " + name, latency_cells(u)) for name, u in report.latency_by_upstream().items()]
    return rows


def latency_lines(report: Report, fit: int | None = None) -> list[str]:
    rows = latency_rows(report)
    first_total = next(i for i, (label, _) in enumerate(rows) if label == "All")
    return _grid(VIEW_HEADS[report.view], rows, {first_total}, columns=LATENCY_COLUMNS, fit=fit)


def block_status(block: BlockSpan, now: datetime) -> str:
    return f"active, {fmt_left(block.left(now))} left" if block.active(now) else ""


def block_rows(report: Report) -> list[list[str]]:
    blocks = report.blocks or []
    digits = summary_digits(report, (b.total for b in blocks))
    fmt = lambda moment: moment.astimezone(report.tz).strftime("%Y-%m-%d %H:%M")
    return [[fmt(b.start), fmt(b.end), str(b.total.requests), fmt_tokens(b.total.input), fmt_tokens(b.total.output),
             fmt_tokens(b.total.cache_write), fmt_tokens(b.total.cache_read), fmt_tokens(b.total.tokens),
             fmt_cost(b.total, digits), block_status(b, report.now)] for b in blocks]


def blocks_title(report: Report) -> str:
    whose = f"answered by {report.blocks_upstream}" if report.blocks_upstream else "any upstream"
    return f"5-hour blocks (claude route, {whose}; times in {report.tz_name})"


def block_lines(report: Report, fit: int | None = None) -> list[str]:
    rows = block_rows(report)
    if not rows:
        return ["(no claude requests in the period)"]
    return _grid("Start", [(r[0], r[1:]) for r in rows], columns=BLOCK_COLUMNS[1:], left=2, fit=fit)


def made_at(report: Report) -> str:
    """When the report was made, in its zone: a saved one's "active" block or partial day is of then."""
    return report.now.astimezone(report.tz).strftime("%Y-%m-%d %H:%M")


def render_table(report: Report, fit: int | None = None) -> str:
    """The text report; ``fit``: the terminal's width, which a table wider than it is fitted to."""
    view = "" if report.view == "day" else f"; by {report.view}"
    out = [*prose(f"ccswitch usage {report.since} .. {report.until} ({report.tz_name}{view}), made "
                   f"{made_at(report)}; database {report.db_path or '?'}; prices as of {report.prices_as_of}", fit), ""]
    out += main_lines(report, fit)
    if report.total.reasoning:
        out.append(f"Output includes {fmt_tokens(report.total.reasoning)} reasoning tokens.")
    if report.sessions():
        out += prose(f"{report.sessions()} session(s) in the period; Moved = requests answered by another "
                      "upstream than the one their session was bound to", fit)
    if report.blocks is not None:
        out += ["", *prose(blocks_title(report) + ":", fit), *block_lines(report, fit)]
    dim = report.by or "upstream"
    out += ["", f"By {dim}:", *summary_lines(report, dim, fit)]
    if dim == "upstream" and attempts.worth_showing(report.attempts):
        out += prose(RESCUED, fit)
    if report.by != "upstream" and report.hit_upstreams():   # with --by upstream the day rows show it
        out += ["", hit_title(report) + ":"]
        out += hit_lines(report, fit)
    if len(report.timings):
        out += ["", *prose("Latency and time to first byte (successful answers; p50 / p95):", fit),
                *latency_lines(report, fit)]
    if attempts.worth_showing(report.attempts):
        out += ["", *prose(ATTEMPTS_TITLE + ":", fit), *attempt_lines(report, fit)]
    if report.activations:
        out += ["", "Activation probes:"]
        out += activation_lines(report, fit)
    if report.notes:
        out.append("")
        for note in report.notes:
            out += prose(f"note: {printable(note)}", fit, indent="  ")
    return "\n".join(out)


def activation_rows(report: Report) -> list[list[str]]:
    return [[a.upstream, a.last_probe.strftime("%Y-%m-%d %H:%M"), "ok" if a.last_ok else f"failed ({a.last_error})",
             str(a.ok), str(a.failed)] for a in report.activations]


ACTIVATION_COLUMNS = ("Upstream", "Last probe", "Last result", "OK", "Failed")


def hit_rows(report: Report) -> list[tuple[str, list[str]]]:
    """The main view's rows (days, hours, weeks or months) with requests, each with the cache-hit %
    of every upstream that saw prompt tokens (a month's report has a row a month, not a day)."""
    return [(row_label(report, span), [fmt_ratio(r) for r in report.hit_by_upstream(span).values()])
            for span in report.rows() if span.total.requests]


def hit_title(report: Report) -> str:
    return f"Cache hit % per {report.view} and upstream"


def hit_lines(report: Report, fit: int | None = None) -> list[str]:
    return _grid(report.view.capitalize(), hit_rows(report), columns=tuple(report.hit_upstreams()), fit=fit)


ATTEMPTS_TITLE = "Attempts per upstream (failovers included; a failure rescued by another upstream counts here)"
#: beside the usage by upstream, which credits a request to the upstream whose answer the client got
RESCUED_NOTE = "a failover counts for the upstream that answered; attempts per upstream, below, has the failures"
RESCUED = f"({RESCUED_NOTE})"


def _columns(head: tuple[str, ...], body: list[list[str]], left: set[int], fit: int | None = None) -> list[str]:
    return table_lines([list(head), *([printable(c) for c in row] for row in body)], left.__contains__, fit=fit)


def activation_lines(report: Report, fit: int | None = None) -> list[str]:
    return _columns(ACTIVATION_COLUMNS, activation_rows(report), left={0, 1, 2}, fit=fit)


def attempt_lines(report: Report, fit: int | None = None) -> list[str]:
    return _columns(attempts.COLUMNS, attempts.rows(report.attempts), left={0, 5}, fit=fit)


# --------------------------------------------------------------------------- JSON


def _groups_json(span: Span, dim: str) -> dict:
    out = {}
    for label, t in sorted_groups(span.groups[dim]):
        out[label] = t.to_dict()
        if dim == "model":
            out[label]["upstream_models"] = {name: s.to_dict() for name, s in sorted_groups(span.sent_as.get(label, {}))}
    return out


def _latency_json(report: Report, span: Span | None) -> dict:
    return {**report.latency(span).to_dict(),
            "by_upstream": {name: s.to_dict() for name, s in report.latency_by_upstream(span).items()}}


def _span_json(report: Report, span: Span) -> dict:
    return {"start": span.start.astimezone(report.tz).isoformat(), "end": span.end.astimezone(report.tz).isoformat(),
            **span.total.to_dict(), "latency": _latency_json(report, span),
            **({"groups": _groups_json(span, report.by)} if report.by else {})}


def _period_json(report: Report, span: Span) -> dict:
    first = span.start.astimezone(report.tz).date()
    last = (span.end - timedelta(microseconds=1)).astimezone(report.tz).date()
    return {"period": period_label(period_start(first, report.period), report.period), "first_day": first.isoformat(),
            "last_day": last.isoformat(), **_span_json(report, span)}


def _block_json(report: Report, block: BlockSpan) -> dict:
    local = lambda moment: moment.astimezone(report.tz).isoformat() if moment else None
    active = block.active(report.now)
    return {"start": local(block.start), "end": local(block.end), "first_request": local(block.first),
            "last_request": local(block.last), "active": active,
            "minutes_left": math.ceil(block.left(report.now).total_seconds() / 60) if active else None,
            **block.total.to_dict()}


def report_json(report: Report) -> dict:
    out = {
        "since": report.since.isoformat(), "until": report.until.isoformat(), "timezone": report.tz_name,
        "database": report.db_path, "prices_as_of": report.prices_as_of, "by": report.by, "view": report.view,
        "totals": report.total.to_dict(),
        "sessions": report.sessions(),
        "latency": _latency_json(report, None),
        "days": [{"day": d.isoformat(), **report.daily[d].to_dict(), "sessions": report.sessions(d),
                  "cache_hit_by_upstream": {k: None if v is None else round(v, 6)
                                            for k, v in report.hit_by_upstream(d).items()},
                  "latency": _latency_json(report, report.by_day[d]),
                  **({"groups": _groups_json(report.by_day[d], report.by)} if report.by else {})}
                 for d in report.days],
        "summary": {dim: _groups_json(report.whole, dim) for dim in report.summarised},
        "activations": [{"upstream": a.upstream, "last_probe": a.last_probe.isoformat(), "last_ok": a.last_ok,
                         "last_error": a.last_error, "ok": a.ok, "failed": a.failed} for a in report.activations],
        "attempts_by_upstream": {a.upstream: a.to_dict() for a in report.attempts},
        "unpriced_models": report.unpriced, "count_tokens_requests": report.count_tokens, "notes": report.notes,
    }
    if report.hours is not None:
        out["hours"] = [{"hour": span.label, **_span_json(report, span)} for span in report.hours]
    if report.period != "day":
        out["periods"] = [_period_json(report, span) for span in report.rows()]
    if report.blocks is not None:
        out["blocks_upstream"] = report.blocks_upstream
        out["blocks"] = [_block_json(report, b) for b in report.blocks]
    return out
