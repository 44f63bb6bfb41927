"""Daily activation probes: one tiny real request at each `activate_at` time.

Relays and subscription plans start their billing window on first use; a probe
at a fixed local time opens it when the user wants.  The schedule is pure
(`due`, given a clock); sending is one small async function; the addon runs the
loop and records each probe in the ledger's `activations` table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from ccswitch.clock import ms_since, utc_now
from ccswitch.config.models import Rules, Upstream
from ccswitch.config.schedule import Upcoming, fire_instant
from ccswitch.config.values import parse_hhmm
from ccswitch.dial.outcome import transport_text
from ccswitch.dial.render import render
from ccswitch.net import http1
from ccswitch.routing.rate_limits import limit_headers
from ccswitch.translate.chat.responses_request import is_codex_backend
from ccswitch.vocab import Protocol
from ccswitch.wire.exchange import ClientRequest, json_or_none
from ccswitch.wire.protocols import dressed_error, in_stream_status
from ccswitch.wire.sse import is_event_stream, parse_all

log = logging.getLogger("ccswitch.activation")

_DEFAULT_MODEL = {Protocol.ANTHROPIC: "claude-haiku-4-5", Protocol.RESPONSES: "gpt-5-mini", "openai-chat": "gpt-5-mini"}
_PROMPT = "Reply with the single word: ok"


# ---------------------------------------------------------------------- the schedule

@dataclass(frozen=True)
class Slot:
    upstream: str
    day: date          # the local day the time belongs to
    at: str            # "HH:MM" as written in the rules

    @property
    def text(self) -> str:
        """How the ledger's `activations.slot` names it: "YYYY-MM-DD HH:MM", local."""
        return f"{self.day.isoformat()} {self.at}"


@dataclass
class SlotState:
    tries: int = 0
    done: bool = False
    next_try: datetime | None = None


def slot_instants(upstream: Upstream, days, tz) -> Iterator[tuple[datetime, Slot]]:
    """Each of the upstream's `activate_at` times on each of `days`: (when it fires, its slot)."""
    for day in days:
        for at in upstream.activate_at:
            yield fire_instant(day, parse_hhmm(at), tz), Slot(upstream.name, day, at)


