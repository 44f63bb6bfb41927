"""Latency and time to first byte for the report: samples from the ledger and their p50 / p95.

Only successful answers are timed (an upstream answered, status < 400, no error): a refusal
ccswitch gave itself takes a millisecond and a client that left cuts its request short, and
either would drag the percentiles away from what a working request costs. ``latency_ms`` runs
from the request's start to the last byte sent to the client, ``ttfb_ms`` to the first (for a
stream: when it was committed); both are in the ledger's ``requests`` table.

Percentiles use the nearest-rank method: p of n sorted values is the ceil(p/100 * n)-th one, so
every figure shown is a time some request really took.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

QUANTILES = (50, 95)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``; None when there are none."""
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


@dataclass(frozen=True)
class Timing:
    """One successful request's times."""
    moment: datetime                    # request start, UTC
    upstream: str
    latency_ms: int
    ttfb_ms: int | None                 # None in a row that has no first-byte time


@dataclass(frozen=True)
class LatencyStats:
    """p50 and p95 of latency and of time to first byte over a set of requests (ms; None: no request)."""
    requests: int
    latency_p50: float | None
    latency_p95: float | None
    ttfb_p50: float | None
    ttfb_p95: float | None

    def to_dict(self) -> dict:
        return {"requests": self.requests, "latency_p50_ms": self.latency_p50, "latency_p95_ms": self.latency_p95,
                "ttfb_p50_ms": self.ttfb_p50, "ttfb_p95_ms": self.ttfb_p95}


def stats(timings: Iterable[Timing]) -> LatencyStats:
    timings = list(timings)
    latency = [t.latency_ms for t in timings]
    ttfb = [t.ttfb_ms for t in timings if t.ttfb_ms is not None]
    return LatencyStats(len(timings), percentile(latency, 50), percentile(latency, 95),
                        percentile(ttfb, 50), percentile(ttfb, 95))


class Timings:
    """The period's timed requests in time order, sliced by time span and upstream."""

    def __init__(self, timings: Iterable[Timing]):
        self._all = sorted(timings, key=lambda t: t.moment)
        self._moments = [t.moment for t in self._all]

    def __len__(self) -> int:
        return len(self._all)

    def between(self, start: datetime, end: datetime) -> list[Timing]:
        """The requests that started in [start, end) (aware datetimes, any zone)."""
        return self._all[bisect_left(self._moments, start):bisect_left(self._moments, end)]

    def upstreams(self) -> list[str]:
        """Upstreams with timed requests, busiest first."""
        counts: dict[str, int] = defaultdict(int)
        for t in self._all:
            counts[t.upstream] += 1
        return sorted(counts, key=lambda u: (-counts[u], u))

    @staticmethod
    def by_upstream(timings: Iterable[Timing]) -> dict[str, LatencyStats]:
        groups: dict[str, list[Timing]] = defaultdict(list)
        for t in timings:
            groups[t.upstream].append(t)
        return {name: stats(group) for name, group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))}

    def overall(self) -> list[Timing]:
        return list(self._all)
