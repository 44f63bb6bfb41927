"""The routing-decision pair of scripts/bench.py: what `strategy: quota` + `sticky` costs per request.

Two ccswitch processes, identical but for the `claude` route (a process has one route per API
path, so the pair cannot share one): `priority` lists `[roomy, busy]` and its requests carry no
session; `quota+sticky` lists `[busy, roomy]` with `strategy: quota, sticky: 1h` and its requests
cycle through SESSIONS `x-claude-code-session-id` values. Both mock upstreams answer with Anthropic
subscription rate-limit headers (busy at 5h utilization 0.7, roomy at 0.2), so both processes
parse them on every answer; the quota route has to put roomy before busy (or keep a session on
roomy, its binding), and the priority route takes roomy as listed. Every measured request of
both is therefore answered by the same mock server; what differs is the decision (session key,
binding lookup, ordering by utilization, binding after the 2xx) and one request header.
"""

from __future__ import annotations

import sqlite3
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.proxy_process import Proxy  # noqa: E402

SESSION_HEADER = "x-claude-code-session-id"
SESSIONS = 50
UTILIZATION = {"busy": 0.7, "roomy": 0.2}
SERVED_BY = "roomy"                      # who answers every measured request of both routes
PRIORITY_ROUTE = "[roomy, busy]"
QUOTA_ROUTE = "{upstreams: [busy, roomy], strategy: quota, sticky: 1h}"
PRIORITY = "ccswitch priority, no session"
QUOTA = f"ccswitch quota+sticky, {SESSIONS} sessions"


def rate_limit_headers(utilization: float, now: float) -> dict[str, str]:
    """What a Claude subscription sends with every answer: 5h and 7d windows, both allowed."""
    return {
        "anthropic-ratelimit-unified-status": "allowed",
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "anthropic-ratelimit-unified-reset": str(int(now) + 3 * 3600),
        "anthropic-ratelimit-unified-5h-status": "allowed",
        "anthropic-ratelimit-unified-5h-utilization": f"{utilization:.2f}",
        "anthropic-ratelimit-unified-5h-reset": str(int(now) + 3 * 3600),
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d-utilization": f"{utilization / 2:.2f}",
        "anthropic-ratelimit-unified-7d-reset": str(int(now) + 4 * 86400),
    }


def routing_rules(route: str, ports: dict[str, int]) -> str:
    return f"""
upstreams:
  - {{name: busy, protocol: anthropic, base_url: 'http://127.0.0.1:{ports["busy"]}', api_key: 'sk-bench-fake-4'}}
  - {{name: roomy, protocol: anthropic, base_url: 'http://127.0.0.1:{ports["roomy"]}', api_key: 'sk-bench-fake-5'}}
routes: {{claude: {route}}}
"""


def start_pair(ports: dict[str, int], workdir: Path, *extra: str) -> tuple[Proxy, Proxy]:
    """(priority proxy, quota+sticky proxy); the second is stopped again if the first fails to start."""
    proxies = []
    try:
        for name, route in (("priority", PRIORITY_ROUTE), ("quota", QUOTA_ROUTE)):
            folder = workdir / f"ccswitch-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "rules.yaml").write_text(routing_rules(route, ports))
            proxies.append(Proxy(folder / "rules.yaml", folder,
                                 extra_args=("--set", "flow_detail=0", *extra), guard=False).start())
    except BaseException:
        for proxy in proxies:
            proxy.stop()
        raise
    return proxies[0], proxies[1]


@dataclass
class PairSamples:
    ms: dict[str, list[float]] = field(default_factory=lambda: {PRIORITY: [], QUOTA: []})
    served: Counter = field(default_factory=Counter)   # (target, x-ccswitch-upstream) of measured requests


def _post(client: httpx.Client, url: str, headers: dict[str, str], body: dict,
          session: str | None) -> tuple[float, str]:
    if session is not None:
        headers = {**headers, SESSION_HEADER: session}
    start = time.perf_counter()
    r = client.post(url + "/v1/messages", json=body, headers=headers)
    r.raise_for_status()
    return (time.perf_counter() - start) * 1000, r.headers.get("x-ccswitch-upstream", "")


def sample_pair(priority_url: str, quota_url: str, samples: int, headers: dict[str, str],
                body: dict) -> PairSamples:
    """Interleaved small non-streamed requests, so drift hits both alike."""
    sessions = [str(uuid.uuid4()) for _ in range(SESSIONS)]
    out = PairSamples()
    with (httpx.Client(timeout=60, trust_env=False) as pc, httpx.Client(timeout=60, trust_env=False) as qc):
        # Warm connections; without a session the quota route learns both windows (busy, listed
        # first, answers its first request), so the sessions below are bound to roomy.
        for _ in range(20):
            _post(pc, priority_url, headers, body, None)
            _post(qc, quota_url, headers, body, None)
        for session in sessions:                     # each session's first request binds it
            _post(qc, quota_url, headers, body, session)
        for i in range(samples):
            for name, client, url, session in ((PRIORITY, pc, priority_url, None),
                                               (QUOTA, qc, quota_url, sessions[i % SESSIONS])):
                ms, upstream = _post(client, url, headers, body, session)
                out.ms[name].append(ms)
                out.served[(name, upstream)] += 1
    return out


def session_affinity(usage_db: Path) -> dict[str, int]:
    """The ledger's count of requests with a session by affinity (new | kept | moved)."""
    if not usage_db.exists():
        return {}
    with sqlite3.connect(f"file:{usage_db}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT affinity, COUNT(*) FROM requests WHERE session IS NOT NULL "
                               "GROUP BY affinity ORDER BY affinity").fetchall())


def describe(served: Counter, affinity: dict[str, int]) -> list[str]:
    """What the pair measured: who answered, and whether the sessions stayed bound."""
    others = {key: n for key, n in served.items() if key[1] != SERVED_BY}
    if others:
        found = ", ".join(f"{target}: {upstream or '(none)'} x{n}" for (target, upstream), n in sorted(others.items()))
        lines = [f"  WARNING not every measured request was answered by {SERVED_BY}: {found}"]
    else:
        lines = [f"  every measured request of both answered by {SERVED_BY} (5h utilization "
                 f"{UTILIZATION['roomy']}; busy {UTILIZATION['busy']}, listed first in the quota route)"]
    seen = ", ".join(f"{kind} {n}" for kind, n in affinity.items()) or "none recorded"
    lines.append(f"  quota+sticky ledger, requests with a session by affinity: {seen}")
    return lines
