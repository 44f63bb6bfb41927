#!/usr/bin/env python3
"""How close any addon of ccswitch's design can come to bare mitmdump: throughput of small
non-streamed requests at c=1 and c=16 for bare mitmdump, the least addon of each of three
designs (scripts/ceiling_addons.py: `answer` from the request hook with no upstream at all,
`forward` over the addon's own sockets from the request hook as ccswitch does, `relay` started
in the request hook and answered through a loopback server) and ccswitch, in one run against
the same mock, in alternating rounds; each with its ratio to bare. Then each proxy's CPU per
small request (sequential, keep-alive), its main thread (mitmproxy's event loop, every hook)
apart from its other threads (ccswitch's ledger writer): where a gap at c=1 is spent.

    python scripts/bench_ceiling.py              # about 2 minutes
    python scripts/bench_ceiling.py --seconds 1 --rounds 1   # a smoke run

The `forward` figure is the ceiling of ccswitch's own design: it does nothing but move bytes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench import BASE_BODY, HEADERS, Target, start_bare, start_ccswitch, start_mock, throughput  # noqa: E402
from scripts.ceiling_addons import DESIGNS  # noqa: E402
from tests.support.proxy_process import MITMDUMP, free_port  # noqa: E402

ADDONS = REPO / "scripts" / "ceiling_addons.py"


def start_design(design: str, mock_port: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    """mitmdump in reverse mode to the mock with the least addon of `design`; without bare's
    `stream_large_bodies`, which would send each request upstream before the request hook saw
    its body (as ccswitch, each addon needs the whole request; `relay` streams its answers)."""
    port = free_port()
    with open(workdir / f"{design}.log", "wb") as log:     # the child keeps its own copy of the handle
        proc = subprocess.Popen([str(MITMDUMP), "-s", str(ADDONS), "--set", f"ceiling_design={design}",
                                 "--set", f"ceiling_upstream={mock_port}",
                                 "--mode", f"reverse:http://127.0.0.1:{mock_port}@127.0.0.1:{port}",
                                 "--set", f"confdir={workdir / 'conf'}",
                                 "--set", "termlog_verbosity=error", "--set", "flow_detail=0"],
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(url + "/v1/messages", json={**BASE_BODY, "model": "small"}, headers=HEADERS,
                       timeout=1).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"mitmdump with the {design!r} addon did not start (see {workdir / design}.log)")


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of `pid`'s main thread and of all its other threads together."""
    main = others = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:      # a thread that ended between the listing and the read
            continue
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if task.name == str(pid):
            main += seconds
        else:
            others += seconds
    return main, others


def cpu_per_request(target: Target, pid: int, requests: int) -> tuple[float, float]:
    """Microseconds of CPU per small sequential request: (main thread, other threads)."""
    body = {**BASE_BODY, "model": "small"}
    with target.client() as client:
        for _ in range(50):
            client.post(target.base + "/v1/messages", json=body, headers=HEADERS).raise_for_status()
        before = thread_cpu(pid)
        for _ in range(requests):
            client.post(target.base + "/v1/messages", json=body, headers=HEADERS).raise_for_status()
        after = thread_cpu(pid)
    return tuple((b - a) / requests * 1e6 for a, b in zip(before, after))


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per concurrency")
    parser.add_argument("--cpu-requests", type=int, default=2000,
                        help="sequential requests per target for the CPU split (0: leave it out)")
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    cpu: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        mock, mock_port, failing_port, _ = start_mock(10)
        processes: list[subprocess.Popen] = []
        ccswitch = None
        try:
            bare, bare_url = start_bare(mock_port, workdir)
            processes.append(bare)
            targets = [Target("bare mitmdump", bare_url, bare.pid)]
            for design in DESIGNS:
                proc, url = start_design(design, mock_port, workdir)
                processes.append(proc)
                targets.append(Target(f"least `{design}` addon", url, proc.pid))
            ccswitch = start_ccswitch(mock_port, failing_port, workdir / "ccswitch")
            targets.append(Target("ccswitch reverse", ccswitch.reverse_url, ccswitch.proc.pid))
            for c in (1, 16):
                for target in targets:              # warm: connections, pools, imports
                    throughput(target, c, 0.5)
                rates = [throughput(t, c, args.seconds) for _ in range(args.rounds) for t in targets]
                for i, target in enumerate(targets):
                    figures.setdefault(target.name, {})[f"throughput c={c} (req/s)"] = \
                        sum(rates[i::len(targets)]) / args.rounds
            if args.cpu_requests:
                cpu = {t.name: cpu_per_request(t, t.pid, args.cpu_requests) for t in targets}
        finally:
            if ccswitch is not None:
                ccswitch.stop()
            for proc in (*processes, mock):
                stop(proc)
    print(f"ceiling of an addon's design, {time.strftime('%Y-%m-%d')}, {args.rounds} alternating rounds "
          f"of {args.seconds:g} s per target and concurrency, same mock:")
    bare = figures["bare mitmdump"]
    for name, figure in figures.items():
        print(f"  {name:<24}" + "".join(f"  {metric} {rate:7.1f} ({rate / bare[metric]:.2f}x)"
                                         for metric, rate in figure.items()))
    if cpu:
        print(f"CPU per small request, {args.cpu_requests} sequential requests per target (µs):")
        for name, (main, others) in cpu.items():
            print(f"  {name:<24}  main thread {main:6.0f}  other threads {others:5.0f}"
                  f"  ({main - cpu['bare mitmdump'][0]:+.0f} on the main thread against bare)")


if __name__ == "__main__":
    main()
