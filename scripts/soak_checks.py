"""Soak test checks: one request and its validation, and the audits run after the soak."""

from __future__ import annotations

import bisect
import json
import random
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
for _p in (str(REPO), str(REPO / "scripts")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from soak_world import CLIENT_KEY, LOG_PROBLEMS, MARGIN, MID_STREAM, NAMES, ROUTE_OF, SoakUpstream, expected_text  # noqa: E402

from ccswitch.dial.shutdown import SHUTTING_DOWN  # noqa: E402


@dataclass
class Result:
    n: int
    kind: str
    model: str
    t0: float
    t1: float = 0.0
    status: int | None = None
    outcome: str = "violation"       # ok | error_json | error_event | no_answer | violation
    upstream: str | None = None      # x-ccswitch-upstream
    attempts: int | None = None      # x-ccswitch-attempts
    detail: str = ""
    error: str = ""                  # the message of an error answer or error event

    @property
    def by_shutdown(self) -> bool:
        """The proxy's shutdown answered: refused it (503) or cut it past the grace period."""
        return SHUTTING_DOWN in self.error

def _body(kind: str, model: str, rng: random.Random) -> tuple[str, dict, dict]:
    messages = [{"role": "user", "content": f"soak request {model}"}]
    if kind.startswith("chat"):
        body = {"model": model, "messages": messages, "max_tokens": 16}
        if kind == "chat-stream":
            body["stream"] = True
            if rng.random() < 0.5:
                body["stream_options"] = {"include_usage": True}
        return "/v1/chat/completions", body, {"authorization": f"Bearer {CLIENT_KEY}"}
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    if kind == "count":
        return "/v1/messages/count_tokens", {"model": model, "messages": messages}, headers
    body = {"model": model, "max_tokens": 16, "messages": messages}
    if kind == "msg-stream":
        body["stream"] = True
    return "/v1/messages", body, headers

def _marks(res: Result, headers: httpx.Headers) -> str | None:
    res.upstream = headers.get("x-ccswitch-upstream")
    try:
        res.attempts = int(headers.get("x-ccswitch-attempts", ""))
    except ValueError:
        res.attempts = None
    if res.upstream not in NAMES or not res.attempts or res.attempts < 1:
        return f"missing or bad x-ccswitch marks: {res.upstream!r} {headers.get('x-ccswitch-attempts')!r}"
    return None

def _error_json(res: Result, raw: bytes, chat: bool) -> None:
    try:
        js = json.loads(raw)
    except ValueError:
        res.detail = f"{res.status} with a non-JSON body: {raw[:200]!r}"
        return
    if chat:
        good = isinstance(js, dict) and isinstance(js.get("error"), dict) and isinstance(js["error"].get("message"), str)
    else:
        good = (isinstance(js, dict) and js.get("type") == "error" and isinstance(js.get("error"), dict)
                and isinstance(js["error"].get("message"), str) and isinstance(js["error"].get("type"), str))
    if good:
        res.outcome, res.error = "error_json", js["error"]["message"]
    else:
        res.detail = f"{res.status} error body not in the client's format: {raw[:200]!r}"

def _check_json(res: Result, raw: bytes) -> None:
    try:
        js = json.loads(raw)
    except ValueError:
        res.detail = f"200 with a non-JSON body: {raw[:200]!r}"
        return
    if res.kind == "count":
        if isinstance(js, dict) and isinstance(js.get("input_tokens"), int):
            res.outcome = "ok"
        else:
            res.detail = f"count_tokens body {raw[:200]!r}"
        return
    want = expected_text(res.upstream or "?", res.model)
    try:
        if res.kind == "msg":
            got = "".join(b["text"] for b in js["content"] if b.get("type") == "text")
            shaped = js.get("type") == "message" and js.get("role") == "assistant"
        else:
            got = js["choices"][0]["message"]["content"]
            shaped = js.get("object") == "chat.completion"
    except (KeyError, IndexError, TypeError):
        res.detail = f"200 body of the wrong shape: {raw[:200]!r}"
        return
    if not shaped or got != want:
        res.detail = f"200 body {got!r} (wanted {want!r}, shaped={shaped})"
        return
    res.outcome = "ok"

def _sse_events(response: httpx.Response) -> tuple[list[tuple[str | None, str]], bool]:
    """(events as (name, data), whether the body ended on an event boundary)."""
    events, name, data = [], None, []
    for line in response.iter_lines():
        if line == "":
            if data or name:
                events.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
    return events, not data and name is None

def _check_anthropic_stream(res: Result, events: list[tuple[str | None, str]]) -> None:
    want = expected_text(res.upstream or "?", res.model)
    parsed = []
    for name, data in events:
        try:
            parsed.append((name, json.loads(data)))
        except ValueError:
            res.detail = f"event {name} with non-JSON data {data[:200]!r}"
            return
    names = [n for n, _ in parsed]
    if not parsed or names[0] not in ("message_start", "error"):
        res.detail = f"stream opens with neither message_start nor an error event: {names[:5]}"
        return
    text = "".join(d.get("delta", {}).get("text", "") for n, d in parsed if n == "content_block_delta")
    if "error" in names:
        i = names.index("error")
        err = parsed[i][1]
        well_formed = (err.get("type") == "error" and isinstance(err.get("error"), dict)
                       and isinstance(err["error"].get("message"), str))
        res.error = err["error"]["message"] if well_formed else ""
        _judge_error_end(res, i != len(parsed) - 1 and f"events after the error event: {names[i:]}",
                         not well_formed and f"malformed error event {err!r}", text, want)
        return
    if names[-1] != "message_stop":
        res.detail = f"stream ended without message_stop or an error event (truncated): ...{names[-4:]}"
        return
    if "message_delta" not in names or "content_block_stop" not in names or text != want:
        res.detail = f"incomplete stream: {names}, text {text!r} (wanted {want!r})"
        return
    res.outcome = "ok"


def _judge_error_end(res: Result, trailing: str | bool, malformed: str | bool, text: str, want: str) -> None:
    """A stream that ends in an error event must end there, carry a message, and follow a
    prefix of the answer; `trailing` / `malformed` are the details when it does not."""
    if trailing:
        res.detail = trailing
    elif malformed:
        res.detail = malformed
    elif not want.startswith(text):
        res.detail = f"text before the error {text!r} is not a prefix of {want!r}"
    else:
        res.outcome = "error_event"


def _check_chat_stream(res: Result, events: list[tuple[str | None, str]]) -> None:
    want = expected_text(res.upstream or "?", res.model)
    datas = [d for _, d in events]
    if not datas:
        res.detail = "empty chat stream"
        return
    text, finished = "", False
    for i, data in enumerate(datas):
        if data == "[DONE]":
            if i != len(datas) - 1:
                res.detail = "data after [DONE]"
                return
            if not finished or text != want:
                res.detail = f"[DONE] after text {text!r} (wanted {want!r}), finish_reason seen: {finished}"
                return
            res.outcome = "ok"
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            res.detail = f"chat chunk not JSON: {data[:200]!r}"
            return
        if "error" in chunk:
            err = chunk["error"]
            well_formed = isinstance(err, dict) and isinstance(err.get("message"), str)
            res.error = err["message"] if well_formed else ""
            _judge_error_end(res, i != len(datas) - 1 and f"data after the error chunk: {datas[i + 1:][:3]}",
                             not well_formed and f"malformed chat error chunk {chunk!r}", text, want)
            return
        if chunk.get("object") != "chat.completion.chunk":
            res.detail = f"not a chat.completion.chunk: {data[:200]!r}"
            return
        for choice in chunk.get("choices") or []:
            text += (choice.get("delta") or {}).get("content") or ""
            finished = finished or bool(choice.get("finish_reason"))
    res.detail = f"chat stream ended without [DONE] or an error chunk (truncated), text {text!r}"

def _no_answer(exc: httpx.HTTPError) -> bool:
    """Refused, or closed or reset before any answer: what a proxy that is gone does (not a
    malformed answer, such as a status line without a status)."""
    if isinstance(exc, (httpx.ConnectError, httpx.ReadError, httpx.WriteError)):
        return True
    return isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc)

