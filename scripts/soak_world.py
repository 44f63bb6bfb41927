"""Soak test world: chaos mock upstreams, the behaviour controller, the rules writer, log and RSS watchers."""

from __future__ import annotations

import dataclasses
import os
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _p in (str(REPO),):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from ccswitch.config.watch import SETTLE  # noqa: E402
from tests.support.mock_upstream import (  # noqa: E402
    Behaviour,
    MockUpstream,
    cut_after,
    error_event_after,
    hang_before_headers,
    ok,
    stall_after,
    status,
)

CLIENT_KEY = "fake-soak-client-key-0123456789"
UPSTREAM_KEY = "sk-soak-upstream-{name}-0123456789"
NAMES = ("a", "b", "c")
TIMEOUTS = "{connect: 1s, first_byte: 1s, idle: 1s, total: 3s}"
HANG = 5.0                    # longer than every timeout above: a hang is always a failure
MAX_ATTEMPT_S = 4.0           # an upper bound of one attempt (total 3 s + slack); the ledger may raise it
MARGIN = 0.5                  # between a success the client saw and the proxy having recorded it
KINDS = ("ok", "5xx", "429", "refuse", "hang", "cut", "error_event")
KIND_WEIGHTS = (2, 1, 1, 1, 1, 1, 1)
MID_STREAM = {"cut", "stall", "error_event"}    # labels whose failure may reach a committed client
REQUEST_KINDS = ("msg-stream", "msg", "chat-stream", "chat", "count")
REQUEST_WEIGHTS = (35, 20, 25, 15, 5)
ROUTE_OF = {"msg-stream": ("claude", "messages", 1), "msg": ("claude", "messages", 0),
            "chat-stream": ("chat", "chat", 1), "chat": ("chat", "chat", 0),
            "count": ("claude", "count_tokens", 0)}
LOG_PROBLEMS = re.compile(r"Traceback|Unhandled error|Error logged|failed inside the gateway|"
                          r"Task exception was never retrieved|Exception in callback|CancelledError|addon error",
                          re.IGNORECASE)
INVALID_RULES = (
    ("bad YAML", "upstreams: [\n  - {name: a, protocol: anthropic\nroutes: {claude: [a"),
    ("unknown key", "failover: {threshold: 2, cooldwn: 2s}\n{upstreams}\n{routes}"),
    ("unknown upstream in a route", "{upstreams}\nroutes: {claude: [a, b, c, zz], chat: [a]}"),
    ("bad duration", "failover: {cooldown: two seconds}\n{upstreams}\n{routes}"),
    ("bad type", "failover: {max_attempts: many}\n{upstreams}\n{routes}"),
    ("duplicate upstream", ("{upstreams}\n  - {name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', "
                            "api_key: x}\n{routes}")),
    ("wrong protocol in a route", ("{upstreams}\n  - {name: x, protocol: openai-chat, base_url: "
                                   "'http://127.0.0.1:9/v1', api_key: x}\nroutes: {claude: [a, x], chat: [a]}")),
)
RELOAD_LINES = {"reloaded": "ccswitch: rules reloaded from", "invalid": "invalid edit of the rules",
                "empty": "is empty; keeping the last good rules"}
#: where a file written in place may pause: each prefix is valid rules, none is the whole
PARTIAL_CUTS = ("failover:", "upstreams:", "routes:")
#: the order of live rule edits is shuffled within each round of these
EDIT_ROUND = ("valid", "partial", "invalid", "empty")
def expected_text(upstream: str, model: str) -> str:
    return f"{upstream} answers {model}"

