"""Names in the charts are text: a client's model name with `$` in it is not matplotlib math."""

import contextlib
import io

from ccswitch.cli import report as report_cli
from ccswitch.ledger.schema import connect
from ccswitch.report.charts import CHART_FILES
from tests.unit.report.test_report import insert_request, write_rules


def test_a_model_name_with_dollars_is_charted_as_written(tmp_path):
    db = tmp_path / "usage.db"
    conn = connect(str(db))
    insert_request(conn, 1, ts="2026-03-01T10:00:00.000+00:00", upstream="relay-a", model="claude-sonnet-4-5",
                   input_tokens=1000, output_tokens=50)
    insert_request(conn, 2, ts="2026-03-01T11:00:00.000+00:00", upstream="relay-a", model="my-model$}$",
                   input_tokens=10, output_tokens=5)                     # no price: named under the cost chart
    conn.close()
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db), "--since", "2026-03-01",
                                "--until", "2026-03-01", "--out", str(out)]) == 0
    assert all((out / name).stat().st_size > 1000 for name in CHART_FILES) and "my-model$}$" in printed.getvalue()


def _ticks_of(tmp_path, first, days: int, period: str = "day") -> list[float]:
    """The x ticks a chart of one request a day from ``first`` shows, in labels' range."""
    from datetime import timedelta

    import matplotlib.pyplot as plt

    from ccswitch.config.load import parse_rules
    from ccswitch.report.charts import Axis
    from ccswitch.report.data import build_report
    from tests.unit.report.test_report import RULES

    tmp_path.mkdir(exist_ok=True)
    conn = connect(str(tmp_path / "usage.db"))
    for i in range(days):
        day = first + timedelta(days=i)
        insert_request(conn, i, ts=f"{day}T10:00:00.000+00:00", upstream="relay-a", model="claude-sonnet-4-5",
                       input_tokens=100, output_tokens=5)
    rules = parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"})
    report = build_report(conn, rules, first, first + timedelta(days=days - 1), period=period)
    conn.close()
    figure, ax = plt.subplots()
    try:
        axis = Axis(report)
        ax.bar(axis.x, [1] * len(axis.x), width=axis.width)
        axis.style(ax)
        low, high = ax.get_xlim()
        return [t for t in ax.xaxis.get_majorticklocs() if low <= t <= high]
    finally:
        plt.close(figure)


def test_day_ticks_are_evenly_spaced_across_month_ends(tmp_path):
    # ticks counted by day of the month put "Nov 29" beside "Dec 01", their labels overlapping
    from datetime import date
    from itertools import pairwise

    ticks = _ticks_of(tmp_path, date(2026, 10, 28), 35)
    gaps = {round(b - a, 6) for a, b in pairwise(ticks)}
    assert len(ticks) >= 4 and len(gaps) == 1, gaps


def test_a_long_month_view_labels_at_most_a_dozen_months(tmp_path):
    # a tick for each of 17 months ran their "Mar\n2026" labels together
    from datetime import date

    ticks = _ticks_of(tmp_path, date(2025, 7, 1), 520, period="month")
    assert 4 <= len(ticks) <= 12, len(ticks)
    assert len(_ticks_of(tmp_path / "short", date(2026, 1, 1), 150, period="month")) == 5   # each month, still


def test_dollar_ticks_have_the_decimals_each_step_needs():
    from ccswitch.report.charts import _usd_formatter
    ticks = [0, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02]
    labels = [_usd_formatter(ticks)(t) for t in ticks]
    assert labels == ["$0", "$0.0025", "$0.0050", "$0.0075", "$0.0100", "$0.0125", "$0.0150", "$0.0175", "$0.0200"]
    assert [_usd_formatter([0, 0.5, 1.0, 1.5])(t) for t in (0.5, 1.5)] == ["$0.50", "$1.50"]
    assert [_usd_formatter([0, 0.00005, 0.0001, 0.00015])(t) for t in (0.00015,)] == ["$0.00015"]
    assert _usd_formatter([0, 100, 200])(200) == "$200" and _usd_formatter([0, 5000, 10000])(10000) == "$10,000"
    assert [_usd_formatter([0, 25, 50, 75, 100])(t) for t in (25, 100)] == ["$25", "$100"]   # $100: whole dollars
    assert _usd_formatter([0, 1e-8])(1e-8) == "$0.000000"     # past a millionth of a dollar: no more digits


