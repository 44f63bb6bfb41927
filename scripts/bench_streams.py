"""The concurrent-streams figure of scripts/bench.py: N streaming clients at once.

N clients are started evenly over `ramp` seconds; each sends one streamed Anthropic request
and reads its answer: `events` content deltas from a loopback mock that waits `gap` seconds
before each one, so with the defaults (50 events, 0.1 s, a 3 s ramp) every stream is still
open when the last one starts. Measured for bare `mitmdump` in reverse mode
(`stream_large_bodies=1`) and for ccswitch in reverse mode, one after the other in the same
run, each a fresh process, in alternating rounds: the proxy's CPU seconds over the run
(utime + stime from /proc/<pid>/stat), its peak RSS (VmHWM from /proc/<pid>/status) and its
RSS before the run, the streams completed, and the worst gap between two events that a client
saw; CPU and memory are the means over the rounds, and each round's ratios are printed too.

The mock (asyncio, the same bytes for every stream) and the clients (asyncio streams, one
connection each) run in processes of their own, so neither competes with the proxy's event
loop; this file is both of them (`python scripts/bench_streams.py mock|client ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STREAM_MODEL = "bench-stream"
BARE, CCSWITCH = "bare mitmdump", "ccswitch reverse"
DELTA = b"content_block_delta"


@dataclass(frozen=True)
class Plan:
    streams: int
    events: int = 50
    gap: float = 0.1
    ramp: float = 3.0


# ---------------------------------------------------------------------- arithmetic

def ramp_delays(n: int, ramp: float) -> list[float]:
    """When each of n clients starts: evenly over `ramp` seconds, the first at once."""
    return [i * ramp / n for i in range(n)]


def gaps(times: list[float]) -> list[float]:
    """The waits between consecutive arrivals."""
    return [b - a for a, b in itertools.pairwise(times)]


class ChunkedBody:
    """Decodes an HTTP/1.1 chunked body fed in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0          # bytes still to come of the current chunk
        self._trailing = False  # the CRLF after a chunk's data is next
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = []
        while not self.done:
            if self._left:
                piece = self._buffer[: self._left]
                out.append(piece)
                self._left -= len(piece)
                self._buffer = self._buffer[len(piece):]
                if self._left:
                    break
                self._trailing = True
            if self._trailing:
                if len(self._buffer) < 2:
                    break
                self._buffer, self._trailing = self._buffer[2:], False
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self._buffer[:line_end].split(b";")[0], 16)
            self._buffer = self._buffer[line_end + 2:]
            if size == 0:
                self.done = True
            self._left = size
        return b"".join(out)


class EventClock:
    """Splits an SSE body into events and notes when each content delta arrived."""

    def __init__(self) -> None:
        self._pending = b""
        self.arrivals: list[float] = []
        self.stopped = False       # message_stop seen

    def feed(self, data: bytes, now: float) -> None:
        self._pending += data
        *events, self._pending = self._pending.split(b"\n\n")
        for event in events:
            if DELTA in event:
                self.arrivals.append(now)
            elif b"message_stop" in event:
                self.stopped = True


@dataclass
class StreamResult:
    ok: bool
    events: int
    gaps: list[float]
    error: str = ""


def summarize(results: list[StreamResult], expected_events: int) -> dict:
    """The client process's report: completed streams, the worst and p99 gap (ms), errors."""
    completed = [r for r in results if r.ok and r.events == expected_events]
    all_gaps = sorted(g for r in results for g in r.gaps)
    errors: dict[str, int] = {}
    for r in results:
        if not (r.ok and r.events == expected_events):
            reason = r.error or f"{r.events} of {expected_events} events"
            errors[reason] = errors.get(reason, 0) + 1
    return {"streams": len(results), "completed": len(completed),
            "worst gap (ms)": 1000 * all_gaps[-1] if all_gaps else 0.0,
            "p99 gap (ms)": 1000 * all_gaps[min(len(all_gaps) - 1, round(0.99 * (len(all_gaps) - 1)))]
            if all_gaps else 0.0,
            "errors": errors}


def figures(summary: dict, cpu_s: float, base_rss_kb: int, peak_rss_kb: int) -> dict[str, float]:
    """One proxy's row of the streams table."""
    streams = max(1, summary["streams"])
    return {"streams completed": summary["completed"],
            "proxy CPU (s)": cpu_s,
            "peak RSS (MB)": peak_rss_kb / 1024,
            "peak RSS over idle, per stream (KB)": (peak_rss_kb - base_rss_kb) / streams,
            "worst gap between events (ms)": summary["worst gap (ms)"],
            "p99 gap between events (ms)": summary["p99 gap (ms)"]}


