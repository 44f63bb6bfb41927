"""The shared state in Redis: what the boards learn is written through and published, and what
other instances publish is applied here — all off the request path.

* The boards' `on_change` hook only puts a record in a coalescing queue (`_offer`: a dict keyed
  by what the record is about, the newest record of each thing kept, bounded); spend additions
  are summed per budget period instead.
* One writer task empties it: one MULTI/EXEC with every write (each key with its expiry, spend
  by INCRBYFLOAT) and a PUBLISH of what was written; then one PUBLISH of the spend totals Redis
  returned.
* One reader task applies what the other instances publish (their own records are skipped).
* A supervisor connects, and after every (re)connection first sends the spend this instance
  added meanwhile, then loads what Redis holds and merges it with this instance's view
  (routing.changes.merge), writes back and publishes what this instance knew better.  While
  Redis is unreachable the instance runs on its own memory: it logs that once (and once when
  Redis is back), retries with a growing pause, and keeps only its unsent spend — the rest of
  its view is merged in on reconnection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError, WatchError

from ccswitch.config.state_url import RedisURL
from ccswitch.routing.changes import (
    Change,
    QuotaForget,
    SpendAdded,
    SpendTotal,
    WindowChange,
    add_to,
    decode,
    encode,
    with_total,
)
from ccswitch.routing.state import Boards
from ccswitch.shared import layout
from ccswitch.shared.claims import OUTAGES, Claims

log = logging.getLogger("ccswitch.state")

MAX_PENDING = 20_000     # records queued for Redis at most (beyond it the oldest is dropped)
BATCH = 500              # records per write and per message
PING_EVERY = 5.0         # an idle connection is checked this often
COMMAND_TIMEOUT = 5.0    # seconds Redis has to answer a command
_PARSE_SLICE = 500     # stored records parsed between two turns of the loop
STOP_FLUSH = 2.0         # what is still queued at shutdown gets this long
WATCH_TRIES = 20         # tries of a write whose health records another instance keeps writing meanwhile
#: what a record no board can take raises (a spend period beyond any date, another program's)
_UNUSABLE = (ValueError, OverflowError, OSError)

# the larger of the stored spend and this instance's (a Redis that lost its data, see docs/scale-out.md)
_RAISE_SPEND = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
local want = tonumber(ARGV[1])
if want > held then
  redis.call('SET', KEYS[1], ARGV[1])
  held = want
end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return tostring(held)
"""


