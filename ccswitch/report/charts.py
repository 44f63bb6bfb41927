"""PNG charts for `ccswitch report` (matplotlib, Agg backend: no display needed).

Each chart has a bar or point per row of the report's main view (``Report.rows()``): days,
weeks or months on a date axis, or the hours of one day (``--hours``) on an axis of hour labels
(a day the clocks change has 23 or 25 of them).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from ccswitch.report.data import Report, Span, Totals, shortened, sorted_groups
from ccswitch.report.latency import LatencyStats, Timing, stats
from ccswitch.report.terminal import visible_controls

SIZE = (10, 4.5)
DPI = 110
MAX_SERIES = 8          # more upstreams/routes than this: the smallest go into "other"
# upstreams' colours: tab10's, then tab20's lighter ones (one colour each for 20 upstreams)
OTHER = "\0other"       # the key of the rest in a chart's series: no upstream's name
PALETTE = (*plt.get_cmap("tab10").colors, *plt.get_cmap("tab20").colors[1::2])
TOKEN_COLORS = {"input": "#4C78A8", "cache write (5 min)": "#F58518", "cache write (1 h)": "#E45756",
                "cache read": "#72B7B2", "output": "#54A24B"}
CHART_FILES = ("tokens.png", "cost.png", "requests.png", "cache_hit.png", "latency.png")
HIT_MARGIN = 5          # percentage points of room around the cache-hit data


def _human(x: float, _pos: object = None) -> str:
    x = float(x)
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}" if x else "0"


def _usd_formatter(ticks) -> FuncFormatter:
    """Dollar ticks with as many decimals as each tick needs to be told exactly ($0.00015 days
    are real; a step of $0.0025 needs four): cents at least, whole dollars past $100."""
    top = max((abs(t) for t in ticks), default=0.0)
    digits = 0 if top >= 100 else next(
        (d for d in range(2, 7) if all(abs(t - round(t, d)) <= 1e-12 + abs(t) * 1e-9 for t in ticks)), 6)
    return FuncFormatter(lambda x, _pos=None: "$0" if not x else f"${x:,.{digits}f}")


def _seconds(x: float, _pos: object = None) -> str:
    return "0" if not x else f"{x:g}s"


class Axis:
    """Where each row of the main view goes on the x axis, how wide its bar is, and the ticks."""

    def __init__(self, report: Report):
        self.report = report
        self.spans = report.rows()
        self.hourly = report.view == "hour"
        if self.hourly:                          # categorical: 23/24/25 hours, repeated ones told apart
            self.x: list = list(range(len(self.spans)))
            self.width = [0.8] * len(self.spans)
        else:                                    # local midnight of each day / week / month
            self.x = [s.start.astimezone(report.tz).replace(tzinfo=None) for s in self.spans]
            self.width = [0.8 * (s.end - s.start) / timedelta(days=1) for s in self.spans]

    def shifted(self, fraction: float) -> list:
        """x moved by ``fraction`` of each bar's width (side-by-side bars)."""
        if self.hourly:
            return [x + fraction * w for x, w in zip(self.x, self.width)]
        return [x + timedelta(days=fraction * w) for x, w in zip(self.x, self.width)]

    def style(self, ax: plt.Axes) -> None:
        if self.hourly:
            step = 1 if len(self.spans) <= 12 else 2
            ax.set_xticks(self.x[::step], [s.label for s in self.spans][::step], fontsize=8)
            ax.set_xlim(-0.7, len(self.spans) - 0.3)
        else:
            self._date_ticks(ax)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

    def _date_ticks(self, ax: plt.Axes) -> None:
        if self.report.view == "day" and len(self.spans) <= 10:      # one tick a day, never hour ticks
            ax.xaxis.set_major_locator(mdates.DayLocator())
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%a\n%b %d"))
        elif self.report.view == "week":             # a tick on each bar's Monday, not on the 1st of a month
            interval = max(1, math.ceil(len(self.spans) / 12))
            ax.xaxis.set_major_locator(mdates.WeekdayLocator(byweekday=mdates.MO, interval=interval))
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d\n%Y" if len(self.spans) > 12 else "%b %d"))
        elif self.report.view == "month":          # a dozen labels at most, or they run together
            interval = max(1, math.ceil(len(self.spans) / 12))
            ax.xaxis.set_major_locator(mdates.MonthLocator(interval=interval))
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%b\n%Y"))
        else:
            if self.report.view == "day" and len(self.spans) <= 100:
                # every n days from the first, across month ends: a locator counting days of the
                # month would put "Nov 29" right beside "Dec 01"
                locator = mdates.DayLocator(interval=math.ceil(len(self.spans) / 12))
            else:
                locator = mdates.AutoDateLocator(minticks=4, maxticks=12)
            formatter = mdates.ConciseDateFormatter(locator)
            # "Sep 08" on every day tick (not a bare "08" whose month is off-screen); the year as offset
            formatter.formats = ["%Y", "%b", "%b %d", "%H:%M", "%H:%M", "%S.%f"]
            formatter.zero_formats = ["", "%Y", "%b %d", "%b %d", "%H:%M", "%H:%M"]
            formatter.offset_formats = ["", "%Y", "%Y", "%Y-%b-%d", "%Y-%b-%d", "%Y-%b-%d %H:%M"]
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(formatter)
        pad = timedelta(days=max(self.width) * 0.6 / 0.8)
        ax.set_xlim(self.x[0] - pad, self.x[-1] + pad)

    def per_row(self) -> str:
        return {"hour": "per hour", "week": "per week", "month": "per month"}.get(self.report.view, "per day")


