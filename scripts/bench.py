#!/usr/bin/env python3
"""Side-by-side latency benchmark: direct vs bare mitmdump vs ccswitch, one run.

Everything runs on loopback: a mock upstream in its own process, a bare
`mitmdump` in reverse mode (`stream_large_bodies=1`, so it streams too) and
ccswitch's `mitmdump -s addon.py` in reverse mode, all pointing at the same mock.
Prints p50/p99 of time to the first content event and of total latency for a
streamed request, and of total latency for a small non-streamed request, with
each figure's ratio to bare mitmdump.

    python scripts/bench.py [--requests 200] [--events 20] [--interval 0.005]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from proxy_process import MITMDUMP, Proxy, free_port  # noqa: E402

MOCK_SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from mock_upstream import MockUpstream, slow_stream
m = MockUpstream("bench")
m.default = slow_stream({events}, {interval})
m.start()
print(m.port, flush=True)
time.sleep(3600)
"""


def start_mock(events: int, interval: float) -> tuple[subprocess.Popen, int]:
    code = MOCK_SERVER.format(tests=str(REPO / "tests"), events=events, interval=interval)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def start_bare(mock_port: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(workdir / "bare.log", "wb")
    proc = subprocess.Popen([str(MITMDUMP), "--mode", f"reverse:http://127.0.0.1:{mock_port}@127.0.0.1:{port}",
                             "--set", "stream_large_bodies=1", "--set", f"confdir={workdir / 'bare-conf'}",
                             "--set", "termlog_verbosity=error", "--set", "flow_detail=0"],
                            stdout=log, stderr=subprocess.STDOUT)
    _wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def start_ccswitch(mock_port: int, workdir: Path) -> Proxy:
    rules = workdir / "rules.yaml"
    rules.write_text(f"""
upstreams:
  - {{name: bench, protocol: anthropic, base_url: 'http://127.0.0.1:{mock_port}', api_key: 'sk-bench-not-a-real-key'}}
routes: {{claude: [bench]}}
""")
    return Proxy(rules, workdir, extra_args=("--set", "flow_detail=0")).start()


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


BODY = {"model": "claude-bench", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"x-api-key": "sk-client-bench", "anthropic-version": "2023-06-01"}


def measure_stream(client: httpx.Client, base: str) -> tuple[float, float]:
    """(time to first content event, total) in ms for one streamed request."""
    start = time.perf_counter()
    first = None
    with client.stream("POST", base + "/v1/messages", json={**BODY, "stream": True}, headers=HEADERS) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith("data:") and '"content_block_delta"' in line:
                first = time.perf_counter()
    end = time.perf_counter()
    return (first - start) * 1000, (end - start) * 1000


def measure_plain(client: httpx.Client, base: str) -> float:
    start = time.perf_counter()
    r = client.post(base + "/v1/messages", json=BODY, headers=HEADERS)
    r.raise_for_status()
    json.loads(r.content)
    return (time.perf_counter() - start) * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(targets: dict[str, str], requests: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {name: {"ttfc": [], "stream_total": [], "plain": []}
                                                  for name in targets}
    clients = {name: httpx.Client(timeout=60, trust_env=False) for name in targets}
    for name, base in targets.items():       # warm up connections and caches
        for _ in range(5):
            measure_stream(clients[name], base)
            measure_plain(clients[name], base)
    for _ in range(requests):                # interleave so drift hits every target alike
        for name, base in targets.items():
            ttfc, total = measure_stream(clients[name], base)
            results[name]["ttfc"].append(ttfc)
            results[name]["stream_total"].append(total)
            results[name]["plain"].append(measure_plain(clients[name], base))
    return results


def report(results: dict[str, dict[str, list[float]]]) -> str:
    rows = [("figure", *results.keys(), "ccswitch / bare")]
    for metric, label in (("ttfc", "stream: first content event"), ("stream_total", "stream: total"),
                          ("plain", "non-stream: total")):
        for q, qname in ((0.5, "p50"), (0.99, "p99")):
            values = {name: pct(r[metric], q) for name, r in results.items()}
            ratio = values["ccswitch"] / values["bare mitmdump"]
            rows.append((f"{label} {qname} (ms)", *(f"{v:.2f}" for v in values.values()), f"{ratio:.2f}x"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--events", type=int, default=20, help="content events per streamed reply")
    parser.add_argument("--interval", type=float, default=0.005, help="seconds between streamed events")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        mock, mock_port = start_mock(args.events, args.interval)
        bare, bare_url = start_bare(mock_port, workdir)
        proxy = start_ccswitch(mock_port, workdir)
        try:
            results = run({"direct": f"http://127.0.0.1:{mock_port}", "bare mitmdump": bare_url,
                           "ccswitch": proxy.reverse_url}, args.requests)
        finally:
            proxy.stop()
            bare.terminate()
            mock.terminate()
    print(f"{args.requests} requests per target, {args.events} events {args.interval * 1000:.0f} ms apart")
    print(report(results))
    delta = pct(results["ccswitch"]["ttfc"], 0.5) - pct(results["bare mitmdump"]["ttfc"], 0.5)
    print(f"ccswitch adds {delta:.2f} ms to the p50 first content event over bare mitmdump")


if __name__ == "__main__":
    main()