def do_request(client: httpx.Client, base: str, res: Result, rng: random.Random) -> Result:
    path, body, headers = _body(res.kind, res.model, rng)
    chat = res.kind.startswith("chat")
    stream = bool(body.get("stream"))
    try:
        with client.stream("POST", base + path, json=body, headers=headers) as r:
            res.status = r.status_code
            ctype = r.headers.get("content-type", "")
            if not 200 <= r.status_code < 300:
                _error_json(res, r.read(), chat)
            elif (bad := _marks(res, r.headers)) is not None:
                res.detail = bad
                r.read()
            elif stream:
                if "text/event-stream" not in ctype:
                    res.detail = f"200 {ctype!r} for a streamed request: {r.read()[:200]!r}"
                else:
                    events, clean = _sse_events(r)
                    if not clean:
                        res.detail = "stream ended inside an event (truncated)"
                    elif chat:
                        _check_chat_stream(res, events)
                    else:
                        _check_anthropic_stream(res, events)
            else:
                _check_json(res, r.read())
    except httpx.HTTPError as exc:
        res.outcome = "no_answer" if res.status is None and _no_answer(exc) else "violation"
        res.detail = f"transport error: {type(exc).__name__}: {exc}"
    res.t1 = time.monotonic()
    return res

@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    categories: Counter = field(default_factory=Counter)
    lines: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def fail(self, category: str, text: str) -> None:
        self.categories[category] += 1
        self.violations.append(f"{category}: {text}")

    def text(self, limit: int = 25) -> str:
        out = list(self.lines)
        if self.violations:
            out.append(f"VIOLATIONS ({len(self.violations)}): "
                       + ", ".join(f"{c} {n}" for c, n in self.categories.most_common()))
            out += ["  " + v for v in self.violations[:limit]]
            if len(self.violations) > limit:
                out.append(f"  ... and {len(self.violations) - limit} more")
            out.append("RESULT: FAILED")
        else:
            out.append("RESULT: OK")
        return "\n".join(out)

