"""`/_ccswitch/metrics`: the live counters in the Prometheus text exposition format 0.0.4.

Counters count since ccswitch started (in memory: a restart starts them at 0, which Prometheus'
`rate()` and `increase()` handle); gauges are read when scraped.  Label values are upstream
names from the rules, route names, status codes and a small fixed vocabulary of outcomes and
states: never a client's model or any other text a client chooses.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from ccswitch.dial.job import Job
from ccswitch.report.live import Histogram, LiveBoard
from ccswitch.report.live_status import STATES, InstanceView, UpstreamView
from ccswitch.vocab import Route

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label(str(value))}"' for name, value in labels.items()) + "}"


class Exposition:
    """Metric families in order, each with its HELP and TYPE lines once, before its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {number(value)}")

    def histogram(self, name: str, help_text: str, series: dict[tuple[str, str], Histogram],
                  label_names: tuple[str, str]) -> None:
        self.lines.append(f"# HELP {name} {escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} histogram")
        for key in sorted(series):
            hist = series[key]
            labels = dict(zip(label_names, key, strict=True))
            for bound, count in hist.cumulative():
                self.lines.append(f"{name}_bucket{_labels({**labels, 'le': number(float(bound))})} {count}")
            self.lines.append(f"{name}_sum{_labels(labels)} {number(float(hist.sum))}")
            self.lines.append(f"{name}_count{_labels(labels)} {hist.count}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def metrics_text(board: LiveBoard, views: list[UpstreamView], running: Sequence[Job] = (),
                 instance: InstanceView | None = None) -> str:
    """`running`: the requests under way; `instance`: its ledger and shared state."""
    out = Exposition()
    out.family("ccswitch_requests_total", "counter",
               "Client requests finished since ccswitch started, by route, the upstream that answered "
               "(empty when none did: ccswitch answered itself, or the client left first) and the status "
               "the client got.",
               ((dict(route=r, upstream=u, status=s), n) for (r, u, s), n in sorted(board.requests.items())))
    out.family("ccswitch_failovers_total", "counter",
               "Requests that took more than one upstream attempt.", [({}, board.failovers)])
    out.family("ccswitch_attempts_total", "counter",
               "Upstream attempts by outcome: ok, http_<status>, stream_error (a 2xx that failed: an "
               "error event, a cut or silent stream, an answer not in the protocol), network (no status), "
               "client_closed.",
               ((dict(upstream=u, outcome=o), n) for (u, o), n in sorted(board.attempts.items())))
    out.family("ccswitch_tokens_total", "counter",
               "Tokens of the answers clients got, by upstream and kind (input: uncached prompt; "
               "reasoning is part of output).",
               ((dict(upstream=u, kind=k), n) for (u, k), n in sorted(board.tokens.items())))
    out.family("ccswitch_cost_usd_total", "counter",
               "USD at the report's prices (list price x the upstream's price_multiplier); "
               "models without a known price are left out (see ccswitch_unpriced_tokens_total).",
               ((dict(upstream=u), usd) for u, usd in sorted(board.cost.items())))
    out.family("ccswitch_unpriced_tokens_total", "counter",
               "Tokens of models with no known price, not in ccswitch_cost_usd_total.",
               ((dict(upstream=u), n) for u, n in sorted(board.unpriced.items())))
    routes = Counter(str(job.request.route) for job in running)
    out.family("ccswitch_requests_in_flight", "gauge",
               "Client requests under way (not yet in ccswitch_requests_total), by route.",
               ((dict(route=r), routes.get(r, 0)) for r in (str(route) for route in Route)))
    out.family("ccswitch_upstream_in_flight", "gauge",
               "Requests whose attempt on the upstream is under way.",
               ((dict(upstream=v.name), v.in_flight) for v in views))
    out.family("ccswitch_upstream_connections", "gauge",
               "ccswitch's connections to the upstream: open, and requests waiting for one (its "
               "max_connections reached).",
               ((dict(upstream=v.name, state=state), count) for v in views
                for state, count in zip(("open", "waiting"), v.connections, strict=True)))
    out.family("ccswitch_upstream_up", "gauge",
               "1 if the upstream takes requests now; 0 if it is cooling down, full, over its budget, "
               "disabled or outside its days or hours.", ((dict(upstream=v.name), int(v.up)) for v in views))
    out.family("ccswitch_upstream_state", "gauge",
               "1 for the upstream's current state: " + ", ".join(STATES) + ".",
               ((dict(upstream=v.name, state=v.state), 1) for v in views))
    out.family("ccswitch_upstream_utilization", "gauge",
               "The upstream's highest live rate-limit window utilization (0..1), from its response "
               "headers; absent while unknown.",
               ((dict(upstream=v.name), round(v.utilization, 6)) for v in views if v.utilization is not None))
    out.family("ccswitch_upstream_sessions", "gauge", "Client sessions bound to the upstream.",
               ((dict(upstream=v.name), v.sessions) for v in views))
    out.histogram("ccswitch_request_duration_seconds",
                  "Time from a client request to the end of its answer, by route and upstream.",
                  board.duration, ("route", "upstream"))
    out.histogram("ccswitch_request_ttfb_seconds",
                  "Time from a client request to the first byte of its answer, by route and upstream.",
                  board.ttfb, ("route", "upstream"))
    out.family("ccswitch_start_time_seconds", "gauge", "When ccswitch started, in Unix seconds.",
               [({}, float(board.started))])
    if instance is not None:
        _instance_families(out, instance)
    return out.text()


def _instance_families(out: Exposition, instance: InstanceView) -> None:
    if instance.ledger is not None:
        out.family("ccswitch_ledger_ok", "gauge",
                   "1 while the usage ledger takes rows; 0 while its database refuses them or a write hangs "
                   "(the rows wait in memory, see ccswitch_ledger_rows_waiting).",
                   [({}, int(instance.ledger_trouble is None))])
        out.family("ccswitch_ledger_rows_waiting", "gauge", "Usage rows in memory, not yet written.",
                   [({}, instance.ledger_waiting)])
        out.family("ccswitch_ledger_rows_dropped_total", "counter",
                   "Usage rows lost: the buffer full during an outage, or a row the database refused.",
                   [({}, instance.ledger_dropped)])
    if instance.state_shared:
        out.family("ccswitch_shared_state_up", "gauge",
                   "1 while the shared state (Redis) is reachable; 0 while this instance serves on its own memory.",
                   [({}, int(instance.state_up))])
