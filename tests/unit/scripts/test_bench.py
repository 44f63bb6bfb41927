"""The benchmark's arithmetic (its runs are a script, never timed assertions here)."""

from scripts import bench


def figures(cc_throughput: float) -> dict:
    base = {"latency p50 (ms)": 5.0, "first content p50 (ms)": 8.0, "throughput c=16 (req/s)": 300.0,
            "RSS growth (%)": 0.5}
    return {"bare mitmdump": base,
            "ccswitch reverse": {**base, "latency p50 (ms)": 6.0, "first content p50 (ms)": 10.5,
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
    met = bench.verdicts(figures(240.0))
    assert [line.split()[0] for line in met] == ["met", "met", "met", "MISSED"]   # RSS +12 %
    missed = bench.verdicts(figures(200.0))
    assert "MISSED throughput c=16 >= 0.7x bare" in "\n".join(missed)


def test_percentiles():
    values = list(range(1, 101))
    assert bench.pct(values, 0.5) in (50, 51) and bench.pct(values, 0.99) == 99