@dataclass
class Schedule:
    """Which slots fired, failed or wait for a retry; in memory, seeded from the ledger."""
    slots: dict[Slot, SlotState] = field(default_factory=dict)
    # when this process first saw each slot's upstream enabled with that time (UTC), for the
    # slots of yesterday, today and tomorrow; `began` is the first look.  Grace is for times
    # missed while ccswitch was not running: a time that passed while its upstream was disabled,
    # or before a reload added it, was not missed that way
    seen: dict[Slot, datetime] = field(default_factory=dict)
    began: datetime | None = None

    def due(self, rules: Rules, now: datetime, enabled=lambda u: u.enabled) -> list[tuple[Upstream, Slot]]:
        """Slots to probe at `now` (aware, in the rules' time zone).

        A slot fires once at its time; if ccswitch was not running then, it fires late
        only within the grace window; after a failure it retries every retry_interval,
        at most `retries` more times that day.
        """
        out = []
        settings = rules.activation
        moment = _utc(now)
        self.began = self.began or moment
        seen = {}
        for upstream in rules.upstreams:
            if not upstream.activate_at or not enabled(upstream):
                continue
            days = [d for d in (now.date() + timedelta(days=n) for n in (-1, 0, 1))   # -1: a retry past midnight;
                    if d.weekday() in upstream.days]                                   # +1: seen before it comes
            instants = set()
            missed: list[tuple[datetime, Slot]] = []
            for instant, slot in slot_instants(upstream, days, now.tzinfo):
                if instant in instants:
                    continue        # two times on one instant (a DST change moved one onto the other): one probe
                instants.add(instant)
                seen[slot] = since = self.seen.get(slot, moment)
                if _utc(instant) > moment:
                    continue
                state = self.slots.get(slot)
                if state is None:
                    if _utc(instant) < since and since != self.began:
                        continue            # it passed while ccswitch ran, before the upstream or time was on
                    if moment - _utc(instant) > timedelta(seconds=settings.grace):
                        continue            # missed by more than the grace window
                    missed.append((instant, slot))
                elif not state.done and state.tries <= settings.retries and state.next_try \
                        and moment >= _utc(state.next_try):
                    out.append((upstream, slot))
            if missed:
                # several times passed while ccswitch was not running: one probe opens the window,
                # for the latest of them; the others are covered by it (a second at once says nothing new)
                missed.sort(key=lambda pair: _utc(pair[0]))
                for _, covered in missed[:-1]:
                    self.slots[covered] = SlotState(done=True)
                out.append((upstream, missed[-1][1]))
        self.seen = seen
        return out

    def started(self, slot: Slot) -> None:
        state = self.slots.setdefault(slot, SlotState())
        state.tries += 1
        state.next_try = None

    def finished(self, slot: Slot, ok: bool, now: datetime, retry_interval: float) -> None:
        state = self.slots.setdefault(slot, SlotState())
        state.done = ok
        state.next_try = None if ok else now + timedelta(seconds=retry_interval)

    def retries(self, rules: Rules) -> dict[str, datetime]:
        """Each upstream's next retry of a failed probe (the soonest, when several wait), for the
        status: a slot with a try left (its first and `activation.retries` more) that waits for
        it, of a time the rules still have."""
        times = {u.name: u.activate_at for u in rules.upstreams}
        found: dict[str, datetime] = {}
        for slot, state in self.slots.items():
            if not state.done and state.next_try is not None and state.tries <= rules.activation.retries \
                    and slot.at in times.get(slot.upstream, ()):
                if slot.upstream not in found or state.next_try < found[slot.upstream]:
                    found[slot.upstream] = state.next_try
        return found

    def upcoming(self, rules: Rules) -> dict[str, Upcoming]:
        """For the status, each upstream's retry (`retries`) and the times (local day, minute)
        this process probed or covered: such a time does not come again that day, though a
        reload moved it (another time zone) to a moment still ahead."""
        taken: dict[str, set[tuple[date, int]]] = {}
        for slot in self.slots:
            taken.setdefault(slot.upstream, set()).add((slot.day, parse_hhmm(slot.at)))
        retries = self.retries(rules)
        return {name: Upcoming(retries.get(name), frozenset(taken.get(name, ())))
                for name in retries.keys() | taken.keys()}

    def gave_up(self, slot: Slot, retries: int) -> bool:
        """The slot failed and has no try left today: its first try and `retries` more all failed."""
        state = self.slots.get(slot)
        return state is not None and not state.done and state.tries > retries

    def forget_before(self, day: date) -> None:
        for slot in [s for s in self.slots if s.day < day]:
            del self.slots[slot]


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


# ---------------------------------------------------------------------- the probe

@dataclass
class ProbeResult:
    upstream: str
    ok: bool
    status: int | None
    error: str | None
    latency_ms: int
    ts: datetime
    limits: tuple[tuple[str, str], ...] = ()   # the answer's rate-limit headers: what ccswitch learns of them
    # the row's own id: a batch the ledger writes again (its commit's answer lost) adds no copy
    probe_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def row(self, slot: Slot | None = None) -> dict:
        """The `activations` row; `slot` is the time it was sent for, None for one sent on demand."""
        return {"ts": self.ts.astimezone(UTC).isoformat(timespec="milliseconds"),
                "upstream": self.upstream, "status": self.status, "ok": int(self.ok), "error": self.error,
                "latency_ms": self.latency_ms, "slot": slot.text if slot is not None else None,
                "probe_id": self.probe_id}


def probe_model(upstream: Upstream) -> str:
    if upstream.activation_model:
        return upstream.activation_model
    default = _DEFAULT_MODEL[upstream.protocol]
    mapped = upstream.map_model(default)
    return mapped if mapped != default else next(iter(upstream.models.values()), default)


