#!/usr/bin/env python3
"""Scale-out benchmark: ccswitch with its state shared through Redis (and, where configured, its
ledger in PostgreSQL) against the embedded defaults (in memory, SQLite), in the same run, against
the same mock upstream (its own process); then how stale another instance can be.

Each configuration is one mitmdump with the same route (`claude: [a, b]`, sticky sessions) and a
priced model, so every request binds a session, counts spend and writes a ledger row — the
work the shared state and the ledger take on.  Figures:

* latency p50 / p99 of small non-streamed requests, sequential, the configurations interleaved
  (one request to each in turn, so they share the machine's noise), 50 cycling sessions;
* throughput: concurrent clients for a fixed time, one configuration after the other;
* staleness (Redis): two instances on one Redis; each sample a new session bound on the first
  (a failover, so it is news), timed from its answer at the client until the second instance's
  /_ccswitch/status.json shows it — idle, and under load through both; plus what the second
  instance measured itself (a change's time on the first to its application, from its log).

    python scripts/bench_scaleout.py            # about 2 minutes on 2 cores
    python scripts/bench_scaleout.py --quick    # a smoke run

It starts its own throwaway redis-server and PostgreSQL cluster (Debian's `redis-server` and
`postgresql` must be installed; the PostgreSQL configurations need the `postgres` extra).
Configurations are listed in CONFIGS: a name and the rules lines it adds (given the servers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.postgres_cluster import Cluster  # noqa: E402
from tests.support.proxy_process import Proxy  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.scale_out import (  # noqa: E402
    BODY,
    HEADERS,
    LOAD_MODEL,
    ask,
    binding_staleness,
    client,
    instances,
    percentile,
    upstream_view,
)

MOCK_SERVER = """
import sys, time
sys.path.insert(0, {repo!r})
from tests.support.mock_upstream import MockUpstream
mocks = [MockUpstream(name) for name in ("A", "B")]
for mock in mocks:
    mock.record = False
    mock.start()
print(*(m.port for m in mocks), flush=True)
time.sleep(3600)
"""


@dataclass
class Servers:
    redis: str                 # a Redis URL
    postgres: str              # a PostgreSQL URL (a throwaway cluster with the server's durable defaults)


#: name -> the rules lines the configuration adds (in memory + SQLite is the embedded default)
CONFIGS: dict[str, Callable[[Servers], str]] = {
    "in memory + SQLite": lambda s: "",
    "Redis state + SQLite": lambda s: f"state: {s.redis}\n",
    "in memory + PostgreSQL ledger": lambda s: f"usage_db: {s.postgres}\n",
    "Redis state + PostgreSQL ledger": lambda s: f"state: {s.redis}\nusage_db: {s.postgres}\n",
}


class Mock:
    """Two mock upstreams (a, b) in a process of their own; a scriptable pair for staleness."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", MOCK_SERVER.format(repo=str(REPO))],
                                     stdout=subprocess.PIPE, text=True)
        self.ports = [int(p) for p in self.proc.stdout.readline().split()]

    def rules(self, extra: str) -> str:
        a, b = (f"http://127.0.0.1:{p}" for p in self.ports)
        return (f"timezone: UTC\n{extra}failover: {{threshold: 1000000}}\nupstreams:\n"
                f"  - {{name: a, protocol: anthropic, base_url: '{a}', api_key: 'sk-bench-fake-a'}}\n"
                f"  - {{name: b, protocol: anthropic, base_url: '{b}', api_key: 'sk-bench-fake-b'}}\n"
                f"routes: {{claude: [a, b]}}\n")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def post(http: httpx.Client, proxy: Proxy, session: str, body: dict = BODY) -> float:
    started = time.perf_counter()
    r = http.post(proxy.reverse_url + "/v1/messages", json=body,
                  headers={**HEADERS, "x-api-key": "sk-any", "x-ccswitch-session": session})
    r.raise_for_status()
    return (time.perf_counter() - started) * 1000