def refused_setting(exc: BaseException) -> str | None:
    """What to mend when Redis answers but refuses the URL's login or database (None: an outage)."""
    text = str(exc)
    if isinstance(exc, NoPermissionError) or text.startswith("NOPERM"):
        return "the state URL's user lacks a permission ccswitch needs (docs/scale-out.md lists them)"
    if isinstance(exc, AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        if "HELLO must be called" in text or "NOAUTH" in text or "Authentication required" in text:
            return "it wants a password, and the state URL has none (redis://:PASSWORD@host:port/db)"
        return "the state URL's user name or password is not one it knows"
    if isinstance(exc, ResponseError) and "DB index is out of range" in text:
        return "the state URL's database number is beyond its `databases` setting (16 unless changed)"
    return None


class Lag:
    """Seconds from a change on another instance to its application here, the latest samples."""

    def __init__(self, keep: int = 10_000) -> None:
        self.samples: deque[float] = deque(maxlen=keep)
        self.count = 0

    def add(self, seconds: float) -> None:
        self.samples.append(max(0.0, seconds))
        self.count += 1

    def percentile(self, share: float) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class RedisState(Claims):
    """Boards kept in step with every other instance on the same Redis database."""

    shared = True

    def __init__(self, url: RedisURL, *, instance: str | None = None, wall: Callable[[], float] = time.time,
                 retry: tuple[float, float] = (0.25, 5.0), max_pending: int = MAX_PENDING) -> None:
        self.url = url
        self.where = f"Redis at {url.redacted}"
        self.instance = instance or os.urandom(6).hex()
        self.channel = layout.channel(url.db)
        self.wall = wall
        self.retry = retry
        self.max_pending = max_pending
        self.boards: Boards | None = None
        self.up = False            # connected, and this instance's view merged in
        self.lag = Lag()
        self.dropped = 0           # records dropped because the queue was full
        self.malformed = 0         # published records that could not be read
        self._told_unshared: dict[str, str] = {}     # see Claims: name -> the claim told here
        self._decided: dict[str, float] = {}          # see Claims: occurrence -> until when it stands
        self._pending: dict[tuple, Change] = {}
        self._unsent: dict[tuple, SpendAdded] = {}    # spend Redis has not acknowledged yet
        # upstream -> when a `ccswitch.reset` forgot its windows while Redis was away (or before
        # Redis took it): written on reconnection, it is in no board's view
        self._forgotten: dict[str, float] = {}
        self._oldest: float | None = None             # when the oldest queued record was made
        self._wake = asyncio.Event()
        self._writing = 0          # writes under way (the shutdown waits for them)
        self._task: asyncio.Task | None = None
        self._client: redis.Redis | None = None
        self._told_down: str | None = None      # how its outage was last told: unreachable, or a refusal
        self._told_full = False
        self._connected_once = False
        self._first_look = asyncio.Event()    # Redis was tried once: connected, or not (see Claims)
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self, boards: Boards) -> None:
        self.boards = boards
        boards.listen(self._offer)
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="ccswitch-shared-state")

    async def stop(self) -> None:
        self._stopping = True
        if self.boards is not None:
            self.boards.listen(None)
        if self.up and self._client is not None and (self._pending or self._unsent or self._writing):
            try:
                await asyncio.wait_for(self._drain(self._client), STOP_FLUSH)
            except TimeoutError:
                log.warning("ccswitch: could not hand the last changes to %s: no answer within %g s", self.where,
                            STOP_FLUSH)
            except (*OUTAGES, asyncio.CancelledError) as exc:
                log.warning("ccswitch: could not hand the last changes to %s (%s)", self.where, self._describe(exc))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.lag.count:
            log.info("ccswitch: shared state: applied %d change message(s) from other instances; "
                     "staleness p50 %.1f ms, p99 %.1f ms", self.lag.count,
                     self.lag.percentile(0.5) * 1000, self.lag.percentile(0.99) * 1000)

    # ------------------------------------------------------------------ the boards' hook (request path)

    def _offer(self, change: Change) -> None:
        """Queue a board's record for Redis: a few dictionary operations, never a wait."""
        if isinstance(change, SpendAdded):
            held = self._unsent.get(change.key)
            self._unsent[change.key] = change if held is None else add_to(held, change)
        elif self.up:
            self._pending.pop(change.key, None)     # re-queued at the end: writes keep their order
            self._pending[change.key] = change
            if len(self._pending) > self.max_pending:
                self._drop_oldest()
        else:
            self._keep_resets([change])
            return          # unreachable: this instance's view is merged in when it is back
        if self._oldest is None:
            self._oldest = self.wall()
        self._wake.set()

    def _drop_oldest(self) -> None:
        """The oldest queued record but a reset (one an upstream at most): the others are merged
        in from the boards on the next reconnection, a reset is in none of them."""
        oldest = next((key for key, change in self._pending.items() if not isinstance(change, QuotaForget)), None)
        if oldest is None:
            return
        del self._pending[oldest]
        self.dropped += 1
        if not self._told_full:
            self._told_full = True
            log.warning("ccswitch: %s does not keep up: changes are dropped (other instances "
                        "learn them later)", self.where)

    def _keep_resets(self, unwritten: Iterable[Change]) -> None:
        """Resets Redis did not take (the link lost): written on reconnection, as those made while
        it was away, before Redis's windows of those upstreams could come back."""
        for change in unwritten:
            if isinstance(change, QuotaForget):
                self._forgotten[change.upstream] = max(change.at, self._forgotten.get(change.upstream, change.at))

    # ------------------------------------------------------------------ connection

    def _connect(self) -> redis.Redis:
        # no retries inside the client: an outage surfaces at once and the supervisor handles it
        # bytes that are not UTF-8 (another program's) read as U+FFFD: unreadable records, not a
        # failed read of all of them
        return redis.Redis.from_url(self.url.conninfo, decode_responses=True, encoding_errors="replace",
                                    socket_timeout=COMMAND_TIMEOUT,
                                    socket_connect_timeout=3.0, socket_keepalive=True, retry=Retry(NoBackoff(), 0),
                                    client_name=f"ccswitch-{self.instance}")

    async def _supervise(self) -> None:
        pause = self.retry[0]
        while True:
            client = None
            try:       # the client's making too: a URL redis-py refuses must not end sharing unsaid
                client = self._client = self._connect()
                await self._session(client)
            except OUTAGES as exc:
                self._went_down(exc)
            except Exception as exc:        # a bug here must not end sharing for good
                log.exception("ccswitch: the shared state failed; reconnecting")
                self._went_down(exc)
            finally:
                self.up = False
                self.boards.spend.alone = True   # crossings are this instance's own news again
                self._keep_resets(self._pending.values())
                self._pending.clear()       # merged in from the boards on reconnection
                self._oldest = None
                try:
                    if client is not None:
                        await client.aclose()
                except OUTAGES:
                    pass
            if self._connected_once:
                pause, self._connected_once = self.retry[0], False
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            pause = min(pause * 2, self.retry[1])

    async def _session(self, client: redis.Redis) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)    # first: nothing published from here on is missed
            # its answer, before anything is loaded: a user without pub/sub is refused only there
            await pubsub.get_message(timeout=COMMAND_TIMEOUT)
            await self._flush(client)               # spend added meanwhile, before totals are loaded
            await self._catch_up(client)
            reader = asyncio.create_task(self._read(pubsub))
            writer = asyncio.create_task(self._write_loop(client))
            try:
                done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            finally:
                for task in (reader, writer):
                    task.cancel()
                await asyncio.gather(reader, writer, return_exceptions=True)
        finally:
            try:
                await pubsub.aclose()
            except OUTAGES:
                pass

    def _describe(self, exc: BaseException) -> str:
        return self.url.scrub(f"{type(exc).__name__}: {exc}")[:300]     # scrubbed whole, then cut

    def _went_down(self, exc: BaseException) -> None:
        self._first_look.set()
        refusal = refused_setting(exc)
        # told once per kind: an outage that turns into a refusal (Redis back with a password
        # the URL lacks) is a setting to mend, and said so
        kind = refusal or "unreachable"
        if self._told_down == kind:
            return
        self._told_down = kind
        if refusal is not None:     # no outage: `state:` or Redis needs mending, the wait will not
            log.warning("ccswitch: shared state: %s refuses ccswitch: %s (%s); serving from this "
                        "instance's memory and trying again", self.where, refusal, self._describe(exc))
            return
        log.warning("ccswitch: shared state: %s is unreachable (%s); serving from this instance's "
                    "memory and reconnecting", self.where, self._describe(exc))

    def _came_up(self, merged: int) -> None:
        self._connected_once = True
        self._first_look.set()
        if self._told_down:
            self._told_down = None
            log.warning("ccswitch: shared state: %s is reachable again; %d record(s) merged with "
                        "this instance's view", self.where, merged)
        else:
            log.info("ccswitch: sharing state through %s (instance %s; %d record(s) loaded)",
                     self.where, self.instance, merged)

    # ------------------------------------------------------------------ catching up

    async def _catch_up(self, client: redis.Redis) -> None:
        """Merge what Redis holds with this instance's view, both ways.  Every wait comes before
        the view is taken: a change made during one is in the view (one made after it, and
        before `up`, would be offered while down, and dropped)."""
        await self._hand_on_told(client)
        stored = await self._load(client)
        forgotten = dict(self._forgotten)     # kept until written: a catch-up may fail midway
        boards = self.boards
        seen: set[tuple] = set()
        # first, as the boards took them when they were made (a stored window learnt before one
        # is not taken back: QuotaBoard.apply); each deletes its upstream's windows in Redis
        better: list[Change] = [QuotaForget(name, at) for name, at in sorted(forgotten.items())]
        for i, record in enumerate(stored):
            if i % _PARSE_SLICE == _PARSE_SLICE - 1:
                await asyncio.sleep(0)      # up to the caps (200,000 records): requests go on meanwhile
            seen.add(record.key)
            try:
                merged = boards.merge_in(self._with_unsent(record))
            except _UNUSABLE:
                self._note_malformed(f"key {layout.key_of(record)}")
                continue
            if merged is not None:
                better.append(self._without_unsent(merged))
        reset = {change.upstream for change in better if isinstance(change, QuotaForget)}
        # an upstream's windows learnt after its reset are written again after it
        better += [self._without_unsent(record) for record in boards.view() if record.key not in seen
                   or (isinstance(record, WindowChange) and record.upstream in reset)]
        self.up = True                   # from here on the boards' records queue up for the writer
        boards.spend.alone = False       # and a budget line is told by the one whose addition crossed it
        # reset while the stored records were merged
        late = {name: at for name, at in self._forgotten.items() if forgotten.get(name) != at}
        for name, at in sorted(late.items()):
            self._offer(QuotaForget(name, at))
        self._came_up(len(stored))
        for start in range(0, len(better), BATCH):
            made = self.wall()
            totals = await self._write(client, better[start:start + BATCH], {}, merge=True, made=made)
            await self._tell_totals(client, totals, merge=True, made=made)
        for name, at in (forgotten | late).items():
            if self._forgotten.get(name) == at:
                del self._forgotten[name]

    async def _load(self, client: redis.Redis) -> list[Change]:
        claims = layout.claim_key("")       # who tells what: no board's record
        keys = [key async for key in client.scan_iter(match=layout.PREFIX + "*", count=1000)
                if not key.startswith(claims)]
        plain = [key for key in keys if not layout.is_hash(key)]
        hashes = [key for key in keys if layout.is_hash(key)]
        values: list = []
        for start in range(0, len(plain), BATCH):
            values += await client.mget(plain[start:start + BATCH])
        if hashes:
            async with client.pipeline(transaction=False) as pipe:
                for key in hashes:
                    pipe.hgetall(key)
                values += await pipe.execute(raise_on_error=False)   # another program's key of another type
        now, found = self.wall(), []
        for i, (key, value) in enumerate(zip(plain + hashes, values, strict=True)):
            if i % _PARSE_SLICE == _PARSE_SLICE - 1:
                await asyncio.sleep(0)      # tens of thousands of records: requests go on meanwhile
            try:
                if isinstance(value, Exception):
                    raise ValueError(str(value))
                found += layout.read_back(key, value, now)
            except ValueError:
                self._note_malformed(f"key {key}")
        return found

    def _apply_total(self, total: SpendTotal, added: SpendAdded | None = None) -> None:
        """A total Redis holds, to the spend board with this instance's spend not yet in it;
        `added`: this instance's addition that Redis answered with it."""
        unsent = self._unsent.get(total.key)
        self.boards.spend.apply(total, unsent=unsent.usd if unsent is not None else 0.0,
                                added=added.usd if added is not None else None)

    def _with_unsent(self, record: Change) -> Change:
        """A stored or published spend total plus this instance's own spend not yet in it."""
        if isinstance(record, SpendTotal) and record.key in self._unsent:
            return with_total(self._unsent[record.key], record.usd + self._unsent[record.key].usd)
        return record

    def _without_unsent(self, record: Change) -> Change:
        """This instance's spend total for Redis to take, less the spend the writer will still add
        to it (taken at once: spend added later is in neither).  Written whole, that spend would
        count twice."""
        if isinstance(record, SpendTotal) and record.key in self._unsent:
            return with_total(self._unsent[record.key], record.usd - self._unsent[record.key].usd)
        return record

    # ------------------------------------------------------------------ writing

    async def _write_loop(self, client: redis.Redis) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), PING_EVERY)
            except TimeoutError:
                await client.ping()      # an idle link that died is noticed here
                continue
            self._wake.clear()
            await self._flush(client)

    async def _drain(self, client: redis.Redis) -> None:
        """Until nothing is queued or being written (the shutdown's last flush)."""
        while self._pending or self._unsent or self._writing:
            if self._pending or self._unsent:
                await self._flush(client)
            else:
                await asyncio.sleep(0.005)

    async def _flush(self, client: redis.Redis) -> None:
        """Write and publish everything queued, a batch at a time."""
        while self._pending or self._unsent:
            batch = []
            while self._pending and len(batch) < BATCH:
                batch.append(self._pending.pop(next(iter(self._pending))))
            spend, self._unsent = self._unsent, {}
            made = self._oldest if self._oldest is not None else self.wall()
            self._oldest = self.wall() if self._pending else None
            self._writing += 1
            handing = asyncio.ensure_future(self._hand_over(client, batch, spend, made))
            try:
                await asyncio.shield(handing)
            except asyncio.CancelledError:
                # the session ends under a write (its reader's connection failed, a stop): Redis may
                # have run it already, and its spend sent again would count twice, so it is seen
                # out on its own connection (whose timeout bounds it)
                try:
                    if not self._stopping:    # a stop has its own bound (STOP_FLUSH), spent already
                        await asyncio.wait({handing}, timeout=2 * COMMAND_TIMEOUT)
                finally:
                    handing.cancel()      # still waiting: its spend is sent again (at worst twice, as a timeout)
                    if handing.done() and not handing.cancelled():
                        handing.exception()     # the session's end is what is told
                raise
            finally:
                self._writing -= 1

    async def _hand_over(self, client: redis.Redis, batch: list[Change], spend: dict[tuple, SpendAdded],
                         made: float) -> None:
        """Write and announce one batch; what Redis did not take is queued to be sent again."""
        try:
            totals = await self._write(client, batch, spend, merge=False, made=made)
        except BaseException:
            for key, added in spend.items():     # not acknowledged: sent again (at worst counted twice)
                held = self._unsent.get(key)
                self._unsent[key] = added if held is None else add_to(held, added)
            self._keep_resets(batch)
            raise
        # acknowledged: whatever becomes of the message, sent again it would count twice
        await self._tell_totals(client, totals, merge=False, made=made)

    async def _write(self, client: redis.Redis, changes: list[Change], spend: dict[tuple, SpendAdded], *,
                     merge: bool, made: float) -> list[SpendTotal]:
        """One MULTI/EXEC with the writes and the message announcing them; returns the spend
        totals Redis answered, for `_tell_totals` (they are known only once it answered)."""
        now = self.wall()
        spend = {key: added for key, added in spend.items() if added.end > now}   # a period that ended is gone
        if not changes and not spend:
            return []
        for _ in range(WATCH_TRIES - 1):
            try:
                return await self._write_once(client, changes, spend, merge=merge, made=made, now=now)
            except WatchError as exc:
                if (lost := exc.__cause__ or exc.__context__) is not None:
                    raise lost from None      # redis-py's word for a connection lost while watching
                # another instance wrote one of these meanwhile: weighed again against its word
        # a thing written to at every turn: this batch is written as it is, the last word arriving last
        return await self._write_once(client, changes, spend, merge=merge, made=made, now=now, weigh=False)

    async def _write_once(self, client: redis.Redis, changes: list[Change], spend: dict[tuple, SpendAdded], *,
                          merge: bool, made: float, now: float, weigh: bool = True) -> list[SpendTotal]:
        raise_spend = client.register_script(_RAISE_SPEND) if any(isinstance(c, SpendTotal) for c in changes) \
            else None
        counted: list[tuple[int, SpendAdded | SpendTotal]] = []
        async with client.pipeline(transaction=True) as pipe:
            told = [change for change in changes if not isinstance(change, SpendTotal)]
            if weigh:
                told = await layout.newer_words(pipe, told)
            writing = {id(change) for change in told}
            pipe.multi()
            for change in changes:
                if isinstance(change, SpendTotal):
                    counted.append((len(pipe), change))
                    await raise_spend(keys=[layout.key_of(change)],
                                      args=[repr(change.usd), int(change.end * 1000)], client=pipe)
                elif id(change) in writing:
                    layout.queue_write(pipe, change, now)
            for added in spend.values():
                counted.append((len(pipe), added))
                layout.queue_write(pipe, added, now)
            if told:
                pipe.publish(self.channel, self._message(told, merge, made))
            if not len(pipe):
                return []       # every word was older than Redis's (the pipeline's exit lets the keys go)
            results = await pipe.execute(raise_on_error=False)
        failed = [result for result in results if isinstance(result, Exception)]
        if failed:
            log.warning("ccswitch: %s refused %d write(s): %s", self.where, len(failed), failed[0])
        totals = []
        for index, record in counted:
            if not isinstance(results[index], Exception):
                total = with_total(record, float(results[index]))     # type: ignore[arg-type]
                totals.append(total)
                self._apply_total(total, record if isinstance(record, SpendAdded) else None)
        return totals

    async def _tell_totals(self, client: redis.Redis, totals: list[SpendTotal], *, merge: bool, made: float) -> None:
        if totals:
            await client.publish(self.channel, self._message(totals, merge, made))

    def _message(self, changes: list[Change], merge: bool, made: float) -> str:
        return layout.dumps({"v": 1, "src": self.instance, "ts": made, "merge": merge,
                             "changes": [encode(change) for change in changes]})

    # ------------------------------------------------------------------ reading

    async def _read(self, pubsub) -> None:
        """Applies what other instances publish.  The subscription has its own connection, which
        a NAT or load balancer may forget after a quiet spell without a word: after PING_EVERY
        without a message it is pinged, and without an answer the session ends (and reconnects)."""
        pinged = False
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True,
                                               timeout=COMMAND_TIMEOUT if pinged else PING_EVERY)
            if message is None:
                if pinged:
                    raise redis.ConnectionError("the subscription's connection did not answer a PING")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if message.get("type") == "message":
                self.receive(message["data"])

    def receive(self, data: str) -> None:
        """Apply one published message (not this instance's own)."""
        try:
            message = json.loads(data)
            if not isinstance(message, dict) or not isinstance(message.get("changes"), list):
                raise ValueError("not a change message")
        except ValueError:
            self._note_malformed("a message")
            return
        if message.get("src") == self.instance:
            return
        merge = message.get("merge") is True
        for item in message["changes"]:
            try:
                change = decode(item)
                if merge:
                    self.boards.merge_in(self._with_unsent(change))
                elif isinstance(change, SpendTotal):
                    self._apply_total(change)
                else:
                    self.boards.apply(change)
            except _UNUSABLE:
                self._note_malformed("a change")
        made = message.get("ts")
        if isinstance(made, int | float) and not isinstance(made, bool):
            self.lag.add(self.wall() - made)

    def _note_malformed(self, what: str) -> None:
        self.malformed += 1
        if self.malformed == 1:
            log.warning("ccswitch: %s holds %s that ccswitch cannot read (another program's, or a "
                        "newer ccswitch's?): ignored", self.where, what)