def probe_body(upstream: Upstream) -> dict:
    """The smallest sensible request in the upstream's protocol."""
    model = probe_model(upstream)
    if upstream.protocol == Protocol.ANTHROPIC:
        return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": _PROMPT}]}
    if upstream.protocol == Protocol.RESPONSES:
        if is_codex_backend(upstream):   # streams only, refuses max_output_tokens
            return {"model": model, "instructions": "Answer briefly.", "store": False, "stream": True,
                    "input": [{"type": "message", "role": "user",
                               "content": [{"type": "input_text", "text": _PROMPT}]}]}
        return {"model": model, "input": _PROMPT, "max_output_tokens": 16, "store": False}
    # OpenAI's reasoning models (the default gpt-5-mini among them) refuse the older max_tokens
    return {"model": model, "max_completion_tokens": 16, "messages": [{"role": "user", "content": _PROMPT}]}


def _not_an_answer(content: bytes, is_sse: bool) -> str:
    """Why a 2xx is no answer, in the attempts table's words: an error under it says its status."""
    parsed = None if is_sse else json_or_none(content)
    if dressed_error(parsed):
        return f"HTTP {in_stream_status(parsed)} under a 2xx"
    return "a 2xx without content"


def has_content(protocol: str, body: bytes, is_sse: bool) -> bool:
    """A 2xx that really answered: text or output, not an empty shell or an error."""
    if is_sse:
        events = parse_all(body)
        return any(e.type.endswith(".delta") or e.type == "content_block_delta" for e in events)
    parsed = json_or_none(body)
    if not isinstance(parsed, dict) or parsed.get("error"):
        return False
    if protocol == Protocol.ANTHROPIC:
        return bool(parsed.get("content"))
    if protocol == Protocol.RESPONSES:
        return bool(parsed.get("output"))
    return bool(parsed.get("choices"))


async def send_probe(client: http1.UpstreamClient, upstream: Upstream, timeout: float = 60.0,
                     allow_url: Callable[[str], bool] | None = None,
                     clock: Callable[[], datetime] = utc_now, connect_timeout: float = 30.0) -> ProbeResult:
    """One probe; `connect_timeout`: the rules' `timeouts.connect`, as for requests (through a
    proxy, the tunnel's setup and the TLS handshake are part of it)."""
    body = probe_body(upstream)
    endpoint = {Protocol.ANTHROPIC: "messages", Protocol.RESPONSES: "responses"}.get(upstream.protocol, "chat")
    req = ClientRequest(route="", endpoint=endpoint, method="POST", url="", headers=[],
                        body=json.dumps(body).encode(), json=body, model=body["model"],
                        stream=bool(body.get("stream")), client_protocol=upstream.protocol)
    out = render(upstream, req)
    sent = json.loads(out.body)
    sent["model"] = body["model"]       # activation_model is sent as written, never renamed
    started, ts = time.monotonic(), clock()
    status, error, ok, limits = None, None, False, ()
    if allow_url is not None and not allow_url(out.url):
        return ProbeResult(upstream.name, False, None, "refused: not a loopback address (test guard)", 0, ts)
    try:
        async with asyncio.timeout(timeout):
            response = await client.send("POST", out.url, out.headers, json.dumps(sent).encode(),
                                         connect_timeout=min(timeout, connect_timeout), via=out.via)
            try:
                status = response.status_code
                limits = tuple(limit_headers(response.headers))
                content = await response.aread()
            finally:
                await response.aclose()
        is_sse = is_event_stream(response.header("content-type"))
        ok = 200 <= status < 300 and has_content(upstream.protocol, content, is_sse)
        if not ok:
            error = f"HTTP {status}" if not 200 <= status < 300 else _not_an_answer(content, is_sse)
    except TimeoutError:
        error = f"timeout (no answer within {timeout:g}s)"
    except (http1.TransportError, OSError) as exc:
        # in the words the attempts table uses: `connection refused`, `TLS error`, the proxy's own
        error = transport_text(exc)
    except ValueError as exc:       # e.g. a bad URL
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ProbeResult(upstream.name, ok, status, error, ms_since(started), ts, limits)