def _subtitle(report: Report) -> str:
    span = str(report.since) if report.since == report.until else f"{report.since} to {report.until}"
    return f"{span} ({report.tz_name})"


def _legend(ax: plt.Axes, reverse: bool = False, **kw: object) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if reverse:                                  # stacked bars: legend top-down like the stack
        handles, labels = handles[::-1], labels[::-1]
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9, **kw)


def _stack(ax: plt.Axes, axis: Axis, series: dict[str, list[float]], colors: dict[str, str] | None = None) -> None:
    bottom = [0.0] * len(axis.x)
    for label, values in series.items():
        if not any(values):
            continue
        ax.bar(axis.x, values, bottom=bottom, width=axis.width, label=label,
               color=(colors or {}).get(label), linewidth=0)
        bottom = [b + v for b, v in zip(bottom, values)]


def _top_labels(report: Report, dim: str, key: Callable[[Totals], float]) -> list[str]:
    ranked = sorted(report.summary[dim], key=lambda k: (-key(report.summary[dim][k]), k))
    return ranked if len(ranked) <= MAX_SERIES else ranked[:MAX_SERIES - 1]


def _per_row(spans: list[Span], dim: str, labels: list[str], value: Callable[[Totals], float]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {label: [] for label in labels}
    other: list[float] = []
    for span in spans:
        groups = span.groups[dim]
        for label in labels:
            out[label].append(value(groups[label]) if label in groups else 0.0)
        other.append(sum(value(t) for k, t in groups.items() if k not in labels))
    if any(other):
        out[OTHER] = other
    return out


def stats_of(timings: list[Timing], upstream: str | None = None) -> LatencyStats:
    return stats(t for t in timings if upstream is None or t.upstream == upstream)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def chart_tokens(report: Report, path: Path) -> Path:
    """Two panels: every token type stacked, then the types other than cache reads on their own scale
    (cache reads are often 90% of a day's tokens, which flattens input and output to nothing)."""
    axis = Axis(report)
    d = [s.total for s in axis.spans]
    writes = {"cache write (5 min)": [t.cache_write - t.cache_write_1h for t in d],
              "cache write (1 h)": [t.cache_write_1h for t in d]}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(SIZE[0], 7), sharex=True, gridspec_kw={"height_ratios": [1, 1]})
    _stack(top, axis, {"input": [t.input for t in d], **writes, "cache read": [t.cache_read for t in d],
                       "output": [t.output for t in d]}, TOKEN_COLORS)
    top.set_title(f"Tokens {axis.per_row()} by type\n{_subtitle(report)}", fontsize=11)
    top.set_ylabel(f"tokens {axis.per_row()}")
    _stack(bottom, axis, {"input": [t.input for t in d], **writes, "output": [t.output for t in d]}, TOKEN_COLORS)
    bottom.set_title("Without cache reads (own scale)", fontsize=10)
    bottom.set_ylabel(f"tokens {axis.per_row()}")
    if not any(t.input or t.cache_write or t.output for t in d):
        bottom.set_ylim(0, 1)
        said = "only cache reads" if any(t.cache_read for t in d) else "no tokens in this period"
        bottom.text(0.5, 0.5, said, transform=bottom.transAxes, ha="center", color="gray")
    for ax in (top, bottom):
        ax.yaxis.set_major_formatter(FuncFormatter(_human))
        axis.style(ax)
    _legend(top, reverse=True, title="token type")
    return _save(fig, path)


