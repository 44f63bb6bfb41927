"""report.html for `ccswitch report`: one self-contained page (charts embedded as base64)."""
from __future__ import annotations

import base64
from collections.abc import Iterable
from html import escape
from pathlib import Path

from ccswitch.report.data import Report, sorted_groups
from ccswitch.report.text import (
    ACTIVATION_COLUMNS,
    COLUMNS,
    activation_rows,
    fmt_cost,
    fmt_hit,
    hit_rows,
    row_cells,
    short_label,
)

CHART_ALT = {
    "tokens.png": "Tokens per day by type (input, cache write, cache read, output)",
    "cost.png": "Cost per day by upstream, in USD",
    "requests.png": "Requests, failovers and errors per day",
    "cache_hit.png": "Cache-hit ratio per day",
}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1150px;
     color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem}
.meta{color:#555;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem .9rem;min-width:8rem}
.card b{display:block;font-size:1.25rem}
.card span{color:#666;font-size:.85rem}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e5e5e5;white-space:nowrap}
th{background:#f4f4f4;text-align:right} th:first-child,td:first-child{text-align:left}
td{text-align:right;font-variant-numeric:tabular-nums}
tr.group td{color:#555;font-size:.82rem} tr.group td:first-child{padding-left:1.6rem}
tr.total td{font-weight:bold;border-top:2px solid #999}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5rem 0}
.notes li{color:#7a3b00}
"""


def _table(head: Iterable[str], rows: Iterable[tuple[str, list[str]]], left_cols: int = 1) -> str:
    out = ["<table><thead><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for cls, cells in rows:
        out.append(f'<tr class="{escape(cls)}">' if cls else "<tr>")
        out += [f'<td style="text-align:left">{escape(c)}</td>' if 0 < i < left_cols else f"<td>{escape(c)}</td>"
                for i, c in enumerate(cells)]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _daily_rows(report: Report) -> list[tuple[str, list[str]]]:
    rows: list[tuple[str, list[str]]] = []
    for day in report.days:
        t = report.daily[day]
        if not t.requests:
            continue
        rows.append(("", [day.strftime("%Y-%m-%d %a"), *row_cells(t)]))
        rows += [("group", [short_label(label), *row_cells(g)]) for label, g in sorted_groups(report.groups(day))]
    rows.append(("total", ["Total", *row_cells(report.total)]))
    return rows


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def render_html(report: Report, charts: list[Path]) -> str:
    t = report.total
    title = f"ccswitch usage {report.since} to {report.until}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        (f'<p class="meta">Days in {escape(report.tz_name)} &middot; database {escape(report.db_path)} '
         f"&middot; prices as of {escape(report.prices_as_of)} (list price &times; each upstream's "
         "price_multiplier)</p>"),
        '<div class="cards">',
        _card(fmt_cost(t), "cost (USD)"), _card(str(t.requests), "requests"),
        _card(fmt_hit(t), "cache hit"), _card(str(t.failovers), "failovers"), _card(str(t.errors), "errors"),
        _card(str(report.sessions()), "sessions"), _card(str(t.moved), "moved (session left its upstream)"),
        "</div>",
    ]
    if report.notes:
        parts += ['<ul class="notes">', *(f"<li>{escape(n)}</li>" for n in report.notes), "</ul>"]
    parts.append("<h2>Charts</h2>")
    for path in charts:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        alt = CHART_ALT.get(Path(path).name, Path(path).stem)
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}" '
                     f'title="{escape(Path(path).name)}"></figure>')
    by = f", split by {report.by}" if report.by else ""
    parts.append(f"<h2>Per day{escape(by)}</h2>")
    parts.append(_table(["Day", *COLUMNS], _daily_rows(report)))
    for dim in report.summarised:
        parts.append(f"<h2>By {escape(dim)}</h2>")
        parts.append(_table([dim.capitalize(), *COLUMNS],
                            [("", [short_label(label), *row_cells(g)]) for label, g in sorted_groups(report.summary[dim])]))
    if report.hit_upstreams():
        parts.append("<h2>Cache hit per day and upstream</h2>")
        parts.append(_table(["Day", *report.hit_upstreams()], [("", [day, *cells]) for day, cells in hit_rows(report)]))
    parts.append("<h2>Activation probes</h2>")
    if report.activations:
        parts.append(_table(ACTIVATION_COLUMNS, [("", r) for r in activation_rows(report)], left_cols=3))
    else:
        parts.append("<p>No activation probes in this period.</p>")
    parts.append(f'<p class="meta">Cache write includes 1-hour writes ({escape(str(t.cache_write_1h))} tokens in this '
                 "period). Cache hit = cache read / (input + cache write + cache read). Moved = requests whose "
                 "session was bound to another upstream than the one that answered. count_tokens requests are "
                 "not counted.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: Report, charts: list[Path], out_dir: Path) -> Path:
    path = Path(out_dir) / "report.html"
    path.write_text(render_html(report, charts), encoding="utf-8")
    return path
