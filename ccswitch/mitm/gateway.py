"""The state ccswitch's addons share: the rules in force, the health board, the ledger;
and the TLS settings of ccswitch's own upstream connections, taken from mitmproxy's options."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime

from mitmproxy import ctx, exceptions

from ccswitch.activation.probe import Schedule
from ccswitch.clock import utc_now
from ccswitch.config.database_url import PostgresURL
from ccswitch.config.models import ROUTE_PROTOCOLS, Rules
from ccswitch.config.watch import RulesFile
from ccswitch.dial.job import Job
from ccswitch.ledger.rows import attempt_rows, request_row, without_keys
from ccswitch.ledger.spill import SPILL_DIR
from ccswitch.ledger.writer import Ledger
from ccswitch.mitm.lifecycle import hook_task
from ccswitch.net import http1
from ccswitch.report.live import LiveBoard
from ccswitch.report.spend import LedgerSpend, RowPrices, ledger_spend
from ccswitch.report.terminal import printable
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.budget import CLIENT, UPSTREAM, SpendBoard, period_start
from ccswitch.routing.events import Events
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.issued import IssuedResponses
from ccswitch.routing.quota import QuotaBoard
from ccswitch.routing.state import Boards, InMemoryState, SharedState
from ccswitch.shared.factory import StateUnavailable, state_for
from ccswitch.vocab import Protocol

log = logging.getLogger("ccswitch")

SPEND_RETRY = 30   # seconds between reads of the spend so far while the ledger cannot be read
#: seconds routed requests wait at start for the spend so far (a budget needs it); a ledger that
#: has not answered by then (a lock on its table, a pooler queueing the query) is read on meanwhile
SPEND_WAIT = 15
STATE_OPEN_WAIT = 5.0   # how long a failed spend read waits for the shared state to be opened
_LEDGER_CLOSE_WAIT = 12   # seconds a stop waits for a moved-away ledger's close (its own flush waits 10)
UPSTREAM_TLS_OPTIONS = {"ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}


def upstream_tls() -> ssl.SSLContext:
    """TLS for ccswitch's own upstream connections, from mitmproxy's upstream TLS options."""
    options = ctx.options
    try:
        return http1.ssl_context_for(insecure=options.ssl_insecure, ca_file=options.ssl_verify_upstream_trusted_ca,
                                     ca_dir=options.ssl_verify_upstream_trusted_confdir)
    except (OSError, ssl.SSLError) as exc:
        given = [f"{name}={value}" for name, value in (
            ("ssl_verify_upstream_trusted_ca", options.ssl_verify_upstream_trusted_ca),
            ("ssl_verify_upstream_trusted_confdir", options.ssl_verify_upstream_trusted_confdir)) if value]
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise exceptions.OptionsError(
            f"ccswitch: cannot load the upstream CA ({', '.join(given) or 'the system store'}): {reason}") from exc


class Gateway:
    """State shared by the addon classes: the rules in force, what is known of each upstream
    (health, rate-limit windows, the sessions bound to it), the ledger."""

    def __init__(self) -> None:
        self.rules_file = RulesFile()
        self.events = Events()         # cooldowns, recoveries, full windows, budgets: for the notifier
        self.health = HealthBoard(events=self.events)
        self.quota = QuotaBoard()
        self.sessions = SessionBindings()
        self.issued = IssuedResponses()
        self.spend = SpendBoard(events=self.events)
        self._spend_reader: asyncio.Task | None = None   # reads the spend so far once the ledger can be read
        self.first_spend_read: asyncio.Task | None = None   # the start's, when no budget waited for it
        self._spend_wait_ends: float | None = None   # when requests stop waiting for it (monotonic)
        # activation probes in flight: a shutdown waits for them as for requests, since one that
        # reached its upstream and left no row before the ledger closed is sent again after a restart
        self.probes: set[asyncio.Task] = set()
        self.activations = Schedule()   # which probes fired, failed or wait for a retry (the status shows retries)
        # what the four boards above learn is shared with other instances when the rules name a `state`
        self.boards = Boards(self.health, self.quota, self.sessions, self.spend, self.issued)
        self.state: SharedState = InMemoryState()
        self._state_for: tuple | None = None   # the rules' `state` the running one was opened for
        self._state_lock = asyncio.Lock()
        self._state_opened = asyncio.Event()   # the start's `open_state` has run (the spend read may wait for it)
        # ledgers a reload moved away from (or the ledger switched off), closing, and the rows those
        # closed lost: `ledger_rows_dropped` counts on from them
        self._closing_ledgers: list[tuple[threading.Thread, Ledger]] = []
        self._dropped_by_closed_ledgers = 0
        self.price = RowPrices()   # each finished request priced once: for budgets and the live page
        self.ledger: Ledger | None = None
        self.live = LiveBoard()   # counters and the last requests since start, for the live page
        # every upstream URL ccswitch itself dials is asked here first; tests install a
        # loopback-only guard (tests/support/loopback_guard.py), production allows all
        self.allow_url: Callable[[str], bool] = lambda url: True
        # the router's upstream client once it runs: probes share its pools, so an upstream's
        # `max_connections` caps them too
        self.upstream_client: http1.UpstreamClient | None = None
        # per upstream, (connections open, requests waiting for one): the router installs its client's
        self.connections: Callable[[], dict[str, tuple[int, int]]] = dict
        # the requests under way (the live page's and the metrics'): the router installs its dialer's
        self.in_flight: Callable[[], list[Job]] = list

    @property
    def rules(self) -> Rules:
        return self.rules_file.rules

    def sync_upstreams(self) -> None:
        """After the rules were (re)loaded: what is known of upstreams that keep their name stays,
        unless another key, URL or protocol makes one another account: its rate-limit windows and
        the responses it issued were the old account's (a spent key swapped for a fresh one must
        not stay full, nor be sent a follow-up it cannot hold)."""
        names, fingerprints = [u.name for u in self.rules.upstreams], self.rules_file.fingerprints()
        self.boards.sync_accounts(fingerprints)   # first: the resets below are the new accounts' news
        self.quota.sync(names)
        for name in self.health.sync(fingerprints, {u.name: u.proxy for u in self.rules.upstreams}):
            self.quota.drop(name)
            self.issued.forget(name)
        self.sessions.sync(names, {route: self.rules.routes.spec(route).sticky for route in ROUTE_PROTOCOLS},
                           {route: self.rules.routes.for_route(route) for route in ROUTE_PROTOCOLS})
        self.spend.configure(self.rules)

    async def open_state(self) -> None:
        """Share the boards as the rules' `state` says (at start-up and after a reload that
        changed it); the old state stops first.  Never waits for Redis.  One at a time: two
        reloads at once (a `set ccswitch_rules` and the file watcher) would each open one."""
        async with self._state_lock:
            wanted = self.rules.state
            if self._state_for is not None and self._state_for[0] == wanted:
                return
            try:
                state = state_for(wanted)
            except StateUnavailable as exc:
                log.error("ccswitch: %s; state stays %s", exc, self.state.where)
                self._state_opened.set()
                return
            await self.state.stop()
            self.state, self._state_for = state, (wanted,)
            await state.start(self.boards)
            self._state_opened.set()

    async def close_state(self) -> None:
        async with self._state_lock:
            await self.state.stop()
            self.state, self._state_for = InMemoryState(), None

    async def start_spend(self, until: datetime) -> None:
        """`load_spend` at start-up, waited for only where a budget needs it (`spend_read_for`):
        without one, a ledger slow to answer (PostgreSQL) holds up no request, and the spend comes
        in when it is read."""
        if self.rules.budgets_set() and self.ledger is None:   # a supervisor restarting it in a loop would undo every budget
            log.warning("ccswitch: budgets count only what this run spends: with the ledger off "
                        "(ccswitch_ledger=false) nothing is recorded, and a restart starts them at $0 again")
        self._spend_reader = self.first_spend_read = hook_task(self.load_spend(until), "spend read")
        self.first_spend_read.add_done_callback(self._first_spend_read_done)
        await self.spend_read_for(self.rules)

    def _first_spend_read_done(self, _: asyncio.Task) -> None:
        self.first_spend_read = None

    async def spend_read_for(self, rules: Rules) -> None:
        """Wait for the first spend read if it is still on and `rules` set a budget (at the start,
        or by a reload since): SPEND_WAIT at most, one wait for every request, then none waits.
        Never raises: how the read ended (failed, cancelled at shutdown) is its own business."""
        reading = self.first_spend_read
        if reading is not None and not reading.done() and rules.budgets_set():
            if self._spend_wait_ends is None:    # the first to wait sets its end
                self._spend_wait_ends = time.monotonic() + SPEND_WAIT
            left = max(0.0, self._spend_wait_ends - time.monotonic())
            if not (await asyncio.wait({reading}, timeout=left))[0] and self.first_spend_read is reading:
                self.first_spend_read = None     # the requests after these do not wait for it
                log.warning("ccswitch: the ledger has not answered the spend read within %s s: requests go on, "
                            "and budgets count from 0 until it does", SPEND_WAIT)

    async def load_spend(self, until: datetime) -> None:
        """This month's spend before `until` (the start) as the ledger holds it (the day's is part
        of it).  A ledger that cannot be read now (PostgreSQL down) is read in the background once
        it can be; meanwhile budgets count from 0."""
        error = await self._try_spend(until)
        shared = self.rules.state is not None
        if error is not None:
            # a warning, not an error: mitmdump exits on an error logged while it starts
            log.warning("ccswitch: cannot read the spend so far: %s (budgets count %s until it can be "
                        "read; trying again every %d s)", error,
                        "what the shared state holds" if shared else "from 0", SPEND_RETRY)
            self._spend_reader = hook_task(self._read_spend_later(until), "spend read")
        if shared:
            # the other instances' spend is in the shared state, this ledger holds this one's only:
            # the requests that wait for this read (those a budget applies to) wait for the shared
            # spend to be loaded too (a request let in before was judged by this instance's alone)
            with contextlib.suppress(TimeoutError):     # opened at the start beside this read
                await asyncio.wait_for(self._state_opened.wait(), STATE_OPEN_WAIT)
            await self.state.first_look()
            if error is not None and self.state.shared and not self.state.up:
                log.warning("ccswitch: %s cannot be read either: budgets count from 0 until one of them can",
                            self.state.where)

    async def _read_spend_later(self, until: datetime) -> None:
        while True:
            await asyncio.sleep(SPEND_RETRY)
            if await self._try_spend(until) is None:
                log.info("ccswitch: read the spend so far: budgets count it now")
                return

    async def _try_spend(self, until: datetime) -> str | None:
        """Read the rows in a thread (it waits on the database), count them here on the loop, as
        every other spend is counted (the boards are not shared between threads); why not, or None."""
        found = await asyncio.to_thread(self._spend_rows, until)
        if found.error is None:
            self._count_spend(found)
        return found.error

    def stop_reading_spend(self) -> None:
        for task in (self._spend_reader, self.first_spend_read):     # the first may wait on the shared state
            if task is not None:
                task.cancel()
        self._spend_reader = None

    def _spend_rows(self, until: datetime) -> LedgerSpend:
        """The ledger's priced requests this month before `until`."""
        if self.ledger is None:
            return LedgerSpend()
        rules, started = self.rules, time.monotonic()
        found = ledger_spend(self.ledger.path, rules, period_start("monthly", utc_now(), rules.tz), until,
                             per_day=rules.tz)     # counted on the loop: a few sums
        if (took := time.monotonic() - started) >= 1 and found.error is None:
            # requests that need a budget waited for it: a long wait is worth a line
            log.info("ccswitch: read this month's spend from the ledger (%d priced requests) in %.1f s",
                     found.requests, took)
        return found

    def _count_spend(self, found: LedgerSpend) -> None:
        self.spend.load(amount for ts, upstream, client, usd in found.rows
                        for amount in ((UPSTREAM, upstream, usd, ts), (CLIENT, client, usd, ts)))
        if found.unreadable:
            log.warning("ccswitch: %d request row(s) of the ledger left out of the spend: their time cannot be read "
                        "(edited by hand?)", found.unreadable)
        if found.unpriced and self.rules.budgets_set():     # without a budget, only the page's "+?" says so
            log.warning("ccswitch: no price is known for %s: budgets count their requests as $0 "
                        "(add them under prices: in rules.yaml; the month's spend so far is counted again at "
                        "them at the next start)", ", ".join(printable(model) for model in sorted(found.unpriced)))

    def open_ledger(self, enabled: bool) -> None:
        """(Re)open the ledger at the rules' `usage_db`; a moved database gets a new writer."""
        path = self.rules.usage_db if enabled else None
        old = self.ledger
        if old is not None and old.path == path:
            return
        # a shared ledger's rows that cannot reach it before a stop are kept on this machine
        spill_dir = SPILL_DIR.expanduser() if isinstance(path, PostgresURL) else None
        self.ledger = Ledger(path, spill_dir=spill_dir).start() if path is not None else None
        if old is not None:  # flush the old one without holding up the event loop; what it cannot write moves
            closing = threading.Thread(target=old.close, kwargs={"successor": self.ledger},
                                       name="ccswitch-ledger-close", daemon=True)
            closing.start()
            self._retire_closed()
            self._closing_ledgers.append((closing, old))
        if path is not None:
            log.info("ccswitch: usage ledger at %s", path)

    def _retire_closed(self, *, waited: bool = False) -> None:
        """Forget the ledgers that have closed (all of them once a stop has waited for them),
        keeping the count of the rows they lost."""
        still = []
        for closing, ledger in self._closing_ledgers:
            if closing.is_alive() and not waited:
                still.append((closing, ledger))
            else:
                self._dropped_by_closed_ledgers += ledger.dropped
        self._closing_ledgers = still

    @property
    def ledger_rows_dropped(self) -> int:
        """Usage rows lost since the start, by every ledger it has had: a Prometheus counter, which
        must not go back to 0 when the ledger is switched off and on or moved by a reload."""
        closing = sum(ledger.dropped for _, ledger in self._closing_ledgers)
        current = self.ledger.dropped if self.ledger is not None else 0
        return self._dropped_by_closed_ledgers + closing + current

    def record_job(self, job: Job) -> None:
        """Every finished routed request passes here: into the ledger and the live counters."""
        row, attempts = without_keys(request_row(job), job.rules), attempt_rows(job)
        if self.ledger is not None:
            self.ledger.add("requests", row)
            for attempt in attempts:
                self.ledger.add("attempts", attempt)
        self._note_issuer(job)
        usd = self.price(row, job.rules)     # None: no known price, which budgets count as 0
        if job.upstream is not None:
            self.spend.add(UPSTREAM, job.upstream, usd or 0.0, job.started_at)
            self.spend.add(CLIENT, job.client, usd or 0.0, job.started_at)
        self._note_live(row, attempts, usd)

    def _note_issuer(self, job: Job) -> None:
        """A Responses client may continue this answer (`previous_response_id`): only its issuer can
        serve that.  One asked not to be stored (`store: false`, as Codex asks) cannot be continued."""
        if job.request.client_protocol == Protocol.RESPONSES and job.upstream is not None and job.attempts \
                and (answered := job.attempts[-1]).upstream == job.upstream and answered.response_id \
                and not (isinstance(job.request.json, dict) and job.request.json.get("store") is False):
            self.issued.record(answered.response_id, job.upstream)

    def record_own_answer(self, row: dict) -> None:
        """A request ccswitch answered itself (`ledger.rows.own_answer_row`): ledger and live counters."""
        row = without_keys(row, self.rules)
        if self.ledger is not None:
            self.ledger.add("requests", row)
        self._note_live(row, [], self.price(row, self.rules))

    def _note_live(self, row: dict, attempts: list[dict], usd: float | None) -> None:
        try:
            self.live.note(row, attempts, usd)
        except Exception:   # the page's counters must never cost a request its record or answer
            log.exception("ccswitch: could not count a request for the live page")

    def close(self) -> None:
        # a ledger a reload moved away from first: what it could not write goes to this one (a stop
        # right after the reload would end the process under it, its rows neither moved nor kept)
        for closing, _ in self._closing_ledgers:
            closing.join(_LEDGER_CLOSE_WAIT)
        self._retire_closed(waited=True)
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
