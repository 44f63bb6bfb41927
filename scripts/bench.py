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
from mock_upstream import MockUpstream, slow_stream, status
m = MockUpstream("bench")
m.default = slow_stream({events}, {interval})
m.start()
failing = MockUpstream("failing")
failing.default = status(503)
failing.start()
print(m.port, failing.port, flush=True)
time.sleep(3600)
"""


def start_mock(events: int, interval: float) -> tuple[subprocess.Popen, int, int]:
    """A streaming mock and one that answers 503 at once, in their own process."""
    code = MOCK_SERVER.format(tests=str(REPO / "tests"), events=events, interval=interval)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    ok_port, failing_port = proc.stdout.readline().split()
    return proc, int(ok_port), int(failing_port)


def start_bare(mock_port: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(workdir / "bare.log", "wb")
    proc = subprocess.Popen([str(MITMDUMP), "--mode", f"reverse:http://127.0.0.1:{mock_port}@127.0.0.1:{port}",
                             "--set", "stream_large_bodies=1", "--set", f"confdir={workdir / 'bare-conf'}",
                             "--set", "termlog_verbosity=error", "--set", "flow_detail=0"],
                            stdout=log, stderr=subprocess.STDOUT)
    _wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


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
    return Proxy(rules, workdir, extra_args=("--set", "flow_detail=0", *extra)).start()


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


def measure_stream(client: httpx.Client, base: str, model: str = BODY["model"]) -> tuple[float, float]:
    """(time to first content event, total) in ms for one streamed request."""
    start = time.perf_counter()
    first = None
    body = {**BODY, "stream": True, "model": model}
    with client.stream("POST", base + "/v1/messages", json=body, headers=HEADERS) as r:
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


def run_failover(base: str, requests: int) -> dict[str, list[float]]:
    """ccswitch alone: the happy path beside a failover from an instant 503, interleaved."""
    out: dict[str, list[float]] = {"happy": [], "failover": []}
    with httpx.Client(timeout=60, trust_env=False) as client:
        for _ in range(5):
            measure_stream(client, base, "failover-bench")
        for _ in range(requests):
            out["happy"].append(measure_stream(client, base)[0])
            out["failover"].append(measure_stream(client, base, "failover-bench")[0])
    return out


def ledger_rows_per_second(rows: int = 50_000) -> float:
    """How fast the writer thread drains a burst of request rows into SQLite."""
    from ccswitch.usage.ledger import Ledger
    row = {"request_id": "r", "ts": "2026-11-25T10:00:00.000+00:00", "route": "claude", "endpoint": "messages",
           "upstream": "a", "model": "m", "status": 200, "stream": 1, "attempts": 1, "input_tokens": 10,
           "output_tokens": 5, "cache_creation_tokens": 0, "cache_creation_1h_tokens": 0, "cache_read_tokens": 0,
           "reasoning_tokens": 0, "raw_usage": '{"input_tokens":10,"output_tokens":5}'}
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "usage.db").start()
        start = time.perf_counter()
        for _ in range(rows):
            ledger.add("requests", row)
        ledger.close()
        return rows / (time.perf_counter() - start)


def converter_events_per_second(protocol: str, events: int = 20_000) -> float:
    """One core: parse an upstream SSE stream and convert it to Chat chunks, in 4 KiB reads."""
    import mock_payloads as P
    from ccswitch.convert import translation
    from ccswitch.rules import parse_rules
    from ccswitch.sse import SSEParser
    from ccswitch.upstream import ClientRequest
    reply = P.Reply("bench-model", [f"tok{i} " for i in range(events)])
    stream = P.anthropic_events(reply) if protocol == "anthropic" else P.responses_events(reply)
    raw = b"".join(P.sse(e) for e in stream)
    upstream = parse_rules(f"upstreams: [{{name: u, protocol: {protocol}, base_url: 'http://x', "
                           "api_key: 'sk-bench-0000'}]").upstreams[0]
    body = {"model": "bench-model", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
    req = ClientRequest("chat", "chat", "POST", "", [], b"", body, "bench-model", True, "openai-chat")
    converter, parser = translation("openai-chat", protocol).stream(req, upstream), SSEParser()
    start = time.perf_counter()
    out = 0
    for i in range(0, len(raw), 4096):
        for event in parser.feed(raw[i:i + 4096]):
            out += len(converter.feed(event))
    out += len(converter.finish())
    return len(stream) / (time.perf_counter() - start)


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
        mock, mock_port, failing_port = start_mock(args.events, args.interval)
        bare, bare_url = start_bare(mock_port, workdir)
        proxy = start_ccswitch(mock_port, failing_port, workdir / "ccswitch")
        no_ledger = start_ccswitch(mock_port, failing_port, workdir / "no-ledger", "--set", "ccswitch_ledger=false")
        try:
            results = run({"direct": f"http://127.0.0.1:{mock_port}", "bare mitmdump": bare_url,
                           "ccswitch": proxy.reverse_url, "ccswitch, ledger off": no_ledger.reverse_url},
                          args.requests)
            failover = run_failover(proxy.reverse_url, args.requests)
        finally:
            proxy.stop()
            no_ledger.stop()
            bare.terminate()
            mock.terminate()
    print(f"{args.requests} requests per target, {args.events} events {args.interval * 1000:.0f} ms apart")
    print(report(results))
    delta = pct(results["ccswitch"]["ttfc"], 0.5) - pct(results["bare mitmdump"]["ttfc"], 0.5)
    print(f"ccswitch adds {delta:.2f} ms to the p50 first content event over bare mitmdump")
    for protocol, label in (("anthropic", "Anthropic -> Chat"), ("openai-responses", "Responses -> Chat")):
        print(f"converter {label}: {converter_events_per_second(protocol):,.0f} SSE events/s on one core")
    print(f"ledger writer: {ledger_rows_per_second():,.0f} rows/s sustained (one thread, WAL, batches of 500)")
    print("ccswitch first content event, happy path vs failover from an instant 503 (same run):")
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        happy, over = pct(failover["happy"], q), pct(failover["failover"], q)
        print(f"  {name}: happy {happy:.2f} ms, failover {over:.2f} ms (+{over - happy:.2f} ms)")


if __name__ == "__main__":
    main()