def _describe(res: Result) -> str:
    return (f"#{res.n} {res.kind} {res.model} status={res.status} upstream={res.upstream} "
            f"attempts={res.attempts} {res.t1 - res.t0:.2f}s")

def audit_responses(results: list[Result], report: Report, signalled: float | None = None) -> None:
    """Every answer well formed; no answer at all only for a request sent after the proxy was
    signalled to stop (at monotonic time `signalled`), once its listener closed."""
    for res in results:
        if res.outcome == "violation":
            report.fail("malformed response", f"{_describe(res)}: {res.detail}")
        elif res.outcome == "no_answer" and (signalled is None or res.t0 < signalled):
            report.fail("no answer", f"{_describe(res)}: {res.detail}")

def audit_ledger(results: list[Result], db: Path, report: Report) -> dict:
    """Exactly one row per request, agreeing with what the client saw; returns ledger facts."""
    if not db.exists():
        report.fail("ledger", f"no usage ledger at {db}")
        return {"max_attempt_ms": 0, "rows": {}}
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT model, route, endpoint, upstream, status, stream, attempts, error "
                            "FROM requests").fetchall()
        max_ms = conn.execute("SELECT coalesce(max(ms), 0) FROM attempts").fetchone()[0]
    finally:
        conn.close()
    by_model: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        by_model[row[0]].append(row)
    sent = {res.model for res in results}
    # a request the proxy never answered may or may not have reached its ledger
    unanswered = sum(1 for res in results if res.outcome == "no_answer" and res.model not in by_model)
    if len(rows) != len(results) - unanswered:
        report.fail("ledger", f"{len(rows)} request rows for {len(results) - unanswered} requests")
    strangers = [m for m in by_model if m not in sent]
    if strangers:
        report.fail("ledger", f"rows for requests never sent: {strangers[:5]}")
    single = {}
    for res in results:
        found = by_model.get(res.model, [])
        if res.outcome == "no_answer" and len(found) <= 1:
            continue
        if len(found) != 1:
            report.fail("ledger", f"{len(found)} rows for {_describe(res)}")
            continue
        _, route, endpoint, upstream, status_, stream, attempts, error = row = found[0]
        single[res.model] = row
        want_route, want_endpoint, want_stream = ROUTE_OF[res.kind]
        problems = []
        if (route, endpoint, stream) != (want_route, want_endpoint, want_stream):
            problems.append(f"route/endpoint/stream {route}/{endpoint}/{stream}")
        if status_ != res.status:
            problems.append(f"status {status_} (client saw {res.status})")
        if res.outcome in ("ok", "error_event") and (upstream, attempts) != (res.upstream, res.attempts):
            problems.append(f"upstream/attempts {upstream}/{attempts} (headers said {res.upstream}/{res.attempts})")
        if res.outcome == "ok" and error is not None:
            problems.append(f"error {error!r} on a success")
        if res.outcome in ("error_event", "error_json") and not error:
            problems.append("no error recorded for a failed request")
        if problems:
            report.fail("ledger disagrees with the client", f"{_describe(res)}: {'; '.join(problems)}")
    return {"max_attempt_ms": max_ms, "rows": single}

