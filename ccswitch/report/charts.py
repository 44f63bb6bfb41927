"""PNG charts for `ccswitch report` (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from ccswitch.report.text import Report, Totals

SIZE = (10, 4.5)
DPI = 110
MAX_SERIES = 8          # more upstreams/routes than this: the smallest go into "other"
TOKEN_COLORS = {"input": "#4C78A8", "cache write (5 min)": "#F58518", "cache write (1 h)": "#E45756",
                "cache read": "#72B7B2", "output": "#54A24B"}
CHART_FILES = ("tokens.png", "cost.png", "requests.png", "cache_hit.png")


def _human(x: float, _pos: object = None) -> str:
    x = float(x)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}" if x else "0"


def _usd_formatter(top: float) -> FuncFormatter:
    """Dollar ticks with enough decimals for the axis' range ($0.00015 days are real)."""
    digits = 0 if top >= 100 else 2 if top >= 1 or top <= 0 else min(6, max(2, math.ceil(-math.log10(top)) + 1))
    return FuncFormatter(lambda x, _pos=None: "$0" if not x else f"${x:,.{digits}f}")


def _x(days: list[date]) -> list[datetime]:
    """Days as datetimes (midnight): date - timedelta(hours=...) would drop the hours."""
    return [datetime.combine(d, time()) for d in days]


def _date_axis(ax: plt.Axes, report: Report) -> None:
    if len(report.days) <= 10:                   # daily data: one tick a day, never hour ticks
        ax.xaxis.set_major_locator(mdates.DayLocator())
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a\n%b %d"))
    else:
        locator = mdates.AutoDateLocator(minticks=4, maxticks=12)
        formatter = mdates.ConciseDateFormatter(locator)
        # "Sep 08" on every day tick (not a bare "08" whose month is off-screen); the year as offset
        formatter.formats = ["%Y", "%b", "%b %d", "%H:%M", "%H:%M", "%S.%f"]
        formatter.zero_formats = ["", "%Y", "%b %d", "%b %d", "%H:%M", "%H:%M"]
        formatter.offset_formats = ["", "%Y", "%Y", "%Y-%b-%d", "%Y-%b-%d", "%Y-%b-%d %H:%M"]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(formatter)
    first, last = _x([report.days[0], report.days[-1]])
    ax.set_xlim(first - timedelta(hours=16), last + timedelta(hours=16))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _subtitle(report: Report) -> str:
    span = str(report.since) if report.since == report.until else f"{report.since} to {report.until}"
    return f"{span} ({report.tz_name})"


def _legend(ax: plt.Axes, reverse: bool = False, **kw: object) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if reverse:                                  # stacked bars: legend top-down like the stack
        handles, labels = handles[::-1], labels[::-1]
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9, **kw)


def _stack(ax: plt.Axes, days: list[date], series: dict[str, list[float]], colors: dict[str, str] | None = None) -> None:
    bottom = [0.0] * len(days)
    for label, values in series.items():
        if not any(values):
            continue
        ax.bar(_x(days), values, bottom=bottom, width=0.8, label=label,
               color=(colors or {}).get(label), linewidth=0)
        bottom = [b + v for b, v in zip(bottom, values)]


def _top_labels(report: Report, dim: str, key) -> list[str]:
    ranked = sorted(report.summary[dim], key=lambda k: (-key(report.summary[dim][k]), k))
    return ranked if len(ranked) <= MAX_SERIES else ranked[:MAX_SERIES - 1]


def _per_day(report: Report, dim: str, labels: list[str], value) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {label: [] for label in labels}
    other: list[float] = []
    for day in report.days:
        groups = report.daily_groups[dim].get(day, {})
        for label in labels:
            out[label].append(value(groups[label]) if label in groups else 0.0)
        other.append(sum(value(t) for k, t in groups.items() if k not in labels))
    if any(other):
        out["other"] = other
    return out


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def chart_tokens(report: Report, path: Path) -> Path:
    days = report.days
    d = [report.daily[x] for x in days]
    series = {"input": [t.input for t in d],
              "cache write (5 min)": [t.cache_write - t.cache_write_1h for t in d],
              "cache write (1 h)": [t.cache_write_1h for t in d],
              "cache read": [t.cache_read for t in d],
              "output": [t.output for t in d]}
    fig, ax = plt.subplots(figsize=SIZE)
    _stack(ax, days, series, TOKEN_COLORS)
    ax.set_title(f"Tokens per day by type\n{_subtitle(report)}", fontsize=11)
    ax.set_ylabel("tokens per day")
    ax.yaxis.set_major_formatter(FuncFormatter(_human))
    _date_axis(ax, report)
    _legend(ax, reverse=True, title="token type")
    return _save(fig, path)


