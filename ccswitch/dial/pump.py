"""The stream half of an attempt: hold back the opening events, commit on the
first content event, then pump every event to the client as it arrives.

Before the commit an error is invisible to the client (the dialer fails over).
After it, a failure ends the stream with the client protocol's error event and
still counts against the upstream: never a silent truncation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ccswitch.config.models import Upstream
from ccswitch.dial.job import Attempt, Job, marks
from ccswitch.dial.outcome import Failure, Streamed, network_failure
from ccswitch.dial.read_deadline import ReadDeadline
from ccswitch.dial.render import OutgoingRequest
from ccswitch.net import http1
from ccswitch.routing.rate_limits import limit_headers
from ccswitch.vocab import Action, Protocol
from ccswitch.wire import protocols
from ccswitch.wire.protocols import Kind, in_stream_status
from ccswitch.wire.reasoning import seal_of
from ccswitch.wire.redact import scrub, scrub_json, scrub_text
from ccswitch.wire.sse import SSEError, SSEParser
from ccswitch.wire.usage import UsageTap

log = logging.getLogger("ccswitch.pump")

# a stream over at its last event waits this long for the body's end behind it (upstreams send it
# at once; one that holds its body open past it delays the client's end by this much, no more,
# and its connection is closed)
_BODY_END_GRACE = 1.0
_ERROR_TEXT = 200     # characters of an in-stream error kept for the row, the log and the attempt list
# held back before the commit, waiting for content: past this the stream commits as when its
# hold-back time is up (an upstream may send pings or padding for all of it; memory is per stream)
HOLD_BACK_BYTES = 1024 * 1024
#: upstream protocols whose streams open with an event at once (see `_pump`)
OPENS_AT_ONCE = frozenset({Protocol.ANTHROPIC, Protocol.RESPONSES})


def nothing() -> None:
    """An `on_commit` that is told nothing."""


class Pump:
    __slots__ = ("attempt", "broken", "committed", "content_seen", "error", "events", "finish_kind", "finished",
                 "finishes", "headers", "held", "held_size", "job", "limit_headers", "on_commit", "outgoing", "parser",
                 "response", "seals", "sink", "stream", "tap", "terminal", "upstream")

    def __init__(self, job: Job, upstream: Upstream, outgoing: OutgoingRequest, translation,
                 response: http1.Response, sink, headers: list[tuple[str, str]], attempt: Attempt,
                 on_commit: Callable[[], None] = nothing) -> None:
        self.job, self.upstream, self.outgoing, self.attempt = job, upstream, outgoing, attempt
        self.on_commit = on_commit        # told when the client gets the stream (a probe's has begun)
        self.tap = UsageTap(upstream.protocol)
        self.response, self.sink, self.headers = response, sink, headers
        self.limit_headers: list[tuple[str, str]] = []   # kept of the head past the commit
        self.stream = translation.stream(job.request, upstream)
        self.parser = SSEParser()
        self.held: list[bytes] = []
        self.held_size = 0      # bytes held before the commit
        self.committed = False
        self.terminal = False
        self.content_seen = False
        self.finished = False   # the answer is complete (a Chat finish_reason, an Anthropic stop_reason came)
        self.finish_kind, self.finishes = protocols.FINISHING.get(upstream.protocol, (None, None))
        self.error: tuple[str, int] | None = None   # (message, status it stands for)
        self.broken: str | None = None    # why an event is not the protocol's: never passed on
        self.events = 0                   # events taken: the sequence number an error event of ours gets
        self.seals: list[int] = []        # of the reasoning items this upstream sealed in its output

    async def run(self) -> Failure | Streamed:
        try:
            return await self._run()
        finally:
            # however it ends, the client gone too; after the tail, whose last event (without its
            # blank line) may be the one that carries the usage (Responses' response.completed)
            usage = self.tap.usage      # read before the scrub each event gets: its raw JSON is kept
            if usage is not None and usage.raw:
                usage.raw = scrub_json(usage.raw, self.outgoing.secrets)
            self.attempt.usage = usage
            self.attempt.response_id, self.attempt.events = self.tap.response_id, self.events

    async def _run(self) -> Failure | Streamed:
        deadline = ReadDeadline()
        try:
            return await self._pump(deadline)
        finally:
            deadline.close()

    async def _pump(self, deadline: ReadDeadline) -> Failure | Streamed:
        rules = self.job.rules
        # silence is counted from the last bytes in (the head's, at first), also across the commit
        # that ends the hold-back: `idle` is the longest wait between two pieces, whatever happens meanwhile
        last_in = time.monotonic()
        hold_until = last_in + rules.failover.hold_back
        # An Anthropic or Responses stream opens with an event at once (`message_start`,
        # `response.created`): one silent after its head (a relay that hangs once it has answered
        # 200) is not committed at the hold-back, since an empty stream could not fail over any
        # more.  Its first whole event has `first_byte` to come, as the head had; then the next
        # upstream is tried.  A Chat stream may be silent until its first token (a reasoning model's minutes).
        silent_until = last_in + rules.timeouts.first_byte if self.upstream.protocol in OPENS_AT_ONCE else None
        # Such a stream whose first content is that late after its opening events (a relay that
        # hangs once it has opened) is not committed at the hold-back either while another upstream
        # may take the request: committed, it could only end in an error at `idle`.
        content_until = silent_until if self.job.may_fail_over else None
        held_until = hold_until if content_until is None else content_until    # commit, or give up then
        if rules.failover.hold_back <= 0:
            await self._commit()
        chunks = self.response.aiter_bytes().__aiter__()
        ended = "stream ended before its terminal event"
        ended_cleanly = timed_out = False
        while True:
            now = time.monotonic()
            if not self.committed and silent_until is not None:
                # until its first event only `first_byte` counts, however much shorter `idle` is
                wait = max(0.0, silent_until - now)
            else:
                wait = max(0.0, last_in + rules.timeouts.idle - now)
                if not self.committed:
                    wait = min(wait, max(0.0, held_until - now))
            # The deadline may cut a read short: the body iterators (http1.Response, a bridged
            # socket's turn) take nothing from their buffers before their one wait, so a
            # cancelled read loses no bytes.  No task and no wait set per read, and one timer
            # for the whole stream, not one per piece of its body.
            deadline.start(wait)
            try:
                chunk = await chunks.__anext__()
            except asyncio.CancelledError:
                if not deadline.stop():
                    raise
                now = time.monotonic()
                if not self.committed and silent_until is not None and now >= silent_until - 0.0005:
                    ended = "first_byte timeout (no event after the response head)"
                elif (not self.committed and now >= held_until - 0.0005
                        and now < last_in + rules.timeouts.idle - 0.0005):
                    if content_until is None:
                        await self._commit()        # held long enough: stream what we have
                        continue
                    ended = "first_byte timeout (no content after the opening events)"
                else:
                    ended = "idle timeout"
                timed_out = True
                break
            except StopAsyncIteration:
                deadline.stop()
                ended_cleanly = True
                break
            except (http1.TransportError, OSError) as exc:
                deadline.stop()
                failure = network_failure(self.upstream.name, exc, Action.SWITCH, "idle")
                ended, timed_out = failure.reason, failure.client_status == 504
                ended_cleanly = self.finished   # a Chat answer whole up to its finish loses nothing with its body's end
                break
            deadline.stop()
            read_at = time.monotonic()
            try:
                events = self.parser.feed(chunk)
            except SSEError as exc:
                ended = str(exc)
                break
            if not (self.committed and self.heartbeats_only(events)):
                last_in = read_at
            if events:    # a piece of an event is not its first ("event: mes", then silence)
                silent_until = None
            over = self._take(events)
            if self.broken is not None:
                # the good events before it in that read (a commit, on their content), then the error
                # event; with no content yet, the next upstream is tried, unseen
                await self._flush()
                ended = self.broken
                break
            # the next piece can be minutes away: hold nothing of this one (events parsed to JSON)
            del chunk, events
            await self._flush()       # one write per upstream read, not one per event
            if over:
                return await self._finish()
        # after a cut, a timeout or an oversized event the unfinished event is dropped, never
        # passed on: the client's SSE parser would glue our error event onto it
        if not self.terminal and ended_cleanly:
            over = self._take(self.parser.end())
            if not over and self.finished:
                # an upstream that ends its body (or drops its connection) after the answer's finish
                # but sends no `[DONE]` / `message_stop` (some relays): the answer is whole, and the
                # client gets the closing event it waits for
                over = self._take([protocols.closing_event(self.upstream.protocol)])
            await self._flush()
            if over:
                return await self._finish()
        if self.terminal:
            return await self._finish()
        return await self._fail(ended, timed_out)

    def heartbeats_only(self, events) -> bool:
        """An Anthropic stream's read that brought nothing but `ping` events, comments or line ends: no
        progress, so it does not put off `idle` (a relay that keeps a committed stream alive with
        pings alone would hold its client for good).  Chat and Responses streams' comments do: a
        reasoning model may send nothing else for minutes."""
        if self.upstream.protocol != Protocol.ANTHROPIC or (self.parser.holds_part
                                                             and not self.parser.holds_heartbeat_part):
            return False            # (no event at all: line ends alone, a keepalive too)
        return all(not event.event or event.type == "ping" for event in events)

    def _take(self, events) -> bool:
        """Judge and translate a batch of events into `held`; True when the stream is over."""
        for event in events:
            if event.event:       # not a comment block
                if event.not_json():
                    # what it starts with, scrubbed before it is cut as an error event's text is
                    start = scrub_text(event.data[:4096], self.outgoing.every_secret(self.job.rules))
                    self.broken = f"a stream event that is not JSON: {start[:60]!r}"
                    return True
                self.events += 1
            self.tap.feed(event)
            kind = protocols.classify_event(self.upstream.protocol, event)
            if kind is Kind.ERROR:
                # every key the rules hold, before the cut: a key cut in two is not found by the
                # ledger's scrub after it (the text may quote another upstream's key a client pasted)
                message = scrub_text(protocols.stream_error_message(event), self.outgoing.every_secret(self.job.rules))
                self.error = (message[:_ERROR_TEXT], in_stream_status(event.json()))
            elif kind is Kind.TERMINAL:
                self.terminal = True
            elif kind is Kind.CONTENT:
                self.content_seen = True
            elif event.type == "response.output_item.done" and self.upstream.protocol == Protocol.RESPONSES:
                body = event.json()
                if isinstance(body, dict) and (seal := seal_of(body.get("item"))) is not None:
                    self.seals.append(seal)
            if kind is self.finish_kind and not self.finished:
                self.finished = self.finishes(event)
            out = self.stream.feed(event)
            if out:
                self.held.append(scrub(out, self.outgoing.secrets))
                if not self.committed:
                    self.held_size += len(out)
            if kind in (Kind.ERROR, Kind.TERMINAL):
                return True
        return False

    async def _flush(self) -> None:
        """Commit on the first content event; once committed, pass on whatever is held.  An error
        behind that event in the same read comes after the commit, as it does a read later: how
        the upstream's bytes happened to be cut must not decide whether the client sees it."""
        if not self.committed:
            if self.content_seen or self.held_size > HOLD_BACK_BYTES:
                await self._commit()
            return
        if self.held:
            data = b"".join(self.held)
            self.held.clear()
            await self.sink.write(data)

    async def _commit(self) -> None:
        self.committed = True
        self.on_commit()
        job = self.job
        job.upstream, job.status = self.upstream.name, self.response.status_code
        job.ttfb_ms = job.elapsed_ms()
        await self.sink.start(self.response.status_code, self.headers + marks(job), None)
        # a stream can last minutes: its headers (dozens from some upstreams) were needed for
        # the client's head and a failover, and neither can come again; nor can the request go again.
        # Only what says when the upstream serves again stays, for a rate-limit error later on.
        self.limit_headers = limit_headers(self.headers)
        self.headers = self.response.headers = []
        self.outgoing.sent_for_good()
        job.request_sent_for_good()
        if self.held:
            data = b"".join(self.held)
            self.held.clear()
            await self.sink.write(data)

    async def _finish(self) -> Failure | Streamed:
        if self.error is not None:
            message, status = self.error
            action = self.job.rules.failover.action_for(status)
            if not self.committed and action != Action.PASS:
                # before the commit an in-stream error is just another failed attempt
                body = b"".join(self.held) + self._flush_translation()
                return Failure(self.upstream.name, self.response.status_code, f"stream error: {message}",
                               action, self.headers, body, translated=True, stands_for=status)
            if not self.committed:
                await self._commit()
            await self._end(self._flush_translation(), body_over=True)
            self.job.error = f"stream error: {message}"
            # a `pass` error is the client's own (e.g. invalid request): no failure counted
            return Streamed(self.upstream.name, ok=None if action == Action.PASS else False, reason=self.job.error,
                            rate_limited=status == 429, limit_headers=self.limit_headers)
        if not self.committed:
            await self._commit()
        await self._end(self._flush_translation(), body_over=True)
        return Streamed(self.upstream.name, ok=True)

    async def _fail(self, reason: str, timed_out: bool = False) -> Failure | Streamed:
        status = 504 if timed_out else 502
        if not self.committed:
            return Failure(self.upstream.name, None, reason, self.job.rules.failover.on_network_error,
                           client_status=status)
        message = f"upstream {self.upstream.name}: {reason}"
        await self._end(protocols.stream_error_event(self.job.request.client_protocol, message, status,
                                                     self.events, self.tap.response_id))
        self.job.error = reason
        return Streamed(self.upstream.name, ok=False, reason=reason)

    def _flush_translation(self) -> bytes:
        return scrub(self.stream.finish(), self.outgoing.secrets)

    async def _end(self, tail: bytes, *, body_over: bool = False) -> None:
        """The last events, then the end of the answer.  After the stream's own last event
        (`body_over`) the end waits, as a plain proxy's does, for the upstream body's end that
        follows it: the connection is back in the pool before the client can send again."""
        if tail:
            await self.sink.write(tail)
        if not body_over:
            await self.sink.end()
            return
        self.job.delivered = True
        await self.response.finish(_BODY_END_GRACE)
        try:
            await self.sink.end()
        except ConnectionError:
            pass    # the client left once it had the last event: the attempt still served it