def upstream_colors(report: Report, names: list[str]) -> dict[str, tuple]:
    """One colour per upstream in every chart of a report (the cost and the latency chart name it
    alike): by its place in the report's summary, costliest first; one the summary lacks, after."""
    ranked = [name for name, _ in sorted_groups(report.summary["upstream"])]
    ranked += [name for name in names if name not in ranked]
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(ranked) if name in names}


def chart_cost(report: Report, path: Path) -> Path:
    axis = Axis(report)
    labels = _top_labels(report, "upstream", lambda t: t.cost)
    series = _per_row(axis.spans, "upstream", labels, lambda t: t.cost)
    fig, ax = plt.subplots(figsize=SIZE)
    series = {name: values for name, values in series.items() if any(values)}
    colors = upstream_colors(report, [name for name in series if name != OTHER])
    if OTHER in series:       # the legend says how many it holds
        rest = sum(1 for name, t in report.summary["upstream"].items() if name not in labels and t.cost)
        label = f"{rest} other upstream{'s' if rest != 1 else ''}"
        series[label], colors[label] = series.pop(OTHER), "#999999"
    _stack(ax, axis, series, colors)
    ax.set_title(f"Cost {axis.per_row()} by upstream (list price × price_multiplier)\n{_subtitle(report)}",
                 fontsize=11)
    ax.set_ylabel(f"cost {axis.per_row()} (USD)")
    if report.total.unpriced_tokens:
        names = sorted(report.unpriced, key=lambda m: -report.unpriced[m])
        # a client's model: its controls as escapes (a `\u202e` would turn the rest of the line around)
        listed = ", ".join(visible_controls(shortened(n, 30)) for n in names[:3]) + (
            f" and {len(names) - 3} more" if len(names) > 3 else "")
        fig.text(0.01, 0.01, f"Not included: {_human(report.total.unpriced_tokens)} tokens of models with no "
                 f"price ({listed})", fontsize=8, color="#a03030")
    if not report.total.cost:
        ax.text(0.5, 0.5, "no priced usage in this period", transform=ax.transAxes, ha="center", color="gray")
        ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(_usd_formatter(ax.get_yticks()))
    axis.style(ax)
    _legend(ax, reverse=True, title="upstream")
    return _save(fig, path)


def chart_requests(report: Report, path: Path) -> Path:
    axis = Axis(report)
    d = [s.total for s in axis.spans]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(SIZE[0], 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    top.bar(axis.x, [t.requests for t in d], width=axis.width, color="#4C78A8", label="requests", linewidth=0)
    top.set_title(f"Requests, failovers and errors {axis.per_row()}\n{_subtitle(report)}", fontsize=11)
    top.set_ylabel(f"requests {axis.per_row()}")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.yaxis.set_major_formatter(FuncFormatter(_human))
    _legend(top)
    half = [w / 2 for w in axis.width]
    bottom.bar(axis.shifted(-0.25), [t.failovers for t in d], width=half, color="#F58518",
               label="failovers (more than one attempt)", linewidth=0)
    bottom.bar(axis.shifted(0.25), [t.errors for t in d], width=half, color="#E45756",
               label="errors (error text or status >= 400)", linewidth=0)
    bottom.set_ylabel(f"requests {axis.per_row()}")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    if not (report.total.failovers or report.total.errors):
        bottom.set_ylim(0, 1)
        bottom.text(0.5, 0.5, "no failovers or errors", transform=bottom.transAxes, ha="center", color="gray")
    for ax in (top, bottom):
        axis.style(ax)
    _legend(bottom)
    return _save(fig, path)


def hit_limits(values: list[float]) -> tuple[float, float]:
    """A cache-hit axis zoomed to the data (in %): a few points of room, ends on multiples of 5, within 0..100."""
    shown = [v for v in values if not math.isnan(v)]
    if not shown:
        return 0.0, 100.0
    low = max(0.0, math.floor((min(shown) - HIT_MARGIN) / 5) * 5)
    high = min(100.0, math.ceil((max(shown) + HIT_MARGIN) / 5) * 5)
    return low, max(high, low + 10)


def chart_cache_hit(report: Report, path: Path) -> Path:
    axis = Axis(report)
    fig, ax = plt.subplots(figsize=SIZE)

    def ratio(t: Totals | None) -> float:
        return math.nan if t is None or t.cache_hit is None else t.cache_hit * 100

    plotted: list[float] = []
    # per upstream, as the tables beside it (the busiest, in the colours of the other charts)
    upstreams = report.hit_upstreams()[:MAX_SERIES - 1]
    if len(upstreams) > 1:
        colors = upstream_colors(report, upstreams)
        for name in upstreams:
            values = [ratio(s.groups["upstream"].get(name)) for s in axis.spans]
            plotted += values
            ax.plot(axis.x, values, marker=".", linewidth=1, alpha=0.8, color=colors[name], label=name)
    values = [ratio(s.total) for s in axis.spans]
    plotted += values
    ax.plot(axis.x, values, marker="o", markersize=4, linewidth=2.2, color="#333333", label="all requests")
    overall = report.total.cache_hit
    if overall is not None:
        ax.axhline(overall * 100, color="#333333", linestyle=":", linewidth=1,
                   label=f"period: {overall * 100:.1f}%")
    ax.set_ylim(*hit_limits(plotted))
    ax.yaxis.set_major_formatter(PercentFormatter())
    ax.set_title(f"Cache-hit ratio {axis.per_row()} (cache read / whole prompt)\n{_subtitle(report)}", fontsize=11)
    ax.set_ylabel("prompt tokens read from cache (%)")
    axis.style(ax)
    _legend(ax)
    return _save(fig, path)


def chart_latency(report: Report, path: Path) -> Path:
    """Two panels, latency and time to first byte (each on its own scale: a long answer takes a minute, its
    first byte a second): p50 and p95 of all successful answers per row, and each busy upstream's p50."""
    axis = Axis(report)
    timed = [report.timings.between(s.start, s.end) for s in axis.spans]
    upstreams = report.timings.upstreams()[:MAX_SERIES - 1]
    colors = upstream_colors(report, upstreams)
    seconds = lambda v: math.nan if v is None else v / 1000
    fig, panels = plt.subplots(2, 1, figsize=(SIZE[0], 7), sharex=True)
    for ax, kind, title in ((panels[0], "latency", "Latency (request start to last byte)"),
                            (panels[1], "ttfb", "Time to first byte")):
        for name in upstreams:
            values = [seconds(getattr(stats_of(t, name), f"{kind}_p50")) for t in timed]
            ax.plot(axis.x, values, marker=".", linewidth=1, alpha=0.75, color=colors[name], label=f"{name} p50")
        overall = [stats_of(t) for t in timed]
        ax.plot(axis.x, [seconds(getattr(s, f"{kind}_p95")) for s in overall], marker="o", markersize=3,
                linewidth=1.6, linestyle="--", color="#333333", label="all p95")
        ax.plot(axis.x, [seconds(getattr(s, f"{kind}_p50")) for s in overall], marker="o", markersize=3.5,
                linewidth=2.2, color="#333333", label="all p50")
        ax.set_title(title if ax is panels[1] else
                     f"{title} {axis.per_row()}, successful answers\n{_subtitle(report)}", fontsize=10 + (ax is panels[0]))
        ax.set_ylabel("seconds")
        ax.yaxis.set_major_formatter(FuncFormatter(_seconds))
        if len(report.timings):
            ax.set_ylim(bottom=0)
        else:
            ax.set_ylim(0, 1)
            ax.text(0.5, 0.5, "no successful requests timed", transform=ax.transAxes, ha="center", color="gray")
        axis.style(ax)
    _legend(panels[0])
    return _save(fig, path)


def write_charts(report: Report, out_dir: Path) -> list[Path]:
    """Write the charts into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    makers = (chart_tokens, chart_cost, chart_requests, chart_cache_hit, chart_latency)
    # names come from clients and rules (a model "x$}$"): text, never matplotlib's $math$
    with plt.rc_context({"text.parse_math": False}):
        return [make(report, out_dir / name) for make, name in zip(makers, CHART_FILES)]