def rss_over_bare_per_stream(bare: dict[str, float], cc: dict[str, float]) -> float:
    """What each open stream costs ccswitch in peak memory beyond what it costs bare mitmdump (KB):
    each one's peak over its own idle RSS, so the addon's fixed size (imports, tables) is not
    counted as a per-stream cost."""
    key = "peak RSS over idle, per stream (KB)"
    return cc[key] - bare[key]


def verdicts(bare: dict[str, float], cc: dict[str, float], streams: int) -> list[str]:
    extra = rss_over_bare_per_stream(bare, cc)
    checks = [
        (f"{streams} concurrent streams: CPU <= 1.3x bare", cc["proxy CPU (s)"] <= 1.3 * bare["proxy CPU (s)"]),
        (f"{streams} concurrent streams: RSS per open stream <= bare's + 25 KB ({extra:+.1f} KB)", extra <= 25),
        ("every stream completed through both",
         cc["streams completed"] == bare["streams completed"] == streams),
    ]
    return [f"  {'met   ' if ok else 'MISSED'} {name}" for name, ok in checks]


# ---------------------------------------------------------------------- /proc

def cpu_seconds(pid: int) -> float:
    import os
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int:
    """A memory line of /proc/<pid>/status (VmRSS, VmHWM) in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------- the mock

def sse_events(events: int) -> tuple[bytes, bytes, list[bytes], bytes]:
    """(head, the events before the deltas, the deltas, the events after), chunked and ready to write."""
    sys.path.insert(0, str(REPO))
    from tests.support import mock_payloads as P
    reply = P.Reply(model=STREAM_MODEL, deltas=[f"tok{i} " for i in range(events)], output_tokens=events)
    chunked = [b"%x\r\n%s\r\n" % (len(P.sse(e)), P.sse(e)) for e in P.anthropic_events(reply)]
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\nrequest-id: req_bench\r\n\r\n")
    return head, b"".join(chunked[:3]), chunked[3:3 + events], b"".join(chunked[3 + events:]) + b"0\r\n\r\n"


async def serve_mock(events: int, gap: float) -> None:
    head, before, deltas, after = sse_events(events)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in request.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                writer.write(head + before)
                for delta in deltas:
                    await asyncio.sleep(gap)
                    writer.write(delta)
                writer.write(after)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


# ---------------------------------------------------------------------- the clients

def request_bytes(host: str, port: int) -> bytes:
    body = json.dumps({"model": STREAM_MODEL, "max_tokens": 64, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    return (f"POST /v1/messages HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"x-api-key: sk-client-bench\r\nanthropic-version: 2023-06-01\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


async def one_stream(host: str, port: int, delay: float, request: bytes, timeout: float) -> StreamResult:
    await asyncio.sleep(delay)
    clock = EventClock()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1]
                if status != b"200":
                    return StreamResult(False, 0, [], f"status {status.decode()}")
                body = ChunkedBody()
                while not body.done:
                    data = await reader.read(16 * 1024)
                    if not data:
                        return StreamResult(False, len(clock.arrivals), gaps(clock.arrivals), "closed mid-stream")
                    clock.feed(body.feed(data), time.perf_counter())
            finally:
                writer.close()
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        return StreamResult(False, len(clock.arrivals), gaps(clock.arrivals), type(exc).__name__)
    return StreamResult(clock.stopped, len(clock.arrivals), gaps(clock.arrivals),
                        "" if clock.stopped else "no message_stop")


async def run_clients(url: str, plan: Plan, timeout: float = 120.0) -> dict:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = request_bytes(host, int(port))
    results = await asyncio.gather(*(one_stream(host, int(port), delay, request, timeout)
                                     for delay in ramp_delays(plan.streams, plan.ramp)))
    return summarize(results, plan.events)


# ---------------------------------------------------------------------- the run

def start_mock(plan: Plan) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, __file__, "mock", "--events", str(plan.events), "--gap", str(plan.gap)],
                            stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def clients(url: str, plan: Plan) -> dict:
    """Run the clients in a process of their own; their summary."""
    done = subprocess.run([sys.executable, __file__, "client", url, "--streams", str(plan.streams),
                           "--events", str(plan.events), "--ramp", str(plan.ramp)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def measure(url: str, pid: int, plan: Plan) -> tuple[dict[str, float], dict]:
    """One proxy under the streams: (its figures, the clients' summary)."""
    clients(url, Plan(streams=10, events=plan.events, gap=plan.gap, ramp=0.1))    # warm imports and pools
    time.sleep(0.5)
    base_rss, cpu0 = status_kb(pid, "VmRSS"), cpu_seconds(pid)
    summary = clients(url, plan)
    time.sleep(0.2)           # the last rows and closes
    return figures(summary, cpu_seconds(pid) - cpu0, base_rss, status_kb(pid, "VmHWM")), summary


def combine(rounds: list[dict[str, float]]) -> dict[str, float]:
    """One proxy's figures over several rounds: the mean of CPU and memory, the fewest streams
    completed, the worst gap of all, the mean p99 gap."""
    out = {key: sum(r[key] for r in rounds) / len(rounds) for key in rounds[0]}
    out["streams completed"] = min(r["streams completed"] for r in rounds)
    out["worst gap between events (ms)"] = max(r["worst gap between events (ms)"] for r in rounds)
    return out


def round_notes(bare_rounds: list[dict[str, float]], cc_rounds: list[dict[str, float]]) -> list[str]:
    """Each round's CPU ratio and memory per stream over bare: how far one round's verdict can move."""
    if len(bare_rounds) < 2:
        return []
    cpu = ", ".join(f"{c['proxy CPU (s)'] / b['proxy CPU (s)']:.2f}x" for b, c in zip(bare_rounds, cc_rounds))
    rss = ", ".join(f"{rss_over_bare_per_stream(b, c):+.1f} KB" for b, c in zip(bare_rounds, cc_rounds))
    return [f"  by round: CPU {cpu}; RSS per open stream over bare's {rss}"]


def run(plan: Plan, start_bare, start_ccswitch, workdir: Path,
        rounds: int = 1) -> tuple[dict[str, dict[str, float]], list[str]]:
    """`rounds` times, fresh bare mitmdump and ccswitch (each `start_*(mock_port, workdir)`) one
    after the other under the same streams, the first of the pair alternating so that a machine
    busier for a while weighs on both: (figures by proxy over the rounds, notes: the rounds'
    spread and each proxy whose streams did not all complete)."""
    mock, port = start_mock(plan)
    by_proxy: dict[str, list[dict[str, float]]] = {BARE: [], CCSWITCH: []}
    notes = []
    try:
        for n in range(rounds):
            order = (BARE, CCSWITCH) if n % 2 == 0 else (CCSWITCH, BARE)
            for name in order:
                measured, summary = _measure_fresh(name, plan, port, workdir / f"round-{n}-{name.split()[0]}",
                                                   start_bare, start_ccswitch)
                by_proxy[name].append(measured)
                if summary["errors"]:
                    notes.append(f"  {name}, round {n + 1}: not completed: {summary['errors']}")
    finally:
        mock.terminate()
    return ({name: combine(results) for name, results in by_proxy.items()},
            round_notes(by_proxy[BARE], by_proxy[CCSWITCH]) + notes)


def _measure_fresh(name: str, plan: Plan, port: int, workdir: Path, start_bare, start_ccswitch):
    """`measure` on a proxy started for it and stopped after it (its peak RSS is its own)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if name == BARE:
        process, url = start_bare(port, workdir)
        try:
            return measure(url, process.pid, plan)
        finally:
            process.terminate()
            process.wait()
    proxy = start_ccswitch(port, workdir)
    try:
        return measure(proxy.reverse_url, proxy.proc.pid, plan)
    finally:
        proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    mock = sub.add_parser("mock")
    client = sub.add_parser("client")
    client.add_argument("url")
    client.add_argument("--streams", type=int, required=True)
    client.add_argument("--ramp", type=float, default=3.0)
    for p in (mock, client):
        p.add_argument("--events", type=int, default=50)
    mock.add_argument("--gap", type=float, default=0.1)
    args = parser.parse_args()
    if args.role == "mock":
        asyncio.run(serve_mock(args.events, args.gap))
    else:
        summary = asyncio.run(run_clients(args.url, Plan(args.streams, args.events, 0, args.ramp)))
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