def audit_attempts(results: list[Result], mocks: dict[str, SoakUpstream], ledger_rows: dict,
                   report: Report) -> None:
    """What each upstream did for each request, against what the client got."""
    seen: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, mock in mocks.items():
        for model, label, _ in mock.arrivals:
            seen[model].append((name, label))
    sent = {res.model for res in results}
    strangers = [m for m in seen if m not in sent]
    if strangers:
        report.fail("stray upstream requests", f"upstreams saw requests never sent: {strangers[:5]}")
    for res in results:
        got = seen.get(res.model, [])
        oks = [name for name, label in got if label == "ok"]
        row = ledger_rows.get(res.model)
        if row is not None and len(got) > row[6]:
            report.fail("ledger attempts", f"{len(got)} upstream requests but {row[6]} attempts recorded: "
                                     f"{_describe(res)} {got}")
        if res.by_shutdown or res.outcome == "no_answer":
            continue   # cut or refused by the proxy's shutdown: see audit_shutdown
        if oks and (len(oks) > 1 or res.outcome != "ok" or res.upstream != oks[0]):
                report.fail("ok answer lost", f"upstream {oks} answered ok but the client got {res.outcome} "
                                         f"from {res.upstream}: {_describe(res)} {got} {res.detail}")
        if res.outcome == "error_event":
            labels = {label for name, label in got if name == res.upstream}
            if not labels & MID_STREAM:
                report.fail("error event without a mid-stream failure", f"{res.upstream} did not fail mid-stream "
                                         f"({labels}): {_describe(res)}")

def audit_coverage(results: list[Result], mocks: dict[str, SoakUpstream], refuse_end_acks: dict,
                   max_attempt_s: float, report: Report) -> tuple[int, int]:
    """Requests for which an upstream was provably healthy all along must have succeeded.

    Upstream u was healthy for request X (start t0, end t1) when u answered ok throughout
    [t0, t1], and the client saw a success from u (so its failure count was reset) at
    some t_c <= t0 - MARGIN after every failure u could still have recorded: attempts
    begun before u turned ok end within `max_attempt_s`; requests still using rules
    that pointed u at a closed port end within the longest request after the reload
    that moved it back.  Such a u is in X's plan (not cooling, not being probed) and,
    with max_attempts >= the number of upstreams and no retries, is reached."""
    max_request_s = max((r.t1 - r.t0 for r in results), default=0.0) + MARGIN
    successes: dict[str, list[float]] = {n: [] for n in NAMES}
    for res in results:
        if res.outcome == "ok" and res.upstream in successes:
            successes[res.upstream].append(res.t1)
    for times in successes.values():
        times.sort()
    flips = {n: mocks[n].flips for n in NAMES}
    flip_times = {n: [t for t, _ in flips[n]] for n in NAMES}

    def healthy(u: str, t0: float, t1: float) -> bool:
        i = bisect.bisect_right(flip_times[u], t0) - 1
        if i < 0 or flips[u][i][1] != "ok":
            return False
        if i + 1 < len(flips[u]) and flips[u][i + 1][0] <= t1:
            return False
        ok_from = flips[u][i][0]
        settled = ok_from + max_attempt_s
        for ack in refuse_end_acks.get(u, ()):
            if ack <= t0:
                settled = max(settled, ack + max_request_s)
        times = successes[u]
        j = bisect.bisect_left(times, settled)
        return j < len(times) and times[j] <= t0 - MARGIN

    covered = failed = 0
    for res in results:
        if res.by_shutdown or res.outcome == "no_answer":
            continue   # the proxy was stopping: see audit_shutdown
        if any(healthy(u, res.t0, res.t1) for u in NAMES):
            covered += 1
            if res.outcome not in ("ok", "error_event"):   # error events: see audit_attempts
                failed += 1
                report.fail("no failover to a healthy upstream", "an upstream was healthy throughout but the client got "
                                         f"{res.outcome}: {_describe(res)} {res.detail}")
    return covered, failed

