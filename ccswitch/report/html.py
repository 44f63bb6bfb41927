"""report.html for `ccswitch report`: one self-contained page (charts embedded as base64)."""
from __future__ import annotations

import base64
from collections.abc import Iterable
from html import escape as _escape
from pathlib import Path

from ccswitch.report import attempts
from ccswitch.report.data import Report, fmt_tokens, sorted_groups
from ccswitch.report.terminal import short_labels, visible_controls
from ccswitch.report.text import (
    ACTIVATION_COLUMNS,
    ATTEMPTS_TITLE,
    BLOCK_COLUMNS,
    COLUMNS,
    LATENCY_COLUMNS,
    RESCUED_NOTE,
    VIEW_HEADS,
    activation_rows,
    any_renamed,
    block_rows,
    blocks_title,
    fmt_cost,
    fmt_hit,
    hit_rows,
    hit_title,
    latency_rows,
    made_at,
    main_digits,
    main_rows,
    row_cells,
    sent_as,
    summary_digits,
)


def escape(text: str) -> str:
    """HTML-escaped, each bidirectional control shown as its escape (a model may carry one)."""
    return _escape(visible_controls(text))

CHART_ALT = {
    "tokens.png": "Tokens per day by type (input, cache write, cache read, output)",
    "cost.png": "Cost per day by upstream, in USD",
    "requests.png": "Requests, failovers and errors per day",
    "cache_hit.png": "Cache-hit ratio per day",
    "latency.png": "Latency and time to first byte, p50 and p95",
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
.wide{overflow-x:auto}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e5e5e5;white-space:nowrap}
th{background:#f4f4f4;text-align:right} th:first-child,td:first-child{text-align:left}
td:first-child,th:first-child{position:sticky;left:0;background:#fff;z-index:1}
th:first-child{background:#f4f4f4}
tr.active td:first-child{background:#eef6ee}
td[style]{white-space:normal;overflow-wrap:break-word;min-width:12rem;max-width:24rem}
td{text-align:right;font-variant-numeric:tabular-nums}
tr.group td{color:#555;font-size:.82rem} tr.group td:first-child{padding-left:1.6rem}
tr.total td{font-weight:bold;border-top:2px solid #999}
tr.active td{background:#eef6ee;font-weight:bold}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5rem 0}
figure{margin:0}
@media (max-width:720px){figure{overflow-x:auto} figure img{max-width:none;width:720px}
  .wide{box-shadow:inset -8px 0 8px -8px #999}}
.notes li{color:#7a3b00;overflow-wrap:anywhere}
.meta{overflow-wrap:anywhere}
"""


def _table(head: Iterable[str], rows: Iterable[tuple[str, list[str]]], left_cols: int = 1,
           left_last: bool = False) -> str:
    """`left_cols` columns of text from the left (the first is by the page's style), and the last
    with `left_last` (a text after the numbers)."""
    head = list(head)
    left = ' style="text-align:left"'
    is_left = lambda i: 0 < i < left_cols or (left_last and i == len(head) - 1)
    out = ['<div class="wide"><table><thead><tr>',
           *(f"<th{left if is_left(i) else ''}>{escape(h)}</th>" for i, h in enumerate(head)),
           "</tr></thead><tbody>"]
    for cls, cells in rows:
        out.append(f'<tr class="{escape(cls)}">' if cls else "<tr>")
        out += [f'<td style="text-align:left">{escape(c)}</td>' if is_left(i) else f"<td>{escape(c)}</td>"
                for i, c in enumerate(cells)]
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _main_rows(report: Report, digits: int) -> list[tuple[str, list[str]]]:
    """The main table (days, hours, weeks or months) as text.py builds it, group rows marked for indenting."""
    rows = [("group" if group else "", [label.strip(), *row_cells(span.groups[report.by][group] if group else span.total,
                                                                  digits)])
            for label, span, group in main_rows(report)[0]]
    rows.append(("total", ["Total", *row_cells(report.total, digits)]))
    return rows


def _summary_table(report: Report, dim: str) -> str:
    groups = sorted_groups(report.summary[dim])
    digits = summary_digits(report, (t for _, t in groups))
    shown = short_labels(label for label, _ in groups)
    if dim == "model" and any_renamed(report):
        return _table(["Model", "Sent upstream as", *COLUMNS],
                      [("", [shown[label], sent_as(report.whole, label), *row_cells(t, digits)])
                       for label, t in groups], left_cols=2)
    return _table([dim.capitalize(), *COLUMNS], [("", [shown[label], *row_cells(t, digits)]) for label, t in groups])


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def render_html(report: Report, charts: list[Path]) -> str:
    t = report.total
    digits = main_digits(report)
    title = (f"ccswitch usage on {report.since}, by hour" if report.hours is not None
             else f"ccswitch usage {report.since} to {report.until}")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        (f'<p class="meta">Times in {escape(report.tz_name)} &middot; made {escape(made_at(report))} '
         f'&middot; database {escape(report.db_path)} '
         f"&middot; prices as of {escape(report.prices_as_of)} (list price &times; each upstream's "
         "price_multiplier)</p>"),
        '<div class="cards">',
        _card(fmt_cost(t, digits), "cost (USD)"), _card(str(t.requests), "requests"),
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
    head = VIEW_HEADS[report.view]
    parts.append(f"<h2>Per {escape(head.lower())}{escape(by)}</h2>")
    parts.append(_table([head, *COLUMNS], _main_rows(report, digits)))
    if report.blocks is not None:
        parts.append(f"<h2>{escape(blocks_title(report))}</h2>")
        if report.blocks:
            parts.append(_table(BLOCK_COLUMNS, [("active" if r[-1] else "", r) for r in block_rows(report)],
                                left_cols=2))
        else:
            parts.append("<p>No claude requests in the period.</p>")
    for dim in report.summarised:
        parts.append(f"<h2>By {escape(dim)}</h2>")
        if dim == "upstream" and attempts.worth_showing(report.attempts):
            parts.append(f'<p class="meta">{escape(RESCUED_NOTE[:1].upper() + RESCUED_NOTE[1:])}.</p>')
        parts.append(_summary_table(report, dim))
    if report.hit_upstreams():
        parts.append(f"<h2>{escape(hit_title(report).replace(' %', ''))}</h2>")
        parts.append(_table([report.view.capitalize(), *report.hit_upstreams()],
                            [("", [label, *cells]) for label, cells in hit_rows(report)]))
    if len(report.timings):
        parts.append("<h2>Latency and time to first byte (successful answers)</h2>")
        parts.append(_table([head, *LATENCY_COLUMNS],
                            [("group" if label.startswith("  ") else "total" if label == "All" else "",
                              [label.strip(), *cells]) for label, cells in latency_rows(report)]))
    if report.attempts:
        parts.append(f"<h2>{escape(ATTEMPTS_TITLE)}</h2>")
        parts.append(_table(attempts.COLUMNS, [("", r) for r in attempts.rows(report.attempts)], left_last=True))
    parts.append("<h2>Activation probes</h2>")
    if report.activations:
        parts.append(_table(ACTIVATION_COLUMNS, [("", r) for r in activation_rows(report)], left_cols=3))
    else:
        parts.append("<p>No activation probes in this period.</p>")
    parts.append(f'<p class="meta">Cache write includes 1-hour writes ({escape(fmt_tokens(t.cache_write_1h))} tokens in this '
                 f"period); output includes {escape(fmt_tokens(t.reasoning))} reasoning tokens. "
                 "Cache hit = cache read / (input + cache write + cache read). Moved = requests whose "
                 "session was bound to another upstream than the one that answered. Latency runs from the "
                 "request's start to its last byte, first byte to its first; p50 / p95 by nearest rank. "
                 "count_tokens requests are not counted.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: Report, charts: list[Path], out_dir: Path) -> Path:
    path = Path(out_dir) / "report.html"
    path.write_text(render_html(report, charts), encoding="utf-8")
    return path
