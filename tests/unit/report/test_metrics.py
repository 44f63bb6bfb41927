"""`/_ccswitch/metrics`: Prometheus text format 0.0.4, parsed back by the reference parser and
checked line by line."""

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccswitch.dial.job import Attempt
from ccswitch.ledger.rows import own_answer_row
from ccswitch.report import prices
from ccswitch.report.live import DURATION_BUCKETS, TTFB_BUCKETS, LiveBoard
from ccswitch.report.live_status import upstream_views
from ccswitch.report.metrics import escape_help, escape_label, metrics_text, number
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.quota import QuotaBoard
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.live_rows import NOON_ISH, TZ, USAGE, finished, note, rules

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\[\\"n]|[^"\\\n])*",?)*\})? '
                    r'(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$')


def scrape():
    """A board after: a failover a(529) -> b(200), a 401 ccswitch answered itself, a plain
    success on a; a cooling, b bound to one session with a known utilization."""
    r = rules()
    board = LiveBoard(clock=lambda: NOON_ISH)
    note(board, r, finished(r, Attempt("a", 529, "HTTP 529", 100), Attempt("b", 200, None, 900, USAGE),
                            latency=1000, ttfb=400))
    note(board, r, finished(r, Attempt("a", 200, None, 200, USAGE), latency=200, ttfb=100))
    board.note(own_answer_row(request_id="x", started_at=datetime.fromtimestamp(NOON_ISH, ZoneInfo(TZ)),
                              route="claude", endpoint="messages", model=None, stream=False, status=401,
                              error="missing or invalid ccswitch client key", latency_ms=2), [], 0.0)
    health, quota = HealthBoard(clock=lambda: 1000.0), QuotaBoard(clock=lambda: NOON_ISH)
    health.record_failure("a", f"HTTP 529 {KEY_A}", threshold=1, cooldown=60)
    quota.record("b", [("anthropic-ratelimit-unified-5h-utilization", "0.25"),
                       ("anthropic-ratelimit-unified-5h-reset", str(int(NOON_ISH + 600)))])
    sessions = SessionBindings(clock=lambda: 1000.0)
    sessions.bind("claude", "s", "b", 3600)
    now = datetime.fromtimestamp(NOON_ISH, ZoneInfo(TZ))
    return metrics_text(board, upstream_views(r, health, quota, sessions, now)), board


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, family, sample_name=None, **labels):
    found = [s.value for s in fams[family].samples
             if s.name == (sample_name or family) and s.labels == labels]
    assert len(found) == 1, (family, labels, fams[family].samples)
    return found[0]