def audit_shutdown(results: list[Result], signalled: float, report: Report) -> dict:
    """SIGTERM under load: requests in flight finished or were ended by the shutdown in their
    API's format; later ones were refused with a 503 or found the proxy gone.  (Formats, rows -
    so every 200 has its row - and the log are audited with the rest.)  Returns the counts."""
    in_flight = [r for r in results if r.t0 < signalled < r.t1]
    after = [r for r in results if r.t0 >= signalled]
    for res in results:
        if res.by_shutdown and res.t1 < signalled:
            report.fail("shutdown", f"answered 'shutting down' before the signal: {_describe(res)}")
        if res.by_shutdown and res.outcome == "error_json" and res.status != 503:
            report.fail("shutdown", f"refused or cut with {res.status}, not 503: {_describe(res)}")
    return {"in_flight": len(in_flight), "finished": sum(1 for r in in_flight if not r.by_shutdown),
            "cut": sum(1 for r in in_flight if r.by_shutdown), "after": len(after),
            "refused": sum(1 for r in after if r.by_shutdown),
            "gone": sum(1 for r in after if r.outcome == "no_answer")}

def audit_log(text: str, report: Report) -> int:
    """Exceptions in the proxy's log; returns how many invalid-edit errors it holds (expected)."""
    invalid = 0
    for line in text.splitlines():
        if "invalid edit of the rules" in line:
            invalid += 1
            continue
        if LOG_PROBLEMS.search(line):
            report.fail("exception in the proxy log", line.strip()[:300])
    return invalid

def audit_reloads(reloads: int, valid_edits: int, empties: int, empty_edits: int, report: Report) -> None:
    """One reload per complete valid edit and one notice per emptied file: neither the prefix
    of a file written in place nor an empty file was ever applied."""
    if reloads != valid_edits:
        report.fail("rules reloads", f"{reloads} reloads logged for {valid_edits} valid edits "
                                     "(a partly written or empty file was applied?)")
    if empties != empty_edits:
        report.fail("rules reloads", f"{empties} empty files noticed for {empty_edits} emptied")

def audit_rss(samples: list[tuple[float, int]], warmup: float, max_growth: float, report: Report) -> None:
    if len(samples) < 2:
        report.fail("memory", "too few RSS samples")
        return
    after = [s for s in samples if s[0] >= warmup] or samples[-1:]
    base, end, peak = after[0], samples[-1], max(kb for _, kb in samples)
    growth = end[1] / base[1] - 1
    report.lines.append(f"RSS (mitmdump) {base[1] / 1024:.1f} MB at {base[0]:.0f} s -> {end[1] / 1024:.1f} MB at "
                        f"{end[0]:.0f} s ({growth:+.1%}); peak {peak / 1024:.1f} MB; {len(samples)} samples")
    report.stats.update(rss_start_kb=base[1], rss_end_kb=end[1], rss_growth=growth)
    if growth > max_growth:
        report.fail("memory", f"RSS grew {growth:.1%} after warm-up (limit {max_growth:.0%})")