def _token_chart_texts(tmp_path, monkeypatch, *later_days: dict, **tokens) -> list[str]:
    """The token chart's notes for 2026-03-01 with one request of `tokens`, and a day after it for
    each of `later_days` (its request's tokens)."""
    from datetime import date, timedelta

    from ccswitch.config.load import parse_rules
    from ccswitch.report import charts
    from ccswitch.report.data import build_report
    from tests.unit.report.test_report import RULES

    conn = connect(str(tmp_path / "usage.db"))
    insert_request(conn, 1, ts="2026-03-01T10:00:00.000+00:00", upstream="relay-a", model="claude-sonnet-4-5",
                   status=503, error="HTTP 503", **tokens)
    day = date(2026, 3, 1)
    for n, later in enumerate(later_days, start=2):
        insert_request(conn, n, ts=f"2026-03-0{n}T10:00:00.000+00:00", upstream="relay-a", model="claude-sonnet-4-5",
                       status=503, error="HTTP 503", **later)
    report = build_report(conn, parse_rules(RULES, env={"RELAY_A_KEY_FOR_TEST": "x"}), day,
                          day + timedelta(days=len(later_days)))
    conn.close()
    texts: list[str] = []

    def keep_texts(fig, path):
        texts.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        charts.plt.close(fig)
        return path
    monkeypatch.setattr(charts, "_save", keep_texts)
    charts.chart_tokens(report, tmp_path / "tokens.png")
    return texts


def test_a_period_without_tokens_is_not_said_to_hold_only_cache_reads(tmp_path, monkeypatch):
    assert _token_chart_texts(tmp_path, monkeypatch) == ["no tokens in this period"]


def test_a_period_of_cache_reads_alone_says_so(tmp_path, monkeypatch):
    assert _token_chart_texts(tmp_path, monkeypatch, cache_read_tokens=500) == ["only cache reads"]


def test_cache_reads_on_one_day_of_a_period_are_not_said_to_be_no_tokens(tmp_path, monkeypatch):
    # a day with cache reads and a day without tokens: the period holds cache reads alone
    assert _token_chart_texts(tmp_path, monkeypatch, {}, cache_read_tokens=500) == ["only cache reads"]


def test_a_model_name_s_bidi_control_is_drawn_as_its_escape(tmp_path, monkeypatch):
    """`\u202e` would draw the rest of the cost chart's footnote backwards, so that names read as others."""
    import matplotlib.figure
    drawn = []
    real_text = matplotlib.figure.Figure.text
    monkeypatch.setattr(matplotlib.figure.Figure, "text",
                        lambda fig, x, y, s, *a, **kw: drawn.append(s) or real_text(fig, x, y, s, *a, **kw))
    db = tmp_path / "usage.db"
    conn = connect(str(db))
    insert_request(conn, 1, ts="2026-03-01T11:00:00.000+00:00", upstream="relay-a", model="odd-\u202eevil",
                   input_tokens=10, output_tokens=5)
    conn.close()
    with contextlib.redirect_stdout(io.StringIO()):
        assert report_cli.main(["--rules", str(write_rules(tmp_path)), "--db", str(db), "--since", "2026-03-01",
                                "--until", "2026-03-01", "--out", str(tmp_path / "out")]) == 0
    (footnote,) = [text for text in drawn if text.startswith("Not included")]
    assert "odd-\\u202eevil" in footnote and "\u202e" not in footnote
