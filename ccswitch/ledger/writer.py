"""The usage ledger: a writer thread that never blocks or breaks the proxy.

The proxy only appends to an in-memory queue.  A daemon thread drains it in batched
transactions into a backend (backend.py: a SQLite file; postgres.py: a PostgreSQL server).
When the database is locked, read-only, missing, full or unreachable, the thread logs the
problem once, keeps the rows in memory (up to a bound, oldest dropped first, counted and logged
once) and retries with backoff; when the database takes rows again it says so once and catches
up.  A row the database refuses (poison) is dropped and logged, the others still go in.
Whatever is pending is flushed on shutdown; with a `spill_dir`, what the database still refuses
then is kept in a file there (ledger.spill) and written by the next start.  Rows linger a
quarter of a second so that a busy proxy commits many in one transaction instead of one each:
each commit writes the tables' touched pages again, and shorter batches cost a proxy under load
about twice the writer's CPU.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ccswitch.config.database_url import PostgresURL, parse_usage_db
from ccswitch.ledger import spill
from ccswitch.ledger.backend import Backend, Row, SQLiteBackend
from ccswitch.wire.exchange import encodable

log = logging.getLogger("ccswitch.ledger")

REQUEST_COLUMNS = (
    "request_id", "ts", "route", "endpoint", "upstream", "upstream_protocol", "model", "upstream_model",
    "status", "stream", "attempts", "input_tokens", "output_tokens", "cache_creation_tokens",
    "cache_creation_1h_tokens", "cache_read_tokens", "reasoning_tokens", "latency_ms", "ttfb_ms", "error",
    "raw_usage", "session", "affinity", "client",
)
ATTEMPT_COLUMNS = (
    "request_id", "ts", "n", "upstream", "status", "error", "ms", "input_tokens", "output_tokens",
    "cache_creation_tokens", "cache_read_tokens", "reasoning_tokens", "raw_usage",
)
ACTIVATION_COLUMNS = ("ts", "upstream", "status", "ok", "error", "latency_ms", "slot", "probe_id")

_OUTAGE_JOIN = 1.0     # what a stop in an outage gives a write under way before it spills the rows
# what a stop gives a write that neither ends nor fails (a server that takes the connection and never
# answers) before its rows go to the spill file; a healthy server writes a batch in milliseconds
_STALL_JOIN = 1.5
_STALL_TELL = 10.0     # a write under way this long is logged (a hang raises nothing to log)
_COLUMNS = {"requests": REQUEST_COLUMNS, "attempts": ATTEMPT_COLUMNS, "activations": ACTIVATION_COLUMNS}


def open_backend(target: Path | PostgresURL, columns: dict[str, tuple[str, ...]], *,
                 busy_timeout: float = 5.0) -> Backend:
    """The backend for a ``usage_db`` value: a PostgreSQL URL or a SQLite path."""
    if isinstance(target, PostgresURL):
        from ccswitch.ledger.postgres import PostgresBackend  # psycopg only when PostgreSQL is used
        return PostgresBackend(target, columns, connect_timeout=busy_timeout)
    return SQLiteBackend(target, columns, busy_timeout=busy_timeout)


class Ledger:
    """``target``: a SQLite path or a PostgreSQL URL (``usage_db``).  ``busy_timeout``: how long
    one write waits for a lock (SQLite) or a connection (PostgreSQL); ``max_backoff``: the
    longest pause between retries while the database refuses; ``spill_dir``: where rows still
    unwritten at ``close`` are kept for the next start (None: they are lost, and counted in the log)."""

    def __init__(self, target: Path | str | PostgresURL, *, max_pending: int = 100_000, batch: int = 500,
                 interval: float = 0.2, linger: float = 0.25, busy_timeout: float = 5.0,
                 max_backoff: float = 10.0, spill_dir: Path | None = None) -> None:
        self.target: Path | PostgresURL = parse_usage_db(target) if isinstance(target, str | Path) else target
        self.backend: Backend = open_backend(self.target, _COLUMNS, busy_timeout=busy_timeout)
        self.max_backoff = max_backoff
        self.max_pending = max_pending
        self.batch = batch
        self.interval = interval
        self.linger = linger
        # rows taken by the writer, not yet written (a stop while their write hangs keeps them)
        self._hand: list[Row] = []
        self.spill_dir = spill_dir
        self._taken_files: list[Path] = []  # spill files whose rows were taken at the start
        self._taken_rows = 0
        self._pending: collections.deque[tuple[str, tuple]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._failing: str | None = None    # the problem that began the current outage: logged once
        self._drops_logged = False          # a full buffer is logged once until the database is back
        self._writing_since: float | None = None   # when the write under way began
        self._stall_told = False            # that write's hang is logged
        self.dropped = 0
        self.written = 0

    @property
    def path(self) -> Path | PostgresURL:
        """The ``usage_db`` written to (a name kept from when it could only be a file)."""
        return self.target

    # ------------------------------------------------------------------ proxy side

    def start(self) -> Ledger:
        if self.spill_dir is not None:
            self._take_spilled()
        self._thread = threading.Thread(target=self._run, name="ccswitch-ledger", daemon=True)
        self._thread.start()
        return self

    def add(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row; never blocks on the database."""
        values = tuple(row.get(c) for c in _COLUMNS[table])
        with self._cond:
            # an earlier stop's rows are over and above the bound: dropped, they would be lost for good
            if len(self._pending) >= self.max_pending and len(self._pending) >= self.max_pending + self._spilled_left():
                self._pending.popleft()
                self._count_dropped(1)
            self._pending.append((table, values))
            if not self._stall_told and (held := self._held()) > _STALL_TELL:
                self._stall_told = True
                log.warning("ccswitch: the usage ledger %s has not answered a write for %.0f s; keeping %s "
                            "in memory meanwhile", self.backend.label, held, self._waiting())
            if len(self._pending) in (1, self.batch):   # woken when work appears or a batch is full
                self._cond.notify()

    def close(self, timeout: float = 10.0, successor: Ledger | None = None) -> None:
        """Flush what is pending (as far as the database allows) and stop the thread.  What this
        database would not take goes to `successor` (the ledger a reload moved to), else is kept
        for the next start where a spill directory is set."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread:
            self._join_flush(timeout)
        with self._cond:
            # a writer still hanging on the database may yet write its rows: kept all the same (the
            # ledger skips a row it has)
            left = [*self._hand, *self._pending]
        if left and successor is not None and successor.take(left):
            log.warning("ccswitch: %d usage row(s) that %s did not take go to %s instead", len(left),
                        self.backend.label, successor.backend.label)
            self._forget_taken()
        elif left:
            self._keep_unwritten(left)      # no successor, or it closed meanwhile (another reload, a stop)
        elif self._taken_files:     # their rows were written, the last ones by this flush
            self._forget_taken()

    def _join_flush(self, timeout: float) -> None:
        """Wait for the writer's last flush.  With a spill file to keep the rows in, a stop has
        seconds before its SIGKILL (`docker stop`: 10, the drain of requests included): in an
        outage the rows go to the file at once (each try may wait out the database's connect
        timeout), and so do they when a write under way stalls for `_STALL_JOIN`."""
        assert self._thread is not None
        if self.spill_dir is None:     # nowhere else to keep them: the whole timeout
            self._thread.join(timeout)
            return
        deadline = time.monotonic() + timeout
        done, moved = self.written + self.dropped, time.monotonic()
        while self._thread.is_alive() and (now := time.monotonic()) < deadline:
            if self._spills_now():
                self._thread.join(min(deadline - now, _OUTAGE_JOIN))
                return
            if (progress := self.written + self.dropped) != done:
                done, moved = progress, now
            elif now - moved >= _STALL_JOIN:
                log.warning("ccswitch: the usage ledger %s has not answered a write for %.1f s; the "
                            "stop keeps its rows for the next start", self.backend.label, now - moved)
                return
            self._thread.join(min(0.05, deadline - now))

    def take(self, rows: list[Row]) -> bool:
        """Rows another ledger could not write, older than any queued here: they go first.
        False (nothing taken) once this one is closing: its writer may not write them."""
        with self._cond:
            if self._closing:
                return False
            if self._taken_files:   # written before the spill files' rows: those are not written by then
                self._taken_rows += len(rows)
            self._put_first(rows)
            self._cond.notify()
        return True

    def _put_first(self, rows: list[Row]) -> None:
        """Queue `rows` before the rest; past `max_pending` the oldest go (the caller holds the lock)."""
        self._pending.extendleft(reversed(rows))
        over = len(self._pending) - self.max_pending
        for _ in range(max(0, over)):
            self._pending.popleft()
        if over > 0:
            self._count_dropped(over)

    # ------------------------------------------------------------------ rows kept over a stop

    def _take_spilled(self) -> None:
        """Queue the rows earlier stops could not write to this ledger, before any of this run's."""
        for found in spill.spilled(self.spill_dir, self.backend.label):
            path = spill.claim(found)
            if path is None:
                continue        # another instance on this machine took it first
            try:
                rows = spill.read(path, _COLUMNS)
            except sqlite3.Error as exc:
                log.warning("ccswitch: cannot read the unwritten usage rows in %s (%s); it is left there", path, exc)
                continue
            self._pending.extend(rows)
            self._taken_files.append(path)
            self._taken_rows += len(rows)
        if self._taken_files:
            log.warning("ccswitch: writing %d usage row(s) an earlier stop could not write to the ledger (from %s)",
                        self._taken_rows, ", ".join(str(p) for p in self._taken_files))

    def _spilled_left(self) -> int:
        """Rows of the spill files taken at the start not yet written (nor dropped)."""
        return max(0, self._taken_rows - self.written - self.dropped) if self._taken_files else 0

    def _keep_unwritten(self, rows: list[Row]) -> None:
        if self.spill_dir is None:
            log.error("ccswitch: %d usage row(s) could not be written to %s", len(rows), self.backend.label)
            return
        try:
            path, lost = spill.spill(rows, self.spill_dir, _COLUMNS, self.backend.label)
        except Exception as exc:    # whatever it is, the stop goes on: the count is logged
            log.error("ccswitch: %d usage row(s) could not be written to %s, nor kept in %s (%s)", len(rows),
                      self.backend.label, self.spill_dir, exc)
            return
        log.error("ccswitch: %d usage row(s) could not be written to %s: kept in %s, for the next start to write",
                  len(rows) - lost, self.backend.label, path)
        self._forget_taken()        # what of them was not written is in the new file

    def _forget_taken(self) -> None:
        for path in self._taken_files:
            spill.remove(path)
        self._taken_files = []

    @property
    def trouble(self) -> str | None:
        """Why rows are not being written now (the database refuses, or a write hangs), or None."""
        if (failing := self._failing) is not None:
            return failing
        if (held := self._held()) > _STALL_TELL:
            return f"no answer to a write for {held:.0f} s"
        return None

    def _held(self) -> float:
        """How long the write under way has waited for the database (0: none under way)."""
        since = self._writing_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._hand)

    def _waiting(self, written: Sequence[Row] = ()) -> str:
        """The rows not yet written (and `written`, a batch just written), as the log tells them."""
        with self._cond:
            return rows_told(table for table, _ in (*written, *self._hand, *self._pending))

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                if not self._pending and not self._closing:
                    self._cond.wait(self.interval)
                if self._pending and len(self._pending) < self.batch and not self._closing:
                    self._cond.wait(self.linger)   # let a burst gather into one transaction
                if self._closing and (not self._pending or self._spills_now()):
                    break               # done, or stopping in an outage: close() spills the rest
                rows = [self._pending.popleft() for _ in range(min(self.batch, len(self._pending)))]
                self._hand = rows
            if not rows:
                continue
            self._writing_since = time.monotonic()
            try:
                self._write_batch(rows)
                if self._stall_told:    # (an error after the hang is the outage's own line)
                    log.warning("ccswitch: the usage ledger %s answered again", self.backend.label)
            except Exception as exc:    # whatever the database or its driver raises: keep the rows, retry
                self._report(exc)
                if self._spills_now() or (self._closing and backoff > 2):
                    break               # stopping and the database refuses: close() keeps what it can
                self._sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            finally:
                with self._cond:
                    self._hand = []
                    self._writing_since, self._stall_told = None, False
            backoff = 0.5
            if self._failing:
                self._recovered(rows)
            if self._taken_files and self.written + self.dropped >= self._taken_rows:
                log.info("ccswitch: the %d usage row(s) an earlier stop left are written", self._taken_rows)
                self._forget_taken()
        self.backend.close()

    def _write_batch(self, rows: list[tuple[str, tuple]]) -> None:
        """Write the rows, or give back (to the front of the queue) those not written and raise."""
        try:
            self._write(rows)
            self.written += len(rows)
            return
        except BaseException as exc:
            if not self.backend.is_poison(exc):
                self._give_back(rows)
                raise
            # a bad row must not block the good ones: one by one
        for i, (table, values) in enumerate(rows):
            try:
                self._write_one(table, values)
            except BaseException as exc:
                if not self.backend.is_poison(exc):
                    self._give_back(rows[i:])
                    raise
                with self._cond:
                    self.dropped += 1
                log.error("ccswitch: dropped a %s row the database rejects: %s", table, self.backend.describe(exc))
            else:
                self.written += 1

    def _write_one(self, table: str, values: tuple) -> None:
        """One row; refused as it is, once more with its text made storable (a client's text can
        carry a NUL or a lone surrogate, which no engine stores): its usage must not be lost for it."""
        try:
            self._write([(table, values)])
        except BaseException as exc:
            cleaned = tuple(storable_text(v) if isinstance(v, str) else v for v in values)
            if not self.backend.is_poison(exc) or cleaned == values:
                raise
            self._write([(table, cleaned)])
            log.warning("ccswitch: a %s row had text no database stores (a NUL or a lone surrogate): "
                        "written with it replaced", table)

    def _give_back(self, rows: list[tuple[str, tuple]]) -> None:
        with self._cond:
            self._hand = []
            self._put_first(rows)    # full while these were in hand: the oldest go

    def _count_dropped(self, n: int) -> None:
        """``n`` of the oldest rows left the full buffer (the caller holds the lock)."""
        self.dropped += n
        if not self._drops_logged:
            self._drops_logged = True
            log.error("ccswitch: usage ledger buffer full (%d rows): dropping the oldest until %s takes rows "
                      "again", self.max_pending, self.backend.label)

    def _write(self, rows: list[tuple[str, tuple]]) -> None:
        self.backend.insert(rows)

    def _report(self, exc: BaseException) -> None:
        text = self.backend.describe(exc)
        if self._failing is None:       # once per outage; what else goes wrong meanwhile is debug detail
            # a warning: nothing is lost while the rows wait (a drop is an error), and mitmdump
            # exits on an error logged while it starts, as a restart during an outage may
            mend = self.backend.refusal(exc)
            if mend is not None:        # no outage to wait out: the rules or the server need mending
                log.warning("ccswitch: the usage ledger %s refuses ccswitch (%s): check %s; keeping %s "
                            "in memory and retrying", self.backend.label, text, mend, self._waiting())
            else:
                log.warning("ccswitch: cannot write the usage ledger %s (%s); keeping %s in memory "
                            "and retrying", self.backend.label, text, self._waiting())
            self._failing = text
        elif text != self._failing:
            log.debug("ccswitch: usage ledger %s still failing: %s", self.backend.label, text)

    def _recovered(self, just_written: list[Row]) -> None:
        with self._cond:
            dropped, self._drops_logged = self.dropped, False
        lost = f"; {dropped} row(s) dropped so far" if dropped else ""
        log.warning("ccswitch: usage ledger %s is writable again; writing the %s kept meanwhile%s",
                    self.backend.label, self._waiting(just_written), lost)
        self._failing = None

    def _spills_now(self) -> bool:
        """Stopping while the database refuses, with a spill file to keep the rows in: no more tries."""
        return self._closing and self._failing is not None and self.spill_dir is not None

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait(seconds)


def rows_told(tables: Iterable[str]) -> str:
    """Rows waiting to be written, by their tables, as a person counts them: `300 request(s) (600
    rows)`. A request is a row, and so is each of its attempts and each activation probe: the rows
    alone read as twice the requests or more."""
    counted = collections.Counter(tables)
    return f"{counted['requests']} request(s) ({counted.total()} rows)"


def storable_text(text: str) -> str:
    """`text` without what SQLite and PostgreSQL refuse: NULs go, lone surrogates become U+FFFD."""
    return encodable(text.replace("\x00", ""))
