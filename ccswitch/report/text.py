"""`ccswitch report`: daily usage, cost, failovers and errors from the usage database.

This file owns the command and its text output: the terminal table (``render_table``), the
JSON document (``report_json``), argument parsing and ``main``. What is counted and priced,
and how (``Report``, ``Totals``, ``build_report``), lives in report_data.py; those names are
importable from here too.

Pieces: ``build_report(conn, rules, since, until, by)`` (report_data.py: queries -> Report),
``render_table(report)``, ``report_json(report)``, ``write_charts(report, out_dir)``
(report_charts.py), ``write_html(report, charts, out_dir)`` (report_html.py), ``main(argv)``.
"""
from __future__ import annotations

from ccswitch.report.data import Report, Totals, fmt_tokens, sorted_groups

LABEL_WIDTH = 40        # longer labels (session keys can be long) are shortened in the table, kept whole in JSON

# --------------------------------------------------------------------------- text output

def fmt_cost(t: Totals) -> str:
    if t.unpriced_tokens and not t.cost:
        return "?"
    text = f"${t.cost:,.2f}" if t.cost >= 0.01 or t.cost == 0 else f"${t.cost:.4f}"
    return text + ("+?" if t.unpriced_tokens else "")


def fmt_hit(t: Totals) -> str:
    return fmt_ratio(t.cache_hit)


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def short_label(label: str, width: int = LABEL_WIDTH) -> str:
    """Head and tail of a long label: session keys differ at the end (a UUID) as often as at the start.
    ASCII dots, so a terminal without UTF-8 prints it too."""
    if len(label) <= width:
        return label
    tail = (width - 3) // 2
    return label[:width - 3 - tail] + "..." + label[-tail:]


COLUMNS = ("Requests", "Input", "Output", "Cache write", "Cache read", "Hit %", "Cost USD", "Failovers", "Errors",
           "Moved")


def row_cells(t: Totals) -> list[str]:
    return [str(t.requests), fmt_tokens(t.input), fmt_tokens(t.output), fmt_tokens(t.cache_write),
            fmt_tokens(t.cache_read), fmt_hit(t), fmt_cost(t), str(t.failovers), str(t.errors), str(t.moved)]


def _grid(head: str, rows: list[tuple[str, list[str]]], rules_before: set[int] = frozenset(),
          columns: tuple[str, ...] = COLUMNS) -> list[str]:
    cols = [head, *columns]
    widths = [max(len(c), *(len(r[0]) if i == 0 else len(r[1][i - 1]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    sep = "  ".join("-" * w for w in widths)
    out = [line(cols), sep]
    for i, (label, cells) in enumerate(rows):
        if i in rules_before:
            out.append(sep)
        out.append(line([label, *cells]))
    return out


def render_table(report: Report) -> str:
    out = [(f"ccswitch usage {report.since} .. {report.until} ({report.tz_name}); "
            f"database {report.db_path or '?'}; prices as of {report.prices_as_of}"), ""]
    rows: list[tuple[str, list[str]]] = []
    for day in report.days:
        t = report.daily[day]
        if not t.requests:
            continue
        rows.append((day.strftime("%Y-%m-%d %a"), row_cells(t)))
        for label, g in sorted_groups(report.groups(day)):
            rows.append(("  " + short_label(label), row_cells(g)))
    idle = sum(1 for d in report.days if not report.daily[d].requests)
    rows.append(("Total", row_cells(report.total)))
    out += _grid("Day", rows, {len(rows) - 1})
    if idle:
        out.append(f"({idle} day(s) without requests not shown)")
    if report.sessions():
        out.append(f"{report.sessions()} session(s) in the period; Moved = requests answered by another "
                   "upstream than the one their session was bound to")
    dim = report.by or "upstream"
    out += ["", f"By {dim}:"]
    out += _grid(dim.capitalize(),
                 [(short_label(label), row_cells(t)) for label, t in sorted_groups(report.summary[dim])])
    if report.by != "upstream" and report.hit_upstreams():   # with --by upstream the day rows show it
        out += ["", "Cache hit % per day and upstream:"]
        out += hit_lines(report)
    if report.activations:
        out += ["", "Activation probes:"]
        out += activation_lines(report)
    if report.notes:
        out += ["", *(f"note: {n}" for n in report.notes)]
    return "\n".join(out)


def activation_rows(report: Report) -> list[list[str]]:
    return [[a.upstream, a.last_probe.strftime("%Y-%m-%d %H:%M"), "ok" if a.last_ok else f"failed ({a.last_error})",
             str(a.ok), str(a.failed)] for a in report.activations]


ACTIVATION_COLUMNS = ("Upstream", "Last probe", "Last result", "OK", "Failed")


def hit_rows(report: Report) -> list[tuple[str, list[str]]]:
    """Days with requests, each with the cache-hit % of every upstream that saw prompt tokens."""
    return [(day.strftime("%Y-%m-%d %a"), [fmt_ratio(r) for r in report.hit_by_upstream(day).values()])
            for day in report.days if report.daily[day].requests]


def hit_lines(report: Report) -> list[str]:
    return _grid("Day", hit_rows(report), columns=tuple(report.hit_upstreams()))


def activation_lines(report: Report) -> list[str]:
    rows = [list(ACTIVATION_COLUMNS), *activation_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(ACTIVATION_COLUMNS))]
    fmt = lambda r: "  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return [fmt(rows[0]), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows[1:])]


def report_json(report: Report) -> dict:
    return {
        "since": report.since.isoformat(), "until": report.until.isoformat(), "timezone": report.tz_name,
        "database": report.db_path, "prices_as_of": report.prices_as_of, "by": report.by,
        "totals": report.total.to_dict(),
        "sessions": report.sessions(),
        "days": [{"day": d.isoformat(), **report.daily[d].to_dict(), "sessions": report.sessions(d),
                  "cache_hit_by_upstream": {k: None if v is None else round(v, 6)
                                            for k, v in report.hit_by_upstream(d).items()},
                  **({"groups": {k: v.to_dict() for k, v in sorted_groups(report.groups(d))}} if report.by else {})}
                 for d in report.days],
        "summary": {dim: {k: v.to_dict() for k, v in sorted_groups(report.summary[dim])}
                    for dim in report.summarised},
        "activations": [{"upstream": a.upstream, "last_probe": a.last_probe.isoformat(), "last_ok": a.last_ok,
                         "last_error": a.last_error, "ok": a.ok, "failed": a.failed} for a in report.activations],
        "unpriced_models": report.unpriced, "count_tokens_requests": report.count_tokens, "notes": report.notes,
    }


# --------------------------------------------------------------------------- command line


