"""Two ccswitch instances (real mitmdump processes) sharing one Redis: the end-to-end tests and
scripts/bench_scaleout.py use these."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.mock_upstream import MockUpstream, status
from tests.support.proxy_process import Proxy

MODEL = "claude-sonnet-4-5"        # priced: the mock's usage costs $0.0002025 a request on it
HEADERS = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
BODY = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


LOAD_MODEL = "claude-opus-4-7"     # priced too; only upstream `load` takes it (see shared_rules)


def shared_rules(a: MockUpstream, b: MockUpstream, state: str | None, *, threshold: int = 1000,
                 cooldown: str = "60s", client_keys: str = "", load: MockUpstream | None = None) -> str:
    """Route claude over a then b (priority, sticky 1h); `state` None: in memory.  With `load`,
    an upstream of that name first in the route takes LOAD_MODEL only: background load that
    leaves a and b to the measurement."""
    extra, route = "", "[a, b]"
    if load is not None:
        extra = (f"  - {{name: load, protocol: anthropic, base_url: '{load.base_url}', "
                 f"api_key: 'fake-upstream-key-L-0123', only_models: ['{LOAD_MODEL}']}}\n")
        route = "[load, a, b]"
    return ("timezone: UTC\n" + (f"state: {state}\n" if state else "") + client_keys +
            f"failover: {{threshold: {threshold}, cooldown: {cooldown}}}\n"
            f"upstreams:\n{extra}"
            f"  - {{name: a, protocol: anthropic, base_url: '{a.base_url}', api_key: 'fake-upstream-key-A-0123'}}\n"
            f"  - {{name: b, protocol: anthropic, base_url: '{b.base_url}', api_key: 'fake-upstream-key-B-0123'}}\n"
            f"routes: {{claude: {route}}}\n")


@contextlib.contextmanager
def instances(rules_text: str, workdir: Path, count: int = 2) -> Iterator[list[Proxy]]:
    """`count` mitmdump processes on the same rules, each with its own home (ledger, CA)."""
    rules = workdir / "rules.yaml"
    rules.write_text(rules_text)
    proxies = []
    try:
        for index in range(count):
            home = workdir / f"instance-{index}"
            home.mkdir(exist_ok=True)
            proxies.append(Proxy(rules, home).start())
        if "\nstate: " in "\n" + rules_text:
            # an instance serves at once, from its own memory; these tests start once it has loaded the shared state
            for proxy in proxies:
                wait_for(lambda p=proxy: "sharing state through" in p.log(), timeout=20, pause=0.02)
        yield proxies
    finally:
        for proxy in proxies:
            proxy.stop()


def client() -> httpx.Client:
    return httpx.Client(timeout=30, trust_env=False)


def ask(http: httpx.Client, proxy: Proxy, *, session: str | None = None, key: str = "sk-any") -> httpx.Response:
    headers = {**HEADERS, "x-api-key": key}
    if session is not None:
        headers["x-ccswitch-session"] = session
    return http.post(proxy.reverse_url + "/v1/messages", json=BODY, headers=headers)


def upstream_view(http: httpx.Client, proxy: Proxy, name: str, key: str | None = None) -> dict:
    headers = {"x-api-key": key} if key else {}
    data = http.get(proxy.reverse_url + "/_ccswitch/status.json", headers=headers).json()
    return next(u for u in data["upstreams"] if u["name"] == name)


def wait_for(check, timeout: float = 5.0, pause: float = 0.0) -> float:
    """Seconds until `check()` held (AssertionError past `timeout`)."""
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout:
            raise AssertionError("not within the time allowed")
        if pause:
            time.sleep(pause)
    return time.perf_counter() - started


def binding_staleness(http: httpx.Client, a: Proxy, b: Proxy, mock_a: MockUpstream, samples: int) -> list[float]:
    """Seconds from a session bound on `a` (its answer back at the client) until `b` shows it:
    each sample is a new session that `a` fails over to upstream b (mock_a answers 503 once)."""
    found = []
    for _ in range(samples):
        before = upstream_view(http, b, "b")["sessions"]
        mock_a.script(status(503))
        answer = ask(http, a, session=f"staleness-{uuid.uuid4().hex}")
        assert answer.status_code == 200 and answer.headers["x-ccswitch-upstream"] == "b"
        found.append(wait_for(lambda before=before: upstream_view(http, b, "b")["sessions"] > before))
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