def chart_cost(report: Report, path: Path) -> Path:
    labels = _top_labels(report, "upstream", lambda t: t.cost)
    series = _per_day(report, "upstream", labels, lambda t: t.cost)
    fig, ax = plt.subplots(figsize=SIZE)
    series = {name: values for name, values in series.items() if any(values)}
    palette = plt.get_cmap("tab10").colors      # a colour per upstream name, whatever its rank
    colors = {name: palette[i % 10] for i, name in enumerate(sorted(k for k in series if k != "other"))}
    _stack(ax, report.days, series, {**colors, "other": "#999999"})
    ax.set_title(f"Cost per day by upstream (list price × price_multiplier)\n{_subtitle(report)}", fontsize=11)
    ax.set_ylabel("cost per day (USD)")
    if report.total.unpriced_tokens:
        names = sorted(report.unpriced, key=lambda m: -report.unpriced[m])
        listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        fig.text(0.01, 0.01, f"Not included: {_human(report.total.unpriced_tokens)} tokens of models with no "
                 f"price ({listed})", fontsize=8, color="#a03030")
    if not report.total.cost:
        ax.text(0.5, 0.5, "no priced usage in this period", transform=ax.transAxes, ha="center", color="gray")
        ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(_usd_formatter(ax.get_ylim()[1]))
    _date_axis(ax, report)
    _legend(ax, reverse=True, title="upstream")
    return _save(fig, path)


def chart_requests(report: Report, path: Path) -> Path:
    days = _x(report.days)
    d = [report.daily[x] for x in report.days]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(SIZE[0], 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    top.bar(days, [t.requests for t in d], width=0.8, color="#4C78A8", label="requests", linewidth=0)
    top.set_title(f"Requests, failovers and errors per day\n{_subtitle(report)}", fontsize=11)
    top.set_ylabel("requests per day")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.yaxis.set_major_formatter(FuncFormatter(_human))
    _legend(top)
    offset = timedelta(hours=4.6)
    bottom.bar([x - offset for x in days], [t.failovers for t in d], width=0.4, color="#F58518",
               label="failovers (more than one attempt)", linewidth=0)
    bottom.bar([x + offset for x in days], [t.errors for t in d], width=0.4, color="#E45756",
               label="errors (error text or status >= 400)", linewidth=0)
    bottom.set_ylabel("requests per day")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    if not (report.total.failovers or report.total.errors):
        bottom.set_ylim(0, 1)
        bottom.text(0.5, 0.5, "no failovers or errors", transform=bottom.transAxes, ha="center", color="gray")
    for ax in (top, bottom):
        _date_axis(ax, report)
    _legend(bottom)
    return _save(fig, path)


def chart_cache_hit(report: Report, path: Path) -> Path:
    days = report.days
    fig, ax = plt.subplots(figsize=SIZE)

    def ratio(t: Totals | None) -> float:
        return math.nan if t is None or t.cache_hit is None else t.cache_hit * 100

    routes = [r for r in _top_labels(report, "route", lambda t: t.prompt) if report.summary["route"][r].prompt]
    if len(routes) > 1:
        for route, color in zip(routes, plt.get_cmap("tab10").colors[1:]):
            ax.plot(_x(days), [ratio(report.daily_groups["route"].get(x, {}).get(route)) for x in days],
                    marker=".", linewidth=1, alpha=0.8, color=color, label=f"route {route}")
    ax.plot(_x(days), [ratio(report.daily[x]) for x in days], marker="o", markersize=4, linewidth=2.2,
            color="#333333", label="all requests")
    overall = report.total.cache_hit
    if overall is not None:
        ax.axhline(overall * 100, color="#333333", linestyle=":", linewidth=1,
                   label=f"period: {overall * 100:.1f}%")
    ax.set_ylim(0, 100)
    ax.yaxis.set_major_formatter(PercentFormatter())
    ax.set_title(f"Cache-hit ratio per day (cache read / whole prompt)\n{_subtitle(report)}", fontsize=11)
    ax.set_ylabel("prompt tokens read from cache (%)")
    _date_axis(ax, report)
    _legend(ax)
    return _save(fig, path)


def write_charts(report: Report, out_dir: Path) -> list[Path]:
    """Write the four charts into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    makers = (chart_tokens, chart_cost, chart_requests, chart_cache_hit)
    return [make(report, out_dir / name) for make, name in zip(makers, CHART_FILES)]