def test_every_line_is_help_type_or_a_well_formed_sample_and_each_family_is_declared_once_first():
    text, _ = scrape()
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in declared, f"{name} declared twice"
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and kind in ("counter", "gauge", "histogram")
            declared[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"malformed sample line: {line!r}"
            sample = match.group(1)
            family = re.sub(r"_(bucket|sum|count)$", "", sample) if declared.get(current) == "histogram" else sample
            assert family == current, f"{sample} outside its family {current}"
    assert declared["ccswitch_requests_total"] == "counter"
    assert declared["ccswitch_request_duration_seconds"] == "histogram"
    assert declared["ccswitch_upstream_up"] == "gauge"


def test_the_values_parse_back():
    text, board = scrape()
    fams = families(text)
    assert value(fams, "ccswitch_requests", "ccswitch_requests_total", route="claude", upstream="b", status="200") == 1
    assert value(fams, "ccswitch_requests", "ccswitch_requests_total", route="claude", upstream="a", status="200") == 1
    assert value(fams, "ccswitch_requests", "ccswitch_requests_total", route="claude", upstream="", status="401") == 1
    assert value(fams, "ccswitch_failovers", "ccswitch_failovers_total") == 1
    assert value(fams, "ccswitch_attempts", "ccswitch_attempts_total", upstream="a", outcome="http_529") == 1
    assert value(fams, "ccswitch_attempts", "ccswitch_attempts_total", upstream="a", outcome="ok") == 1
    assert value(fams, "ccswitch_attempts", "ccswitch_attempts_total", upstream="b", outcome="ok") == 1
    for kind, n in (("input", 1000), ("output", 200), ("cache_creation", 3000), ("cache_read", 50_000),
                    ("reasoning", 40)):
        assert value(fams, "ccswitch_tokens", "ccswitch_tokens_total", upstream="b", kind=kind) == n
    one = prices.cost("claude-sonnet-4-5", 1000, 200, 3000, 0, 50_000)
    assert value(fams, "ccswitch_cost_usd", "ccswitch_cost_usd_total", upstream="b") == pytest.approx(one)
    assert value(fams, "ccswitch_upstream_up", upstream="a") == 0
    assert value(fams, "ccswitch_upstream_up", upstream="b") == 1
    assert value(fams, "ccswitch_upstream_state", upstream="a", state="cooling") == 1
    assert value(fams, "ccswitch_upstream_utilization", upstream="b") == 0.25
    assert [s.labels for s in fams["ccswitch_upstream_utilization"].samples] == [{"upstream": "b"}]  # a: unknown
    assert value(fams, "ccswitch_upstream_sessions", upstream="b") == 1
    assert value(fams, "ccswitch_start_time_seconds") == NOON_ISH


def test_histograms_have_every_bucket_cumulative_up_to_inf_equal_to_count():
    text, _ = scrape()
    fams = families(text)
    for family, bounds in (("ccswitch_request_duration_seconds", DURATION_BUCKETS),
                           ("ccswitch_request_ttfb_seconds", TTFB_BUCKETS)):
        samples = fams[family].samples
        for upstream in ("a", "b", ""):
            labels = {"route": "claude", "upstream": upstream}
            buckets = [(s.labels["le"], s.value) for s in samples
                       if s.name == family + "_bucket" and {k: v for k, v in s.labels.items() if k != "le"} == labels]
            assert [le for le, _ in buckets] == [number(float(b)) for b in bounds] + ["+Inf"]
            counts = [n for _, n in buckets]
            assert counts == sorted(counts) and counts[-1] == value(fams, family, family + "_count", **labels) == 1
    assert value(fams, "ccswitch_request_duration_seconds", "ccswitch_request_duration_seconds_sum",
                 route="claude", upstream="b") == pytest.approx(1.0)
    duration_b = {s.labels["le"]: s.value for s in fams["ccswitch_request_duration_seconds"].samples
                  if s.name.endswith("_bucket") and s.labels["upstream"] == "b"}
    assert duration_b["0.5"] == 0 and duration_b["1.0"] == 1   # 1.0 s lies on a bound: in it
    ttfb_a = {s.labels["le"]: s.value for s in fams["ccswitch_request_ttfb_seconds"].samples
              if s.name.endswith("_bucket") and s.labels["upstream"] == "a"}
    assert ttfb_a["0.05"] == 0 and ttfb_a["0.1"] == 1


def test_no_key_text_in_the_metrics():
    text, _ = scrape()
    assert KEY_A not in text and KEY_B not in text and CLIENT_KEY not in text


def test_label_values_and_help_are_escaped():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_help("a\\b\nc") == "a\\\\b\\nc"
    board = LiveBoard(clock=lambda: NOON_ISH)
    board.requests[("claude", 'odd"name\\with\nbreak', "200")] = 2
    text = metrics_text(board, [])
    fams = families(text)
    assert value(fams, "ccswitch_requests", "ccswitch_requests_total", route="claude",
                 upstream='odd"name\\with\nbreak', status="200") == 2
    assert all(SAMPLE.match(line) for line in text.splitlines() if not line.startswith("#"))


def test_an_empty_board_still_declares_every_family_and_counts_zero_failovers():
    fams = families(metrics_text(LiveBoard(clock=lambda: NOON_ISH), []))
    assert {"ccswitch_requests", "ccswitch_attempts", "ccswitch_tokens", "ccswitch_cost_usd",
            "ccswitch_upstream_up", "ccswitch_request_duration_seconds", "ccswitch_request_ttfb_seconds"} <= set(fams)
    assert value(fams, "ccswitch_failovers", "ccswitch_failovers_total") == 0


@pytest.mark.parametrize("raw,text", [(3, "3"), (0.25, "0.25"), (float("inf"), "+Inf"), (True, "1"), (1e-7, "1e-07")])
def test_numbers(raw, text):
    assert number(raw) == text


def test_in_flight_gauges_name_every_route_even_at_nought_and_utilization_is_rounded():
    from ccswitch.vocab import Route
    from tests.support.helpers import make_job
    r = rules()
    quota = QuotaBoard(clock=lambda: NOON_ISH)
    quota.record("b", [("anthropic-ratelimit-unified-5h-utilization", "0.123456789"),
                       ("anthropic-ratelimit-unified-5h-reset", str(int(NOON_ISH + 600)))])
    now = datetime.fromtimestamp(NOON_ISH, ZoneInfo(TZ))
    views = upstream_views(r, HealthBoard(), quota, SessionBindings(), now)
    fams = families(metrics_text(LiveBoard(clock=lambda: NOON_ISH), views, [make_job(r)]))
    assert value(fams, "ccswitch_requests_in_flight", route="claude") == 1
    for route in Route:
        if str(route) != "claude":
            assert value(fams, "ccswitch_requests_in_flight", route=str(route)) == 0   # a series from the start
    assert value(fams, "ccswitch_upstream_utilization", upstream="b") == 0.123457


def test_the_ledger_and_the_shared_state_are_told_when_there_are_such():
    # an outage of either was only in the log: nothing to alert on, nor which instance it was
    from ccswitch.report.live_status import InstanceView
    board = LiveBoard(clock=lambda: NOON_ISH)
    troubled = InstanceView(host="h", pid=1, ledger="postgresql://ccswitch:***@db/ledger", ledger_waiting=12,
                            ledger_dropped=3, ledger_trouble="connection refused", state="Redis at redis://db:6379/0",
                            state_shared=True, state_up=False)
    fams = families(metrics_text(board, [], (), troubled))
    assert value(fams, "ccswitch_ledger_ok") == 0 and value(fams, "ccswitch_ledger_rows_waiting") == 12
    assert value(fams, "ccswitch_ledger_rows_dropped", "ccswitch_ledger_rows_dropped_total") == 3
    assert value(fams, "ccswitch_shared_state_up") == 0
    alone = families(metrics_text(board, [], (), InstanceView(host="h", pid=1, ledger=None)))
    assert not {"ccswitch_ledger_ok", "ccswitch_shared_state_up"} & set(alone)   # no ledger, state in memory