class SoakUpstream(MockUpstream):
    """A mock whose behaviour is a 'kind' the controller flips; it logs what each request got."""

    def __init__(self, name: str, seed: int) -> None:
        super().__init__(name)
        self.record = False
        self.kind = "ok"
        self.flips: list[tuple[float, str]] = [(time.monotonic(), "ok")]
        self.arrivals: list[tuple[str | None, str, float]] = []   # (model, label, monotonic time)
        self._rng = random.Random(seed)

    def set_kind(self, kind: str) -> None:
        with self._lock:
            if kind != self.kind:
                self.kind = kind
                self.flips.append((time.monotonic(), kind))

    def _next(self, model=None) -> Behaviour:
        with self._lock:
            label, beh = self._behaviour(self.kind)
            if isinstance(model, str):
                beh = dataclasses.replace(beh, text=expected_text(self.name, model))
            self.arrivals.append((model, label, time.monotonic()))
            return beh

    def _behaviour(self, kind: str) -> tuple[str, Behaviour]:
        rng = self._rng
        if kind == "ok":
            return "ok", ok()
        if kind == "5xx":
            return "5xx", status(rng.choice((500, 502, 503, 529)))
        if kind == "429":
            return "429", status(429, retry_after=rng.choice((None, 1)))
        if kind == "refuse":       # until the reload moves base_url away, and for stragglers
            return "refuse", status(503)
        if kind == "hang":
            if rng.random() < 0.5:
                return "hang", hang_before_headers(HANG)
            return "stall", stall_after(rng.randint(0, 9), HANG)
        if kind == "cut":
            return "cut", cut_after(rng.randint(0, 10))
        if kind == "error_event":
            return "error_event", error_event_after(rng.randint(0, 9))
        raise ValueError(kind)

class RulesWriter:
    """Writes rules.yaml atomically and waits until the proxy's log acknowledges the edit."""

    def __init__(self, path: Path, mocks: dict[str, SoakUpstream], log: LogWatcher, rng: random.Random) -> None:
        self.path, self.mocks, self.log, self.rng = path, mocks, log, rng
        self.refused: dict[str, int] = {}       # upstream -> closed port while it refuses
        self.lock = threading.Lock()            # one edit at a time, each acknowledged before the next
        self.writes = 0
        self.valid = self.invalid = 0
        self.partial = self.empty = 0          # partial edits are valid ones too, once complete
        self.unacked: list[str] = []
        self.params = {"threshold": 2, "cooldown": "2s", "hold_back": "300ms", "max_attempts": 4,
                       "claude": list(NAMES), "chat": list(NAMES)}

    def text(self, template: str | None = None) -> str:
        p = self.params
        ups = ["upstreams:"]
        for name in NAMES:
            port = self.refused.get(name) or self.mocks[name].port
            ups.append(f"  - {{name: {name}, protocol: anthropic, base_url: 'http://127.0.0.1:{port}', "
                       f"api_key: '{UPSTREAM_KEY.format(name=name)}'}}")
        upstreams = "\n".join(ups)
        routes = f"routes: {{claude: [{', '.join(p['claude'])}], chat: [{', '.join(p['chat'])}]}}"
        head = f"# ccswitch soak, edit {self.writes}\nclient_keys: ['{CLIENT_KEY}']\ntimeouts: {TIMEOUTS}\n"
        if template is not None:
            return head + template.replace("{upstreams}", upstreams).replace("{routes}", routes) + "\n"
        return (head + f"failover: {{threshold: {p['threshold']}, cooldown: {p['cooldown']}, "
                f"hold_back: {p['hold_back']}, max_attempts: {p['max_attempts']}}}\n{upstreams}\n{routes}\n")

    def first(self) -> None:
        self._write(self.text())

    def write_valid(self, shuffle: bool = False, refused: tuple[str, int | None] | None = None) -> float:
        """Write valid rules (new random policy and order if `shuffle`; `refused` = (name, closed
        port or None to restore)); returns when the proxy logged the reload."""
        with self.lock:
            rng = self.rng
            if refused is not None:
                name, port = refused
                if port is None:
                    self.refused.pop(name, None)
                else:
                    self.refused[name] = port
            if shuffle:
                self.params.update(threshold=rng.choice((1, 2, 3, 5)),
                                   cooldown=rng.choice(("500ms", "1s", "2s", "3s")),
                                   hold_back=rng.choice(("200ms", "300ms", "500ms")),
                                   max_attempts=rng.choice((3, 4, 5)),   # always >= the 3 upstreams
                                   claude=rng.sample(NAMES, 3), chat=rng.sample(NAMES, 3))
            self.valid += 1
            return self._write_and_wait(self.text(), "reloaded")

    def write_partial(self) -> float:
        """Valid rules written in place: a valid prefix, a pause shorter than the proxy's settling
        time, then the rest.  Only the whole may ever be applied."""
        with self.lock:
            self.valid += 1
            self.partial += 1
            self.params.update(claude=self.rng.sample(NAMES, 3), chat=self.rng.sample(NAMES, 3))
            text = self.text()
            cut = text.index(self.rng.choice(PARTIAL_CUTS))
            before = self.log.count("reloaded")
            self.writes += 1
            with open(self.path, "w") as f:       # truncates: for a moment the file is empty
                f.write(text[:cut])
                f.flush()
                time.sleep(self.rng.uniform(0.05, 0.3) * SETTLE)
                f.write(text[cut:])
            return self._wait(before, "reloaded", "partial")

    def write_empty(self) -> float:
        """Truncate the file, as an editor or a crashed writer may leave it; the rules stay."""
        with self.lock:
            self.empty += 1
            before = self.log.count("empty")
            self.writes += 1
            self.path.write_text("")
            return self._wait(before, "empty", "empty")

    def write_invalid(self) -> float:
        with self.lock:
            what, template = self.rng.choice(INVALID_RULES)
            self.invalid += 1
            return self._write_and_wait(self.text(template), "invalid", what)

    def _write(self, text: str) -> None:
        self.writes += 1
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def _write_and_wait(self, text: str, ack: str, what: str = "valid") -> float:
        before = self.log.count(ack)
        self._write(text)
        return self._wait(before, ack, what)

    def _wait(self, before: int, ack: str, what: str) -> float:
        acked = self.log.wait(ack, before + 1, timeout=5.0)
        if acked is None:
            self.unacked.append(f"edit {self.writes} ({what}) not acknowledged in the log within 5 s")
            return time.monotonic()
        return acked

