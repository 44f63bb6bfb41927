#!/usr/bin/env python3
"""ccswitch's benchmark: one command, one run, every target side by side.

All on loopback, against the same fast mock upstream (keep-alive, TCP_NODELAY,
its own process): direct; a bare `mitmdump` in reverse mode (no addon,
`stream_large_bodies=1` so it streams too); ccswitch in reverse mode; ccswitch
through HTTPS_PROXY (CONNECT + TLS interception); LiteLLM's proxy is listed when
installed (`--litellm PATH`, or a `litellm` on PATH; it is best kept in a venv of its
own: `python -m venv /tmp/litellm && /tmp/litellm/bin/pip install 'litellm[proxy]'`).
Prints each figure with its ratio to bare mitmdump; then the routing pair
(scripts/bench_routing.py): small non-streamed latency through ccswitch with a
`strategy: quota, sticky: 1h` route and 50 cycling sessions against ccswitch with a
plain priority route and none, interleaved, against the same mock answering with
rate-limit headers, with their ratio; then in-process figures (converter and
ledger throughput); then the concurrent-streams figure (scripts/bench_streams.py: N
clients ramped over 3 s, each one stream of 50 events; proxy CPU, peak RSS, completed
streams, the worst gap between events) for fresh bare mitmdump and ccswitch processes, in
alternating rounds (two by default: one round's ratio moves by ±0.1x on a shared machine).

    python scripts/bench.py                  # about 6 minutes on 2 cores
    python scripts/bench.py --quick          # a smoke run
    python scripts/bench.py --streams 1000 --streams-only   # only the concurrent-streams figure
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts import bench_routing, bench_streams  # noqa: E402
from tests.support.proxy_process import MITMDUMP, Proxy, free_port  # noqa: E402

MOCK_SERVER = """
import sys, time
sys.path.insert(0, {repo!r})
from tests.support.mock_upstream import MockUpstream, ok as answer, slow_stream, status
from scripts.bench_routing import UTILIZATION, rate_limit_headers
ok = MockUpstream("bench", text="ok")
ok.record = False
ok.by_model = {{"stream-paced": slow_stream(20, 0.005), "stream-flood": slow_stream({flood}, 0)}}
ok.start()
failing = MockUpstream("failing")
failing.record = False
failing.default = status(503)
failing.start()
limited = {{}}
for name, used in UTILIZATION.items():    # the routing pair's upstreams: answers carry rate-limit headers
    limited[name] = MockUpstream(name, text="ok")
    limited[name].record = False
    limited[name].default = answer(headers=rate_limit_headers(used, time.time()))
    limited[name].start()
print(ok.port, failing.port, *(f"{{n}}={{m.port}}" for n, m in limited.items()), flush=True)
time.sleep(3600)
"""
ROUNDS = 3   # throughput and CPU are measured in this many alternating rounds per target
HEADERS = {"x-api-key": "sk-client-bench", "anthropic-version": "2023-06-01"}
BASE_BODY = {"max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


class Target:
    def __init__(self, name: str, base: str, pid: int | None = None, proxy: str | None = None,
                 verify: ssl.SSLContext | bool = True) -> None:
        self.name, self.base, self.pid, self.proxy, self.verify = name, base, pid, proxy, verify

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(timeout=60, trust_env=False, proxy=self.proxy, verify=self.verify, **kw)

    def async_client(self, **kw) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=60, trust_env=False, proxy=self.proxy, verify=self.verify, **kw)


# ---------------------------------------------------------------------- processes

def start_mock(flood: int) -> tuple[subprocess.Popen, int, int, dict[str, int]]:
    """(process, the bench port, the failing port, the routing pair's ports by upstream name)."""
    code = MOCK_SERVER.format(repo=str(REPO), flood=flood)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    ok_port, failing_port, *limited = proc.stdout.readline().split()
    pair_ports = {name: int(port) for name, port in (item.split("=") for item in limited)}
    return proc, int(ok_port), int(failing_port), pair_ports


def start_bare(mock_port: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(workdir / "bare.log", "wb")
    proc = subprocess.Popen([str(MITMDUMP), "--mode", f"reverse:http://127.0.0.1:{mock_port}@127.0.0.1:{port}",
                             "--set", "stream_large_bodies=1", "--set", f"confdir={workdir / 'bare-conf'}",
                             "--set", "termlog_verbosity=error", "--set", "flow_detail=0"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("bare mitmdump did not start")


def start_ccswitch(mock_port: int, failing_port: int, workdir: Path, *extra: str) -> Proxy:
    """Model `failover-*` meets the failing upstream first; every other model goes straight on."""
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "rules.yaml"
    rules.write_text(f"""
failover: {{threshold: 1000000}}
upstreams:
  - {{name: failing, protocol: anthropic, base_url: 'http://127.0.0.1:{failing_port}', api_key: 'sk-bench-fake-1',
     only_models: ["failover-*"]}}
  - {{name: bench, protocol: anthropic, base_url: 'http://127.0.0.1:{mock_port}', api_key: 'sk-bench-fake-2'}}
routes: {{claude: [failing, bench]}}
""")
    # as shipped: without the tests' loopback guard, an addon of its own that mitmproxy would
    # call on every hook (0.3 ms of CPU per small request); every upstream above is on loopback;
    # quiet like bare mitmdump above, which prints no line per connection either
    return Proxy(rules, workdir, extra_args=("--set", "flow_detail=0", *extra), guard=False, quiet=True).start()


def find_litellm(given: str | None) -> str | None:
    if given:
        return given
    beside = Path(sys.executable).parent / "litellm"
    return str(beside) if beside.exists() else shutil.which("litellm")


def start_litellm(executable: str, mock_port: int, workdir: Path) -> tuple[subprocess.Popen, str, str]:
    """LiteLLM's proxy in front of the same mock, as an Anthropic provider; (process, URL, version)."""
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(f"""
model_list:
  - model_name: "*"
    litellm_params: {{model: "anthropic/*", api_base: "http://127.0.0.1:{mock_port}", api_key: "sk-bench-fake-3"}}
""")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",   # no fetch from the internet
           "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true", "NO_PROXY": "*"}
    log = open(workdir / "litellm.log", "wb")
    proc = subprocess.Popen([executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    version = subprocess.run([str(Path(executable).parent / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True).stdout.strip() or "?"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"LiteLLM exited; see {workdir / 'litellm.log'}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1)
            return proc, f"http://127.0.0.1:{port}", version
        except httpx.HTTPError:
            time.sleep(0.25)
    proc.terminate()
    raise RuntimeError("LiteLLM did not start within 120 s")


# ---------------------------------------------------------------------- measurements

def post_plain(client: httpx.Client, target: Target, model: str = "small") -> float:
    start = time.perf_counter()
    r = client.post(target.base + "/v1/messages", json={**BASE_BODY, "model": model}, headers=HEADERS)
    r.raise_for_status()
    return (time.perf_counter() - start) * 1000


def post_stream(client: httpx.Client, target: Target, model: str) -> tuple[float, float, int]:
    """(ms to the first content event, ms in all, content events)."""
    start = time.perf_counter()
    first, events = None, 0
    with client.stream("POST", target.base + "/v1/messages", json={**BASE_BODY, "model": model, "stream": True},
                       headers=HEADERS) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data:") and '"content_block_delta"' in line:
                events += 1
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    return (first - start) * 1000, (end - start) * 1000, events


async def _throughput(target: Target, concurrency: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds
    async with target.async_client(limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                r = await client.post(target.base + "/v1/messages", json={**BASE_BODY, "model": "small"},
                                      headers=HEADERS)
                r.raise_for_status()
                done += 1
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def throughput(target: Target, concurrency: int, seconds: float) -> float:
    return asyncio.run(_throughput(target, concurrency, seconds))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------------- the run

def measure(targets: list[Target], args) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {t.name: {} for t in targets}
    clients = {t.name: t.client() for t in targets}
    for t in targets:                                    # warm connections, caches, imports
        for _ in range(20):
            post_plain(clients[t.name], t)
            post_stream(clients[t.name], t, "stream-paced")
    plain = {t.name: [] for t in targets}
    ttfc = {t.name: [] for t in targets}
    for _ in range(args.requests):                       # interleaved: drift hits every target alike
        for t in targets:
            plain[t.name].append(post_plain(clients[t.name], t))
            ttfc[t.name].append(post_stream(clients[t.name], t, "stream-paced")[0])
    for t in targets:
        f = figures[t.name]
        f["latency p50 (ms)"], f["latency p99 (ms)"] = pct(plain[t.name], 0.5), pct(plain[t.name], 0.99)
        if t.name != "direct":   # what the proxy adds over the mock's own answer
            f["added latency p50 (ms)"] = f["latency p50 (ms)"] - pct(plain["direct"], 0.5)
        f["first content p50 (ms)"], f["first content p99 (ms)"] = pct(ttfc[t.name], 0.5), pct(ttfc[t.name], 0.99)
        _, total, events = post_stream(clients[t.name], t, "stream-flood")
        f["streamed events/s"] = events / (total / 1000)
    for c in (1, 16, 64):
        # in alternating rounds, like the latency samples: a machine that slows down for a while
        # slows every target alike instead of whichever ran then
        rates = [throughput(t, c, args.seconds / ROUNDS) for _ in range(ROUNDS) for t in targets]
        for i, t in enumerate(targets):
            figures[t.name][f"throughput c={c} (req/s)"] = sum(rates[i::len(targets)]) / ROUNDS
    for t in targets:
        if t.name.startswith("ccswitch"):
            plain_first, failover_first = [], []
            for _ in range(args.requests // 2):           # the same reply, with and without a 503 first
                plain_first.append(post_stream(clients[t.name], t, "plain-x")[0])
                failover_first.append(post_stream(clients[t.name], t, "failover-x")[0])
            figures[t.name]["same reply, no failover, first content p50 (ms)"] = pct(plain_first, 0.5)
            figures[t.name]["failover first content p50 (ms)"] = pct(failover_first, 0.5)
    processes = [t for t in targets if t.pid is not None]   # memory and CPU of the proxy processes
    warm, per_round = args.memory_requests // 10, args.memory_requests * 9 // 10 // ROUNDS
    for t in processes:
        for _ in range(warm):
            post_plain(clients[t.name], t)
        figures[t.name]["RSS after 1k-scale (MB)"] = rss_kb(t.pid) / 1024
    cpu = dict.fromkeys((t.name for t in processes), 0.0)
    for _ in range(ROUNDS):                              # the CPU in alternating rounds too
        for t in processes:
            cpu0 = cpu_seconds(t.pid)
            for _ in range(per_round):
                post_plain(clients[t.name], t)
            cpu[t.name] += cpu_seconds(t.pid) - cpu0
    for t in processes:
        f = figures[t.name]
        f["RSS after 10k-scale (MB)"] = rss_kb(t.pid) / 1024
        f["CPU s / 1000 requests"] = cpu[t.name] / (per_round * ROUNDS / 1000)
        f["RSS growth (%)"] = 100 * (f["RSS after 10k-scale (MB)"] / f["RSS after 1k-scale (MB)"] - 1)
    for c in clients.values():
        c.close()
    return figures


def table(figures: dict[str, dict[str, float]], baseline: str = "bare mitmdump", short: str = "bare") -> str:
    """One column per target, then each ccswitch target (other than the baseline) over the baseline."""
    names = list(figures)
    metrics = list(dict.fromkeys(m for f in figures.values() for m in f))
    compared = [n for n in names if n.startswith("ccswitch") and n != baseline]
    rows = [("figure", *names, *(f"{n} / {short}" for n in compared))]
    for m in metrics:
        cells = [f"{figures[n][m]:,.2f}" if m in figures[n] else "-" for n in names]
        ratios = []
        for n in compared:
            base, value = figures[baseline].get(m), figures[n].get(m)
            ratios.append(f"{value / base:.2f}x" if base and value is not None else "-")
        rows.append((m, *cells, *ratios))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def verdicts(figures: dict[str, dict[str, float]]) -> list[str]:
    bare, cc = figures["bare mitmdump"], figures["ccswitch reverse"]
    checks = [
        ("added p50 latency <= 1.25x bare", cc["added latency p50 (ms)"] <= 1.25 * bare["added latency p50 (ms)"]),
        ("first content p50 <= bare + 3 ms", cc["first content p50 (ms)"] <= bare["first content p50 (ms)"] + 3),
        *((f"throughput c={c} >= 0.9x bare",
           cc[f"throughput c={c} (req/s)"] >= 0.9 * bare[f"throughput c={c} (req/s)"]) for c in (1, 16)),
        ("RSS growth 1k -> 10k < 10%", cc["RSS growth (%)"] < 10),
    ]
    return [f"  {'met   ' if ok else 'MISSED'} {name}" for name, ok in checks]


def routing_figures(ms: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"latency p50 (ms)": pct(values, 0.5), "latency p99 (ms)": pct(values, 0.99)}
            for name, values in ms.items()}


def in_process_figures() -> list[str]:
    from bench_inprocess import converter_events_per_second, judged_events_per_second, ledger_rows_per_second
    kinds = (("anthropic", "Anthropic"), ("openai-responses", "Responses"))
    lines = [f"pump, {label} as is: {judged_events_per_second(p):,.0f} SSE events/s on one core" for p, label in kinds]
    lines += [f"converter {label} -> Chat: {converter_events_per_second(p):,.0f} SSE events/s on one core"
              for p, label in kinds]
    lines.append(f"ledger writer: {ledger_rows_per_second():,.0f} rows/s (one thread, WAL, batches of 500)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="latency samples per target")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    parser.add_argument("--memory-requests", type=int, default=10_000, help="requests for the RSS/CPU figures")
    parser.add_argument("--routing-requests", type=int, default=1000,
                        help="latency samples per side of the routing pair (quota+sticky vs priority)")
    parser.add_argument("--flood", type=int, default=5000, help="events in the streamed-throughput reply")
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streaming clients (0: no such figure)")
    parser.add_argument("--streams-only", action="store_true", help="only the concurrent-streams figure")
    parser.add_argument("--stream-rounds", type=int, default=2,
                        help="alternating rounds of the concurrent-streams figure (fresh proxies each)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--litellm", help="LiteLLM's `litellm` executable (default: beside this Python, "
                                          "else on PATH; absent: not compared)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.seconds, args.memory_requests, args.flood = 20, 0.5, 500, 500
        args.routing_requests, args.streams, args.stream_rounds = 200, min(args.streams, 100), 1
    if args.streams_only:
        return print_streams(args.streams, args.stream_rounds)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        mock, mock_port, failing_port, pair_ports = start_mock(args.flood)
        bare = proxy = litellm = None
        pair: tuple[Proxy, ...] = ()
        litellm_exe, litellm_note = find_litellm(args.litellm), "not installed"
        try:
            bare, bare_url = start_bare(mock_port, workdir)
            proxy = start_ccswitch(mock_port, failing_port, workdir / "ccswitch")
            pair = bench_routing.start_pair(pair_ports, workdir)
            trust = ssl.create_default_context(cafile=str(proxy.ca_cert))
            targets = [
                Target("direct", f"http://127.0.0.1:{mock_port}"),
                Target("bare mitmdump", bare_url, bare.pid),
                Target("ccswitch reverse", proxy.reverse_url, proxy.proc.pid),
                Target("ccswitch HTTPS_PROXY", "https://api.anthropic.com", None, proxy.proxy_url, trust),
            ]
            if litellm_exe:
                litellm, litellm_url, version = start_litellm(litellm_exe, mock_port, workdir)
                targets.append(Target("LiteLLM proxy", litellm_url, litellm.pid))
                litellm_note = f"LiteLLM {version} ({litellm_exe}), Anthropic provider, same mock"
            started = time.time()
            figures = measure(targets, args)
            pair_samples = bench_routing.sample_pair(pair[0].reverse_url, pair[1].reverse_url,
                                                     args.routing_requests, HEADERS, {**BASE_BODY, "model": "small"})
        finally:                                         # never leave a mock or a proxy behind
            for process in (proxy, *pair):
                if process is not None:
                    process.stop()
            for process in (bare, litellm):
                if process is not None:
                    process.terminate()
            mock.terminate()
        affinity = bench_routing.session_affinity(pair[1].usage_db)   # written out by the stop above
    print(f"ccswitch benchmark, {time.strftime('%Y-%m-%d')}, {args.requests} latency samples per target, "
          f"{args.memory_requests} requests for memory/CPU ({time.time() - started:.0f} s)")
    print(table(figures))
    print(f"LiteLLM proxy: {litellm_note}")
    print("targets (ccswitch reverse vs bare mitmdump, same run):")
    print("\n".join(verdicts(figures)))
    print(f"routing decision, {args.routing_requests} interleaved samples per side, same run "
          f"(two ccswitch reverse processes, the same mock answering with rate-limit headers):")
    print(table(routing_figures(pair_samples.ms), baseline=bench_routing.PRIORITY, short="priority"))
    print("\n".join(bench_routing.describe(pair_samples.served, affinity)))
    print("\n".join(in_process_figures()))
    if args.streams:
        print_streams(args.streams, args.stream_rounds)


def print_streams(streams: int, rounds: int) -> None:
    plan = bench_streams.Plan(streams)
    with tempfile.TemporaryDirectory() as tmp:
        figures, notes = bench_streams.run(
            plan, lambda port, workdir: start_bare(port, workdir),
            lambda port, workdir: start_ccswitch(port, free_port(), workdir), Path(tmp), rounds)
    print(f"{streams} concurrent streams ({plan.events} events {plan.gap} s apart each, clients ramped over "
          f"{plan.ramp} s; fresh proxies, {rounds} alternating round(s), same run; CPU and RSS: means):")
    print(table(figures))
    print("\n".join(notes + bench_streams.verdicts(figures[bench_streams.BARE], figures[bench_streams.CCSWITCH],
                                                   streams)))


if __name__ == "__main__":
    main()
