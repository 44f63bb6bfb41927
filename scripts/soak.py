#!/usr/bin/env python3
"""ccswitch's soak test: chaos upstreams, live rule edits, N clients, then audit.

Everything runs on loopback: three scriptable mock Anthropic upstreams (threads in
this process) behind the real `mitmdump -s addon.py` (reverse mode).  While N client
threads send a mix of Anthropic Messages (streamed and not), count_tokens and Chat
Completions (converted onto the Anthropic upstreams):

* a controller flips each upstream's behaviour at random every 0.5-2 s among ok /
  5xx / 429 / refuse (base_url moved to a closed port) / hang (before headers or
  mid-stream) / mid-stream cut / in-stream error event, always keeping one upstream
  ok (apart from short, rare outages of all three);
* rules.yaml is rewritten every 1.5-3 s, each round of four edits in a random order:
  valid (route order, threshold, cooldown, hold_back, max_attempts), invalid (bad YAML,
  unknown key, unknown upstream, bad duration, bad type, duplicate name, wrong protocol
  in a route), written in place (truncated, a valid prefix without routes, a pause,
  then the rest) and emptied; each edit must be acknowledged in the proxy's log ("rules
  reloaded" / "invalid edit of the rules" / "is empty").

At the end the proxy gets SIGTERM while the clients still send (--grace sets its
ccswitch_shutdown_grace); they stop once it has exited.  Then (the ledger flushed) it asserts:

* every response is complete and well formed: the right JSON shape and text, a
  stream ending with its terminal event, or an error in the client's format; a
  stream may end with the protocol's error event only when the upstream serving it
  failed mid-stream (cut / stall / error event) - never a silent truncation;
* a request that any upstream answered `ok` succeeded, with that upstream's text;
* every request for which some upstream was provably healthy (ok for the whole
  request, and a success after its last possible failure: so not cooling down) got a
  complete answer - failover within max_attempts always reached it;
* exactly one ledger row per request, agreeing with what the client saw;
* one reload per complete valid edit: no prefix and no empty file was ever applied
  (requests sent meanwhile are held to every check above);
* no exception in the proxy's log; the proxy's RSS did not grow more than 30%
  between the end of warm-up and the end;
* shutdown under load: the proxy exits by itself; requests in flight finish or are ended
  in their API's format (a 503, or the stream's error event), later ones get a 503 or
  find the proxy gone - never a malformed answer (no `HTTP/1.1 0`, no mitmproxy 502
  page) - and every answer, each 200 included, has its ledger row.

    python scripts/soak.py                           # 8 clients, 1 minute
    python scripts/soak.py --clients 8 --minutes 2 --seed 1

Bounded: at most --max-requests requests and --minutes (capped at 180); exits 0 when
every check holds, else 1 with the violations.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
for _p in (str(REPO), str(REPO / "scripts")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from soak_checks import (  # noqa: E402
    Report,
    Result,
    audit_attempts,
    audit_coverage,
    audit_ledger,
    audit_log,
    audit_reloads,
    audit_responses,
    audit_rss,
    audit_shutdown,
    do_request,
)
from soak_world import (  # noqa: E402
    MARGIN,
    MAX_ATTEMPT_S,
    NAMES,
    REQUEST_KINDS,
    REQUEST_WEIGHTS,
    Controller,
    LogWatcher,
    RssSampler,
    RulesWriter,
    SoakUpstream,
)

from tests.support.proxy_process import Proxy  # noqa: E402


class Clients:
    def __init__(self, base: str, n: int, seed: int, deadline: float, max_requests: int,
                 think: float = 0.0) -> None:
        self.base, self.n, self.seed, self.deadline, self.max_requests = base, n, seed, deadline, max_requests
        self.think = think
        self.results: list[Result] = []
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), name=f"soak-client-{i}", daemon=True)
                         for i in range(n)]

    def _take(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._count >= self.max_requests or time.monotonic() >= self.deadline:
                return None
            self._count += 1
            return self._count

    def _loop(self, i: int) -> None:
        rng = random.Random(self.seed * 1000 + i)
        with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0), trust_env=False) as client:
            while (n := self._take()) is not None:
                kind = rng.choices(REQUEST_KINDS, REQUEST_WEIGHTS)[0]
                res = Result(n=n, kind=kind, model=f"soak-{self.seed}-{n:07d}", t0=time.monotonic())
                do_request(client, self.base, res, rng)
                with self._lock:
                    self.results.append(res)
                if res.by_shutdown or res.outcome == "no_answer":
                    return   # the proxy is stopping or gone (or broken, which the audit reports)
                if self.think:
                    time.sleep(rng.uniform(0, self.think))

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self._stop.set()

def stop_under_load(proxy: Proxy, grace: int, report: Report) -> tuple[float, float]:
    """SIGTERM the proxy while the clients still send; (when, as monotonic time; seconds to exit)."""
    signalled = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)
    bound = grace + 15
    try:
        code = proxy.proc.wait(bound)
    except subprocess.TimeoutExpired:
        report.fail("shutdown", f"the proxy was still running {bound} s after SIGTERM")
    else:
        if code != 0:
            report.fail("shutdown", f"the proxy exited with {code} after SIGTERM")
    return signalled, time.monotonic() - signalled

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (at most 64)")
    parser.add_argument("--minutes", type=float, default=1.0, help="how long the clients send (at most 180)")
    parser.add_argument("--seconds", type=float, default=None, help="the same in seconds (overrides --minutes)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument("--max-requests", type=int, default=200_000, help="hard cap on requests sent")
    parser.add_argument("--think", type=float, default=0.0, help="longest random pause between a client's requests (s)")
    parser.add_argument("--outage", type=float, default=0.05,
                        help="chance per flip of a short outage of every upstream")
    parser.add_argument("--rss-growth", type=float, default=0.30, help="largest RSS growth after warm-up")
    parser.add_argument("--grace", type=int, default=2,
                        help="the proxy's ccswitch_shutdown_grace (s) for the SIGTERM at the end")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the rules, log and ledger here")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    args.duration = max(1.0, min(seconds, 180 * 60))
    args.clients = max(1, min(args.clients, 64))
    args.max_requests = max(1, min(args.max_requests, 1_000_000))
    return args

def run(args: argparse.Namespace, out=None) -> Report:
    out = out or (lambda line: print(line, flush=True))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ccswitch-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in (workdir / ".ccswitch").glob("usage.db*"):   # a ledger from an earlier run
        stale.unlink()
    report = Report()
    rng = random.Random(args.seed)
    mocks = {n: SoakUpstream(n, args.seed * 100 + i).start() for i, n in enumerate(NAMES)}
    rules_path = workdir / "rules.yaml"
    proxy = Proxy(rules_path, workdir, extra_args=("--set", "flow_detail=0",
                                                   "--set", f"ccswitch_shutdown_grace={args.grace}"))
    log = LogWatcher(proxy.log_path)
    writer = RulesWriter(rules_path, mocks, log, random.Random(args.seed + 1))
    writer.first()
    started = time.monotonic()
    controller = clients = sampler = None
    signalled = exit_s = None
    try:
        proxy.start()
        sampler = RssSampler(proxy.proc.pid, every=1.0 if args.duration <= 60 else 2.0)
        sampler.start()
        controller = Controller(mocks, writer, rng, outage_p=args.outage)
        clients = Clients(proxy.reverse_url, args.clients, args.seed,
                          time.monotonic() + args.duration + args.grace + 60, args.max_requests, think=args.think)
        out(f"ccswitch soak: {args.clients} clients, {args.duration:.0f} s, seed {args.seed}, work dir {workdir}")
        controller.start()
        clients.start()
        clients.join(args.duration)      # they keep sending: the proxy is stopped under load
        controller.stop()
        sampler.stop_event.set()
        signalled, exit_s = stop_under_load(proxy, args.grace, report)
        clients.stop()
        if not clients.join(60):
            report.fail("clients", "still running 60 s after the proxy stopped")
    finally:
        if controller is not None:
            controller.stop()
        if sampler is not None:
            sampler.stop_event.set()
            sampler.join(5)
        proxy.stop()      # flushes the ledger
        for mock in mocks.values():
            mock.stop()
    elapsed = time.monotonic() - started
    results = sorted(clients.results if clients else [], key=lambda r: r.n)

    if controller is not None and controller.error is not None:
        report.fail("controller", f"failed: {controller.error!r}")
    for text in writer.unacked:
        report.fail("rules edit not picked up", text)
    audit_responses(results, report, signalled)
    facts = audit_ledger(results, proxy.usage_db, report)
    audit_attempts(results, mocks, facts["rows"], report)
    max_attempt_s = max(MAX_ATTEMPT_S, facts["max_attempt_ms"] / 1000 + MARGIN)
    covered, _ = audit_coverage(results, mocks, controller.refuse_end_acks if controller else {},
                                max_attempt_s, report)
    invalid_logged = audit_log(proxy.log(), report)
    audit_reloads(log.count("reloaded"), writer.valid, log.count("empty"), writer.empty, report)
    warmup = min(max(5.0, 0.2 * args.duration), 60.0)
    audit_rss(sampler.samples if sampler else [], warmup, args.rss_growth, report)
    shutdown = audit_shutdown(results, signalled, report) if signalled is not None else {}

    if results and covered < 0.1 * len(results):
        report.fail("too little to assert", f"only {covered} of {len(results)} requests had a provably "
                    "healthy upstream: the soak proved little")
    n = len(results)
    outcomes = Counter(r.outcome for r in results)
    kinds = Counter(r.kind for r in results)
    rows = facts["rows"].values()
    failovers = sum(1 for row in rows if row[6] > 1)
    attempts_hist = Counter(row[6] for row in rows)
    flips = {k: len(m.flips) - 1 for k, m in mocks.items()}
    longest = max((r.t1 - r.t0 for r in results), default=0.0)
    by_kind = ", ".join(f"{k} {kinds[k]}" for k in REQUEST_KINDS)
    by_outcome = ", ".join(f"{k} {outcomes.get(k, 0)}" for k in ("ok", "error_json", "error_event", "violation"))
    histogram = ", ".join(f"{k}x {v}" for k, v in sorted(attempts_hist.items()))
    report.stats.update(requests=n, outcomes=dict(outcomes), covered=covered, failovers=failovers,
                        elapsed=elapsed, flips=flips, valid_edits=writer.valid, invalid_edits=writer.invalid,
                        partial_edits=writer.partial, empty_edits=writer.empty, shutdown=shutdown)
    report.lines[:0] = [
        f"requests      {n} in {elapsed:.0f} s ({n / max(args.duration, 1):.0f}/s while sending); {by_kind}",
        f"outcomes      {by_outcome}",
        (f"healthy       {covered} requests ({covered / max(n, 1):.0%}) had a provably healthy upstream: "
         "none may end in an error status"),
        f"failovers     {failovers} requests with attempts > 1 in the ledger; attempts: {histogram}",
        f"longest       attempt {facts['max_attempt_ms']} ms, request {longest:.1f} s",
        (f"flips         {', '.join(f'{k} {v}' for k, v in flips.items())}; "
         f"outages of all three {controller.outages if controller else 0}"),
        (f"rules edits   {writer.valid} valid ({writer.partial} written in place, paused after a valid "
         f"prefix), {writer.invalid} invalid ({invalid_logged} logged as invalid), {writer.empty} emptied, "
         f"{len(writer.unacked)} not acknowledged"),
        f"ledger        {len(facts['rows'])} of {n} requests with exactly one row",
    ]
    if shutdown:
        report.lines.append(
            f"shutdown      SIGTERM with {shutdown['in_flight']} requests in flight: {shutdown['finished']} "
            f"finished, {shutdown['cut']} ended by the shutdown; {shutdown['after']} sent after it: "
            f"{shutdown['refused']} got its 503, {shutdown['gone']} found the proxy gone; "
            f"exited in {exit_s:.1f} s (grace {args.grace} s)")
    if controller is not None:
        (workdir / "controller.log").write_text("\n".join(controller.trace) + "\n")
    if args.workdir is None and report.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        report.lines.append(f"work dir      {workdir} (rules.yaml, mitmdump.log, .ccswitch/usage.db)")
    return report

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(report.text(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