class LogWatcher:
    """Counts the proxy's rule-reload log lines as they are written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._tail = b""
        self._counts: Counter = Counter()
        self._lock = threading.Lock()

    def _poll(self) -> None:
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except OSError:
                return
            self._offset += len(data)
            lines = (self._tail + data).split(b"\n")
            self._tail = lines.pop()
            for line in lines:
                text = line.decode(errors="replace")
                for key, pattern in RELOAD_LINES.items():
                    if pattern in text:
                        self._counts[key] += 1

    def count(self, key: str) -> int:
        self._poll()
        return self._counts[key]

    def wait(self, key: str, target: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(key) >= target:
                return time.monotonic()
            time.sleep(0.02)
        return None

class Controller(threading.Thread):
    """Flips the upstreams' behaviour and rewrites rules.yaml until stopped."""

    HANDOVER = 6.0   # a successor must be ok this long before the anchor may fail

    def __init__(self, mocks: dict[str, SoakUpstream], writer: RulesWriter, rng: random.Random,
                 outage_p: float = 0.05) -> None:
        super().__init__(name="soak-controller", daemon=True)
        self.mocks, self.writer, self.rng, self.outage_p = mocks, writer, rng, outage_p
        self.stop_event = threading.Event()
        self.ok_since = {n: time.monotonic() for n in NAMES}
        self.refuse_end_acks: dict[str, list[float]] = defaultdict(list)
        self.outage_until: float | None = None
        self.outages = 0
        self.anchor, self.successor = rng.choice(NAMES), None
        self.anchor_since, self.anchor_for = time.monotonic(), rng.uniform(4.0, 10.0)
        self.error: BaseException | None = None
        self.trace: list[str] = []            # what happened when, for the work dir's controller.log
        self.t0 = time.monotonic()

    def note(self, text: str) -> None:
        self.trace.append(f"{time.monotonic() - self.t0:8.3f} {text}")

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:   # reported as a violation by the caller
            self.error = exc

    def _loop(self) -> None:
        editor = threading.Thread(target=self._edit_rules, name="soak-rules-editor", daemon=True)
        editor.start()
        try:
            while not self.stop_event.wait(self.rng.uniform(0.5, 2.0)):
                self.note("tick")
                self.flip()
        finally:
            editor.join(10)

    def _edit_rules(self) -> None:
        rng = random.Random(self.rng.random())
        kinds: list[str] = []
        try:
            while not self.stop_event.wait(rng.uniform(1.5, 3.0)):
                if not kinds:
                    kinds = rng.sample(EDIT_ROUND, len(EDIT_ROUND))   # every kind in every round
                kind = kinds.pop()
                if kind == "invalid":
                    self.writer.write_invalid()
                elif kind == "empty":
                    self.writer.write_empty()
                elif kind == "partial":
                    self.writer.write_partial()
                else:
                    self.writer.write_valid(shuffle=True)
                self.note(f"rules: {kind} edit acknowledged {self.writer.params}")
        except BaseException as exc:
            self.error = exc

    def kind(self, name: str) -> str:
        return self.mocks[name].kind

    def set_kind(self, name: str, kind: str) -> None:
        old = self.kind(name)
        if kind == old:
            return
        self.note(f"{name}: {old} -> {kind}")
        if kind == "refuse":
            self.mocks[name].set_kind(kind)         # bad from now on, even before the reload
            self.writer.write_valid(refused=(name, MockUpstream.closed_port()))
        elif old == "refuse":
            self.refuse_end_acks[name].append(self.writer.write_valid(refused=(name, None)))
            self.mocks[name].set_kind(kind)
        else:
            self.mocks[name].set_kind(kind)
        if kind == "ok":
            self.ok_since[name] = time.monotonic()

    def flip(self) -> None:
        """One tick: most upstreams take a new random behaviour.  The anchor stays ok; every
        4-10 s a successor is chosen, held ok, and takes over once it has been ok HANDOVER
        seconds (then the old anchor is free).  Rarely, all three fail for 1-2 s."""
        rng = self.rng
        now = time.monotonic()
        if self.outage_until is not None:
            if now < self.outage_until:
                return
            self.outage_until = None
            self.note("outage over")
            self.set_kind(self.anchor, "ok")
            self.anchor_since = time.monotonic()
        elif rng.random() < self.outage_p:
            self.outages += 1
            self.outage_until = now + rng.uniform(1.0, 2.0)
            self.successor = None
            self.note("outage")
            for name in NAMES:
                self.set_kind(name, rng.choices(KINDS[1:], KIND_WEIGHTS[1:])[0])
            return
        if self.successor is None and now - self.anchor_since >= self.anchor_for:
            self.successor = rng.choice([n for n in NAMES if n != self.anchor])
            self.note(f"successor {self.successor}")
            self.set_kind(self.successor, "ok")
        elif self.successor is not None and self.ok_since[self.successor] <= now - self.HANDOVER:
            self.note(f"anchor {self.anchor} -> {self.successor}")
            self.anchor, self.successor = self.successor, None
            self.anchor_since, self.anchor_for = now, rng.uniform(4.0, 10.0)
        for name in rng.sample(NAMES, 3):
            if name in (self.anchor, self.successor) or rng.random() < 0.3:
                continue
            self.set_kind(name, rng.choices(KINDS, KIND_WEIGHTS)[0])

    def stop(self) -> None:
        self.stop_event.set()
        self.join(15)

def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None

class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float) -> None:
        super().__init__(name="soak-rss", daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while True:
            kb = rss_kb(self.pid)
            if kb is not None:
                self.samples.append((time.monotonic() - start, kb))
            if self.stop_event.wait(self.every):
                return
