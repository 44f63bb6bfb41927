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

from ccswitch.report.data import DIMENSIONS, Report, Totals, fmt_tokens, sorted_groups

# --------------------------------------------------------------------------- text output

def fmt_cost(t: Totals) -> str:
    if t.unpriced_tokens and not t.cost:
        return "?"
    text = f"${t.cost:,.2f}" if t.cost >= 0.01 or t.cost == 0 else f"${t.cost:.4f}"
    return text + ("+?" if t.unpriced_tokens else "")


def fmt_hit(t: Totals) -> str:
    return "-" if t.cache_hit is None else f"{t.cache_hit * 100:.1f}%"


COLUMNS = ("Requests", "Input", "Output", "Cache write", "Cache read", "Hit %", "Cost USD", "Failovers", "Errors")


def row_cells(t: Totals) -> list[str]:
    return [str(t.requests), fmt_tokens(t.input), fmt_tokens(t.output), fmt_tokens(t.cache_write),
            fmt_tokens(t.cache_read), fmt_hit(t), fmt_cost(t), str(t.failovers), str(t.errors)]


def _grid(head: str, rows: list[tuple[str, list[str]]], rules_before: set[int] = frozenset()) -> list[str]:
    cols = [head, *COLUMNS]
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
            rows.append(("  " + label, row_cells(g)))
    idle = sum(1 for d in report.days if not report.daily[d].requests)
    rows.append(("Total", row_cells(report.total)))
    out += _grid("Day", rows, {len(rows) - 1})
    if idle:
        out.append(f"({idle} day(s) without requests not shown)")
    dim = report.by or "upstream"
    out += ["", f"By {dim}:"]
    out += _grid(dim.capitalize(), [(label, row_cells(t)) for label, t in sorted_groups(report.summary[dim])])
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
        "days": [{"day": d.isoformat(), **report.daily[d].to_dict(),
                  **({"groups": {k: v.to_dict() for k, v in sorted_groups(report.groups(d))}} if report.by else {})}
                 for d in report.days],
        "summary": {dim: {k: v.to_dict() for k, v in sorted_groups(report.summary[dim])} for dim in DIMENSIONS},
        "activations": [{"upstream": a.upstream, "last_probe": a.last_probe.isoformat(), "last_ok": a.last_ok,
                         "last_error": a.last_error, "ok": a.ok, "failed": a.failed} for a in report.activations],
        "unpriced_models": report.unpriced, "count_tokens_requests": report.count_tokens, "notes": report.notes,
    }


# --------------------------------------------------------------------------- command line


