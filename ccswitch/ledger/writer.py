"""The SQLite usage ledger: a writer thread that never blocks or breaks the proxy.

The proxy only appends to an in-memory queue.  A daemon thread drains it in
batched transactions (WAL).  When the database is locked, read-only, missing
or full, the thread logs the problem once, keeps the rows in memory (up to a
bound, oldest dropped first and counted) and retries with backoff; whatever is
pending is flushed on shutdown.  Rows linger a few milliseconds so that a busy
proxy commits many in one transaction instead of one each.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from ccswitch.ledger.schema import connect

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
ACTIVATION_COLUMNS = ("ts", "upstream", "status", "ok", "error", "latency_ms")

_INSERT = {
    table: f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
    for table, cols in (("requests", REQUEST_COLUMNS), ("attempts", ATTEMPT_COLUMNS),
                        ("activations", ACTIVATION_COLUMNS))
}
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
_COLUMNS = {"requests": REQUEST_COLUMNS, "attempts": ATTEMPT_COLUMNS, "activations": ACTIVATION_COLUMNS}


class Ledger:
    def __init__(self, path: Path | str, *, max_pending: int = 100_000, batch: int = 500,
                 interval: float = 0.2, linger: float = 0.05, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.max_pending = max_pending
        self.batch = batch
        self.interval = interval
        self.linger = linger
        self._in_hand = 0                   # rows taken by the writer, not yet written
        self._pending: collections.deque[tuple[str, tuple]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._failing: str | None = None    # the problem last logged, so it is logged once
        self.dropped = 0
        self.written = 0

    # ------------------------------------------------------------------ proxy side

    def start(self) -> Ledger:
        self._thread = threading.Thread(target=self._run, name="ccswitch-ledger", daemon=True)
        self._thread.start()
        return self

    def add(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row; never blocks on the database."""
        values = tuple(row.get(c) for c in _COLUMNS[table])
        with self._cond:
            if len(self._pending) >= self.max_pending:
                self._pending.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.error("ccswitch: usage ledger buffer full; %d row(s) dropped so far", self.dropped)
            self._pending.append((table, values))
            if len(self._pending) in (1, self.batch):   # woken when work appears or a batch is full
                self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is pending (as far as the database allows) and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread:
            self._thread.join(timeout)
        if self.pending:
            log.error("ccswitch: %d usage row(s) could not be written to %s", self.pending, self.path)

    @property
    def pending(self) -> int:
        return len(self._pending) + self._in_hand

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                if not self._pending and not self._closing:
                    self._cond.wait(self.interval)
                if self._pending and len(self._pending) < self.batch and not self._closing:
                    self._cond.wait(self.linger)   # let a burst gather into one transaction
                if not self._pending and self._closing:
                    break
                rows = [self._pending.popleft() for _ in range(min(self.batch, len(self._pending)))]
                self._in_hand = len(rows)
            if not rows:
                continue
            try:
                self._write_batch(rows)
            except (sqlite3.Error, OSError) as exc:
                self._report(exc)
                if self._closing and backoff > 2:
                    break               # shutting down and the database still refuses
                self._sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            finally:
                self._in_hand = 0
            backoff = 0.5
            if self._failing:
                log.warning("ccswitch: usage ledger %s is writable again", self.path)
                self._failing = None
        if self._conn is not None:
            self._conn.close()

    def _write_batch(self, rows: list[tuple[str, tuple]]) -> None:
        """Write the rows, or give back (to the front of the queue) those not written and raise."""
        try:
            self._write(rows)
            self.written += len(rows)
            return
        except _ROW_ERRORS:
            pass                        # a bad row must not block the good ones: one by one
        except BaseException:
            self._give_back(rows)
            raise
        for i, (table, values) in enumerate(rows):
            try:
                self._write([(table, values)])
            except _ROW_ERRORS as exc:
                with self._cond:
                    self.dropped += 1
                log.error("ccswitch: dropped a %s row the database rejects: %s", table, exc)
            except BaseException:
                self._give_back(rows[i:])
                raise
            else:
                self.written += 1

    def _give_back(self, rows: list[tuple[str, tuple]]) -> None:
        with self._cond:
            self._pending.extendleft(reversed(rows))
            self._in_hand = 0
            over = len(self._pending) - self.max_pending
            for _ in range(max(0, over)):   # full while these were in hand: the oldest go
                self._pending.popleft()
            if over > 0:
                self.dropped += over
                log.error("ccswitch: usage ledger buffer full; %d row(s) dropped so far", self.dropped)

    def _write(self, rows: list[tuple[str, tuple]]) -> None:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect(str(self.path), timeout=self.busy_timeout)
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for table, values in rows:
                conn.execute(_INSERT[table], values)
            conn.execute("COMMIT")
        except BaseException:
            # reopen next time: the file may have been replaced, unlocked or made writable
            self._conn = None
            try:
                conn.close()
            except sqlite3.Error as exc:
                log.debug("closing the ledger connection failed too: %s", exc)
            raise

    def _report(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if text != self._failing:
            log.error("ccswitch: cannot write the usage ledger %s (%s); keeping %d row(s) in memory "
                      "and retrying", self.path, text, len(self._pending))
            self._failing = text

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait(seconds)