def latencies(proxies: dict[str, Proxy], count: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {name: [] for name in proxies}
    sessions = itertools.cycle([f"bench-{i}" for i in range(50)])
    with client() as http:
        for proxy in proxies.values():               # warm-up: connections, first bindings
            for _ in range(20):
                post(http, proxy, next(sessions))
        for _ in range(count):
            session = next(sessions)
            for name, proxy in proxies.items():
                found[name].append(post(http, proxy, session))
    return found


async def _throughput(proxy: Proxy, concurrency: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=60, trust_env=False,
                                 limits=httpx.Limits(max_connections=concurrency)) as http:
        async def worker(index: int) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                r = await http.post(proxy.reverse_url + "/v1/messages", json=BODY,
                                    headers={**HEADERS, "x-api-key": "sk-any", "x-ccswitch-session": f"t-{done % 50}"})
                r.raise_for_status()
                done += 1
        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return done / (time.perf_counter() - started)


def throughputs(proxies: dict[str, Proxy], concurrency: int, seconds: float, rounds: int = 4) -> dict[str, float]:
    """Requests per second of each, in `rounds` alternating runs (so they share the machine's noise)."""
    rates: dict[str, list[float]] = {name: [] for name in proxies}
    for _ in range(rounds):
        for name, proxy in proxies.items():
            rates[name].append(asyncio.run(_throughput(proxy, concurrency, seconds / rounds)))
    return {name: sum(values) / len(values) for name, values in rates.items()}


class Background:
    """Load through both instances while the staleness is sampled."""

    def __init__(self, proxies: list[Proxy], concurrency: int) -> None:
        self.proxies, self.concurrency = proxies, concurrency
        self.stop_flag = threading.Event()
        self.done = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(concurrency)]

    def _run(self, index: int) -> None:
        with client() as http:
            while not self.stop_flag.is_set():
                post(http, self.proxies[index % len(self.proxies)], f"load-{self.done % 50}",
                     {**BODY, "model": LOAD_MODEL})
                self.done += 1

    def __enter__(self) -> Background:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(30)


def staleness(workdir: Path, redis_url: str, samples: int, load: int) -> dict[str, dict]:
    """Per phase (idle, under load; a fresh pair of instances each): the polled samples, the
    load's rate, and what the second instance measured itself (from its log at shutdown)."""
    from tests.support.mock_upstream import MockUpstream
    from tests.support.scale_out import shared_rules
    out: dict[str, dict] = {}
    for phase, clients in (("idle", 0), ("under load", load)):
        home = workdir / phase.replace(" ", "-")
        home.mkdir()
        with MockUpstream("A") as mock_a, MockUpstream("B") as mock_b, MockUpstream("L") as mock_load, \
                client() as http:
            mock_a.record = mock_b.record = mock_load.record = False
            with instances(shared_rules(mock_a, mock_b, redis_url, load=mock_load), home) as (one, two):
                ask(http, one)
                upstream_view(http, two, "b")
                with Background([one, two], clients) as background:
                    started = time.perf_counter()
                    polled = binding_staleness(http, one, two, mock_a, samples)
                    rate = background.done / (time.perf_counter() - started)
        said = re.findall(r"staleness p50 ([\d.]+) ms, p99 ([\d.]+) ms", two.log())
        out[phase] = {"polled": polled, "rate": rate,
                      "measured": f"p50 {said[-1][0]} ms, p99 {said[-1][1]} ms" if said else "not logged"}
    return out


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster on loopback with fsync and synchronous commit on, as a
    production server has them (the SQLite ledger's WAL is not synced at each commit either, but
    a PostgreSQL commit a client was told of must survive)."""
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="ccswitch-bench-pg-")), throwaway=False).start()
    try:
        yield cluster
    finally:
        cluster.remove()


def sqlite_rows(proxy: Proxy) -> int:
    import sqlite3
    with contextlib.closing(sqlite3.connect(proxy.usage_db)) as conn:
        return conn.execute("SELECT count(*) FROM requests").fetchone()[0]


def ledger_rows(postgres: Cluster) -> int:
    """Requests the PostgreSQL configurations wrote (every one answered must be there)."""
    import psycopg
    with psycopg.connect(postgres.url) as conn:
        return conn.execute("SELECT count(*) FROM requests").fetchone()[0]


def row(name: str, values: list[str], width: int = 24) -> str:
    return f"{name:<34}" + "".join(f"{v:>{width}}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="latency samples per configuration")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each throughput run")
    parser.add_argument("--concurrency", type=int, default=32, help="clients in the throughput run")
    parser.add_argument("--samples", type=int, default=200, help="staleness samples, idle and under load each")
    parser.add_argument("--load", type=int, default=8, help="clients loading both instances meanwhile")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.seconds, args.samples = 60, 2.0, 20

    with tempfile.TemporaryDirectory(prefix="ccswitch-bench-scaleout-") as tmp, RedisServer() as redis, \
            postgres_cluster() as postgres:
        workdir = Path(tmp)
        servers = Servers(redis=redis.url(), postgres=postgres.url)
        mock = Mock()
        proxies: dict[str, Proxy] = {}
        try:
            for index, (name, extra) in enumerate(CONFIGS.items()):
                home = workdir / f"config-{index}"
                home.mkdir()
                rules = home / "rules.yaml"
                rules.write_text(mock.rules(extra(servers)))
                proxies[name] = Proxy(rules, home, extra_args=("--set", "flow_detail=0")).start()
            ms = latencies(proxies, args.requests)
            rates = throughputs(proxies, args.concurrency, args.seconds)
        finally:
            for proxy in proxies.values():
                proxy.stop()
            mock.stop()
        base = next(iter(CONFIGS))
        print(f"ccswitch scale-out benchmark ({args.requests} sequential requests per configuration, "
              f"interleaved; throughput with {args.concurrency} clients for {args.seconds:.0f} s each)\n")
        print(row("", ["latency p50 (ms)", "latency p99 (ms)", "throughput (req/s)", "p50, throughput vs first"],
                  26))
        for name in CONFIGS:
            p50, p99 = percentile(ms[name], 0.5), percentile(ms[name], 0.99)
            ratio = f"{p50 / percentile(ms[base], 0.5):.2f}x, {rates[name] / rates[base]:.2f}x"
            print(row(name, [f"{p50:.2f}", f"{p99:.2f}", f"{rates[name]:.0f}", ratio], 26))
        print(f"\nledger rows after shutdown: {base}: {sqlite_rows(proxies[base])}; "
              f"the PostgreSQL configurations together: {ledger_rows(postgres)}")
        from bench_inprocess import ledger_rows_per_second
        print(f"ledger writer in process (a burst of 50,000 rows, batches of 500): SQLite "
              f"{ledger_rows_per_second():,.0f} rows/s, PostgreSQL {ledger_rows_per_second(usage_db=postgres.url):,.0f} "
              "rows/s")

        redis.flush()
        found = staleness(workdir, redis.url(), args.samples, args.load)
        print(f"\nstaleness: a session bound on one instance until the other instance's status.json shows it, "
              f"polled ({args.samples} samples; includes reading status.json); and a change's time on the first "
              f"to its application on the second, as the second measured it (every message it applied)")
        for phase, figures in found.items():
            values = [v * 1000 for v in figures["polled"]]
            load = f" ({args.load} clients through both, {figures['rate']:.0f} req/s)" if phase != "idle" else ""
            print(f"  {phase + load}:\n    polled     p50 {percentile(values, 0.5):6.2f} ms   p99 "
                  f"{percentile(values, 0.99):6.2f} ms   max {max(values):6.2f} ms\n"
                  f"    measured   {figures['measured']}")


if __name__ == "__main__":
    main()
