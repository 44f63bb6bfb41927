"""The record of one routed client request as it moves through the dialer.

Plain data: the addon creates a Job in its request hook, the dialer fills in the
attempts and the outcome, the addon and the ledger read it afterwards.  Live
objects (keys, sockets) never go on the mitmproxy flow; they stay here.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from ccswitch.clock import ms_since, utc_now
from ccswitch.config.models import Rules, Upstream
from ccswitch.vocab import Endpoint
from ccswitch.wire.exchange import ClientRequest
from ccswitch.wire.usage import Usage
from ccswitch.wire.ws_chain import Turn

if TYPE_CHECKING:
    from ccswitch.dial.ws_upstream import UpstreamSockets

#: how much of the earlier attempts' words ccswitch's own error carries
_EARLIER_WORDS = 1000
#: the error recorded when the client went away: no failure is counted against anyone
CLIENT_CLOSED = "client_closed"
#: the error recorded when someone killed the flow in mitmproxy (mitmweb, `flow.kill`) mid-request
KILLED = "killed"


@dataclass(slots=True)
class Attempt:
    upstream: str
    status: int | None = None
    error: str | None = None
    ms: int = 0
    usage: Usage | None = None      # what the upstream reported, even for a failed attempt
    response_id: str | None = None  # a Responses answer's own id, when it named one
    events: int = 0                 # stream events taken from it (an error event of ours comes after)
    said: str | None = None         # an error answer's own message (scrubbed), for the live page
    # (monotonic) while it runs: a flow can end, and be described, before its attempt does
    running_since: float | None = None

    def end(self) -> None:
        if self.running_since is not None:
            self.ms, self.running_since = ms_since(self.running_since), None

    def describe(self) -> str:
        what = str(self.status) if self.status is not None else "-"
        if self.error and self.error != f"HTTP {self.status}":   # not "529 HTTP 529"
            what = f"{what} {self.error}" if self.status is not None else self.error
        ms = self.ms if self.running_since is None else ms_since(self.running_since)
        return f"{self.upstream}: {what} ({ms} ms)"


@dataclass(slots=True)
class Job:
    request: ClientRequest
    rules: Rules
    candidates: list[Upstream]
    flow_id: str = ""
    converted: dict[str, dict] = field(default_factory=dict)   # upstream name -> body converted for it
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: utc_now())
    attempts: list[Attempt] = field(default_factory=list)
    upstream: str | None = None          # the one whose response the client got
    upstream_model: str | None = None
    status: int | None = None            # what the client got
    error: str | None = None
    ttfb_ms: int | None = None
    latency_ms: int | None = None
    client: str | None = None            # the name of the client key it presented, with client keys
    session: str | None = None           # the client's session key (affinity), if it sent one
    bound_to: str | None = None          # the upstream that session was bound to when the request came
    binding: str | None = None           # the key it is bound under (the session's, or its model's)
    rebound_to: str | None = None        # the upstream whose 2xx bound the session anew, if one did
    why_first: str = ""                  # why the first candidate came first (for the flow comment)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (upstream, why) left out by the plan
    sent_body: bytes | None = None       # the body the last attempt sent (model renamed, maybe converted)
    sent_protocol: str | None = None     # the API that body is in (the upstream's it was rendered for)
    shown: bool = True                   # someone looks at the flow: its view keeps what went upstream
    # a turn of a bridged Codex socket: its upstream sockets (for `websocket: true` upstreams) and
    # the turn itself (its new items and previous_response_id); None for an HTTP request
    upstream_sockets: UpstreamSockets | None = None
    turn: Turn | None = None
    # the client has the stream's own last event: going now (Codex resets the HTTP/2 stream once
    # it has `response.completed`) ends nothing that was asked for
    delivered: bool = False
    killed: bool = False     # its flow was killed in mitmproxy: it ends as if its client left
    # served through the relay (a stream, or any request of an HTTP/2 client), its row written
    # there; else answered from the request hook, its row written once that answer is sent
    relayed: bool = False
    # the attempt under way is not the last: another upstream may take the request if it fails
    may_fail_over: bool = False

    def mark_killed(self) -> None:
        self.killed = True

    def client_left(self) -> None:
        if not self.delivered:
            self.error = KILLED if self.killed else CLIENT_CLOSED

    def flow_ended_first(self) -> None:
        """The flow ended (the client left, or mitmproxy killed it) while the dialer still runs
        the job: the relay cancels it a moment later, which the dialer records as the client gone.
        The flow's view is written now, so it says so now."""
        self.client_left()
        last = self.running_attempt
        if last is not None and not self.delivered:
            last.error = KILLED if self.killed else CLIENT_CLOSED

    @property
    def running_attempt(self) -> Attempt | None:
        """The attempt under way (None: before the first, between two, or after the last)."""
        last = self.attempts[-1] if self.attempts else None
        return last if last is not None and last.running_since is not None else None

    def request_sent_for_good(self) -> None:
        """The client has the answer's head: no attempt can send the request again.  What the
        record, the comment and the flow's view need stays; the parsed body (for a long session,
        megabytes of objects), the headers and the conversions go, instead of staying for the
        minutes a stream lasts."""
        self.request = replace(self.request, headers=[], body=b"", json=None)
        self.converted = {}
        if not self.shown:
            self.sent_body = None

    def elapsed_ms(self) -> int:
        return ms_since(self.started)

    @property
    def affinity(self) -> str | None:
        """new / kept / moved: what this request did to its session's binding (None: no session,
        a route with `sticky: off`, which binds nothing, or a count_tokens request, which never
        touches a binding)."""
        if self.session is None or self.request.endpoint == Endpoint.COUNT_TOKENS \
                or self.rules.routes.spec(self.request.route).sticky <= 0:
            return None
        if self.bound_to is None:
            return "new"
        # moved only when another upstream served it: a failure or a passed-on error elsewhere
        # leaves the binding (and the prompt cache) where it was
        return "moved" if self.rebound_to not in (None, self.bound_to) else "kept"

    @property
    def failed_over(self) -> bool:
        return len(self.attempts) > 1

    def earlier_words(self) -> str:
        """What the attempts before the last got, each once and not the last's own words again
        (`relay-a: connection refused`), within about a kilobyte."""
        def words(attempt: Attempt) -> str:
            return f"{attempt.upstream}: {attempt.error or f'HTTP {attempt.status}'}"

        last = words(self.attempts[-1]) if self.attempts else None
        said: list[str] = []
        for attempt in self.attempts[:-1]:
            if (told := words(attempt)) != last and told not in said:
                said.append(told)
        text = "; ".join(said)
        return text if len(text) <= _EARLIER_WORDS else text[:_EARLIER_WORDS - 1] + "…"

    def served_by(self) -> Upstream | None:
        """The upstream whose answer the client got, if one did."""
        return next((u for u in self.candidates if u.name == self.upstream), None)

    def comment(self) -> str:
        """What a person inspecting the flow in mitmweb should see: each attempt, why the first
        upstream was chosen, and which were left out and why."""
        if not self.attempts:
            return ""
        parts = [" | ".join(a.describe() for a in self.attempts)]
        final = self.served_by()
        if final is not None and final.protocol != self.request.client_protocol:
            parts.append(f"{self.request.route} → {final.protocol}")   # a converted request
        if self.why_first and self.candidates:
            parts.append(f"{self.candidates[0].name} first: {self.why_first}")
        # an upstream out for now but tried all the same (a route never goes dark) was not skipped
        tried = {a.upstream for a in self.attempts}
        skipped = [(name, why) for name, why in self.skipped if name not in tried]
        if skipped:
            parts.append("skipped " + ", ".join(f"{name} ({why})" for name, why in skipped))
        return "ccswitch: " + "; ".join(parts)


def marks(job: Job) -> list[tuple[str, str]]:
    """The headers every routed response carries."""
    return [("x-ccswitch-upstream", job.upstream or ""),
            ("x-ccswitch-attempts", str(len(job.attempts)))]
