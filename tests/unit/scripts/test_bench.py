"""The benchmark's arithmetic (its runs are a script, never timed assertions here)."""

import sqlite3
from collections import Counter

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.routing.rate_limits import parse_windows
from scripts import bench, bench_routing
from tests.support.mock_upstream import MockUpstream


def figures(cc_throughput: float, cc_added: float = 2.4) -> dict:
    base = {"latency p50 (ms)": 5.0, "added latency p50 (ms)": 2.0, "first content p50 (ms)": 8.0,
            "throughput c=1 (req/s)": 200.0, "throughput c=16 (req/s)": 300.0, "RSS growth (%)": 0.5}
    return {"bare mitmdump": base,
            "ccswitch reverse": {**base, "latency p50 (ms)": 6.0, "added latency p50 (ms)": cc_added,
                                 "first content p50 (ms)": 10.5, "throughput c=1 (req/s)": 190.0,
                                 "throughput c=16 (req/s)": cc_throughput, "RSS growth (%)": 12.0},
            "LiteLLM proxy": {"latency p50 (ms)": 26.0}}


def test_table_gives_each_ccswitch_figure_its_ratio_to_bare():
    text = bench.table(figures(240.0))
    header, *rows = text.splitlines()
    assert "ccswitch reverse / bare" in header and "LiteLLM proxy / bare" not in header
    latency = next(r for r in rows if r.startswith("latency p50"))
    assert "1.20x" in latency and "26.00" in latency
    assert "-" in next(r for r in rows if r.startswith("RSS growth"))   # LiteLLM has no such figure


def test_verdicts_name_what_was_met_and_what_was_missed():
    met = bench.verdicts(figures(270.0))    # added latency 1.2x, throughput 0.95x and 0.9x
    assert [line.split()[0] for line in met] == ["met", "met", "met", "met", "MISSED"]   # RSS +12 %
    missed = "\n".join(bench.verdicts(figures(269.0, cc_added=2.6)))
    assert "MISSED throughput c=16 >= 0.9x bare" in missed and "MISSED added p50 latency <= 1.25x bare" in missed


def test_percentiles():
    values = list(range(1, 101))
    assert bench.pct(values, 0.5) in (50, 51) and bench.pct(values, 0.99) == 99


def test_table_against_another_ccswitch_gives_no_ratio_column_to_the_baseline():
    pair = {bench_routing.PRIORITY: {"latency p50 (ms)": 4.0, "latency p99 (ms)": 10.0},
            bench_routing.QUOTA: {"latency p50 (ms)": 4.4, "latency p99 (ms)": 9.0}}
    header, p50, p99 = bench.table(pair, baseline=bench_routing.PRIORITY, short="priority").splitlines()
    assert header.count("/ priority") == 1 and f"{bench_routing.QUOTA} / priority" in header
    assert p50.split()[-1] == "1.10x" and p99.split()[-1] == "0.90x"


def test_routing_figures_are_each_sides_percentiles():
    figures = bench.routing_figures({"a": [float(v) for v in range(1, 101)], "b": [7.0]})
    assert figures["a"]["latency p50 (ms)"] in (50, 51) and figures["a"]["latency p99 (ms)"] == 99
    assert figures["b"] == {"latency p50 (ms)": 7.0, "latency p99 (ms)": 7.0}


def test_the_mocks_rate_limit_headers_are_read_by_ccswitch_as_a_live_5h_window():
    now = 1_800_000_000.0
    windows = {w.name: w for w in parse_windows(list(bench_routing.rate_limit_headers(0.7, now).items()), now)}
    assert windows["5h"].utilization == pytest.approx(0.7) and windows["5h"].resets_at > now
    assert windows["7d"].utilization == pytest.approx(0.35) and not any(w.rejected for w in windows.values())


def test_the_pair_differs_only_in_its_claude_route():
    ports = {"busy": 1001, "roomy": 1002}
    priority = parse_rules(bench_routing.routing_rules(bench_routing.PRIORITY_ROUTE, ports))
    quota = parse_rules(bench_routing.routing_rules(bench_routing.QUOTA_ROUTE, ports))
    assert priority.upstreams == quota.upstreams
    assert (priority.routes.claude.strategy, priority.routes.claude.upstreams) == ("priority", ("roomy", "busy"))
    assert quota.routes.claude.strategy == "quota" and quota.routes.claude.sticky == 3600
    # quota has to reorder: the upstream it lists first is the busier one
    assert quota.routes.claude.upstreams[0] == max(bench_routing.UTILIZATION, key=bench_routing.UTILIZATION.get)


def test_describe_warns_when_a_measured_request_was_answered_elsewhere():
    fine = Counter({(bench_routing.PRIORITY, "roomy"): 5, (bench_routing.QUOTA, "roomy"): 5})
    assert "every measured request" in bench_routing.describe(fine, {"kept": 5, "new": 50})[0]
    moved = fine + Counter({(bench_routing.QUOTA, "busy"): 2})
    lines = bench_routing.describe(moved, {})
    assert lines[0].strip().startswith("WARNING") and "busy x2" in lines[0]
    assert lines[1].endswith("none recorded")


def test_session_affinity_counts_the_ledgers_sessions(tmp_path):
    db = tmp_path / "usage.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE requests (session TEXT, affinity TEXT)")
        conn.executemany("INSERT INTO requests VALUES (?, ?)",
                         [("s1", "new"), ("s1", "kept"), ("s1", "kept"), (None, None)])
    assert bench_routing.session_affinity(db) == {"kept": 2, "new": 1}
    assert bench_routing.session_affinity(tmp_path / "absent.db") == {}


def test_the_benchs_ccswitch_prints_no_line_per_connection_like_its_bare_mitmdump(tmp_path):
    """Both sides of the benchmark log alike (bare mitmdump prints no line per connection), and
    the quiet ccswitch routes at once when it is reported started."""
    with MockUpstream("A") as upstream:
        proxy = bench.start_ccswitch(upstream.port, upstream.port, tmp_path)
        try:
            target = bench.Target("ccswitch", proxy.reverse_url)
            with target.client() as client:
                for _ in range(3):
                    bench.post_plain(client, target)
            assert len(upstream.requests) == 3
        finally:
            proxy.stop()
    assert "client connect" not in proxy.log() and "listening at" not in proxy.log()


@pytest.mark.parametrize("protocol", ["anthropic", "openai-responses"])
def test_the_in_process_pump_figure_passes_every_byte_on_and_finds_the_usage(protocol):
    from scripts.bench_inprocess import judged_events_per_second
    assert judged_events_per_second(protocol, events=200) > 0   # it asserts both itself
