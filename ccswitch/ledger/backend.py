"""What the ledger's writer thread needs from a database engine, and the SQLite one.

The writer (writer.py) owns the buffer, batching, retry and backoff; a backend only connects
(creating or migrating the schema), inserts a batch in one transaction and tells a row the
database will never take (poison: dropped, logged) from a database that cannot take anything
now (transient: the rows wait and the write is retried).  A backend lives in the writer thread.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from abc import ABC, abstractmethod
from pathlib import Path

from ccswitch.ledger import schema

log = logging.getLogger("ccswitch.ledger")

Row = tuple[str, tuple]       # (table, values in the order of writer's column tuples)

# a value no engine can store (a huge integer, a lone surrogate in text) is a bad row, not a bad database
VALUE_ERRORS = (OverflowError, ValueError, TypeError)


class Unavailable(Exception):
    """The database could not be opened or brought to the schema: no row's fault, whatever the
    driver raised (a migration's IntegrityError too), so the rows wait and the write is retried."""


class Backend(ABC):
    """One database the ledger writes to. ``label`` names it in log lines (never a password)."""

    label: str

    @abstractmethod
    def connect(self) -> None:
        """Open the connection if there is none, and bring the schema to schema.VERSION."""

    @abstractmethod
    def insert(self, rows: list[Row]) -> None:
        """Insert ``rows`` in one transaction, connecting first if needed.  On failure nothing
        is written, the connection is dropped (the next call reconnects) and the error raised."""

    @abstractmethod
    def is_poison(self, exc: BaseException) -> bool:
        """Whether ``exc`` means a row the database will never take (anything else is retried)."""

    @abstractmethod
    def close(self) -> None:
        """Drop the connection, if any."""

    def refusal(self, exc: BaseException) -> str | None:
        """What in the settings to mend when ``exc`` says the database refuses ccswitch (a
        password, a database or role that does not exist), rather than being out of reach."""
        return None

    def describe(self, exc: BaseException) -> str:
        """``exc`` for a log line (an `Unavailable` as what made it)."""
        if isinstance(exc, Unavailable) and exc.__cause__ is not None:
            exc = exc.__cause__
        return error_text(exc)


def error_text(exc: BaseException) -> str:
    """A database error on one line (libpq's messages hold newlines and tabs)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def insert_sql(table: str, columns: tuple[str, ...], placeholder: str, rows: int = 1) -> str:
    """`rows` rows in one statement.  A row that is in already (a batch written again: see schema
    migration 5) is left as it is."""
    values = f"({', '.join(placeholder for _ in columns)})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([values] * rows)} ON CONFLICT DO NOTHING"


def by_table(rows: list[Row]) -> dict[str, list[tuple]]:
    """Each table's values, in the order they came."""
    tables: dict[str, list[tuple]] = {}
    for table, values in rows:
        tables.setdefault(table, []).append(values)
    return tables


def statement_sizes(count: int, sizes: tuple[int, ...]) -> list[int]:
    """`count` rows as statements of `sizes` rows each (largest first; the last size is 1)."""
    out = []
    for size in sizes:
        whole, count = divmod(count, size)
        out += [size] * whole
    return out


class SQLiteBackend(Backend):
    """A SQLite file in WAL mode; its directory is created when needed."""

    _ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError, *VALUE_ERRORS)

    #: how many rows one INSERT takes: a batch goes in the largest that fit (under SQLite's limit
    #: of bound values), so that a few statements, each prepared once and cached, serve any batch
    STATEMENT_ROWS = (64, 16, 4, 1)

    def __init__(self, path: Path, columns: dict[str, tuple[str, ...]], *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.label = str(path)
        self.busy_timeout = busy_timeout
        self.columns = columns
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None      # (device, inode) of the file the connection writes
        self._statements: dict[tuple[str, int], str] = {(table, rows): insert_sql(table, cols, "?", rows)
                                                        for table, cols in columns.items()
                                                        for rows in self.STATEMENT_ROWS}

    def connect(self) -> None:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._conn = schema.connect(str(self.path), timeout=self.busy_timeout)
                self._file = _identity(self.path)
            except (sqlite3.Error, OSError) as exc:
                self.close()
                raise Unavailable(str(exc)) from exc

    def _reopen_if_gone(self) -> None:
        """The file removed (a user resetting the numbers) or replaced while open: SQLite would go
        on writing to the removed one, and its rows would be lost without a word.  A new file is
        started where the old one was (or the replacement written to), and the log says so."""
        if self._conn is None or _identity(self.path) == self._file:
            return
        log.warning("ccswitch: the usage database %s was removed or replaced while ccswitch ran: "
                    "usage rows now go to %s", self.path, "the new file" if self.path.exists() else "a new file there")
        self.close()

    def insert(self, rows: list[Row]) -> None:
        self._reopen_if_gone()
        self.connect()
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            # a few statements per table, not one per row: each statement hands the GIL to the
            # proxy's thread and back, and under load those handovers cost the proxy more CPU
            # than the rows themselves
            limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            for table, values in by_table(rows).items():
                sizes = tuple(n for n in self.STATEMENT_ROWS if n == 1 or n * len(self.columns[table]) <= limit)
                start = 0
                for size in statement_sizes(len(values), sizes):
                    part = values[start:start + size]
                    conn.execute(self._statements[table, size], [value for row in part for value in row])
                    start += size
            conn.execute("COMMIT")
        except BaseException:
            # reopen next time: the file may have been replaced, unlocked or made writable
            self.close()
            raise

    def is_poison(self, exc: BaseException) -> bool:
        return isinstance(exc, self._ROW_ERRORS)

    def close(self) -> None:
        conn, self._conn, self._file = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as exc:
                log.debug("closing the ledger connection failed too: %s", exc)


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file `path` names now (None: none)."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino
