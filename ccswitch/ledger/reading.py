"""Reading the usage ledger from SQLite or PostgreSQL with the same SQL.

``open_reader(usage_db)`` gives a read-only ``LedgerReader``: never migrates, ``?`` placeholders
on both engines, rows as tuples of plain Python values (PostgreSQL's sums of 64-bit columns
come back as ``int``, not ``Decimal``), and the few SQL spellings that differ (``least``,
``count_if``).  Every driver error, on opening or while reading, is raised as
``LedgerReadError`` with the database named without its password.  ``as_text`` reads a
column as text whatever SQLite holds in it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from ccswitch.config.database_url import PostgresURL
from ccswitch.ledger import schema
from ccswitch.ledger.backend import error_text


class LedgerReadError(Exception):
    """The ledger could not be opened or read (the message never holds a password)."""


class LedgerReader:
    """A read-only connection to a SQLite or PostgreSQL ledger."""

    def __init__(self, conn: Any, dialect: str, label: str, scrub: Any = None) -> None:
        self.conn, self.dialect, self.label = conn, dialect, label
        self._scrub = scrub or (lambda text: text)       # a PostgreSQL URL's password out of messages
        self._errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        if dialect == schema.POSTGRESQL:
            from ccswitch.ledger import postgres
            self._errors = (postgres.driver().Error,)

    # ---- the SQL that differs
    def least(self, a: str, b: str) -> str:
        """SQL for the smaller of two non-NULL values."""
        return f"min({a}, {b})" if self.dialect == schema.SQLITE else f"least({a}, {b})"

    def count_if(self, condition: str) -> str:
        """SQL for how many rows of the group meet ``condition``."""
        if self.dialect == schema.SQLITE:
            return f"sum({condition})"
        return f"count(*) FILTER (WHERE {condition})"

    # ---- reading
    def execute(self, sql: str, params: tuple = ()) -> Iterator[tuple]:
        """The rows of ``sql`` (``?`` placeholders), read lazily."""
        try:
            if self.dialect == schema.SQLITE:
                yield from self.conn.execute(sql, params)
                return
            cursor = self.conn.execute(sql.replace("%", "%%").replace("?", "%s"), params)
            for row in cursor:
                yield tuple(_plain(v) for v in row)
        except self._errors as exc:
            raise self._failed("read", exc) from exc

    def tables(self) -> set[str]:
        return self._guarded(lambda: _sqlite_tables(self.conn) if self.dialect == schema.SQLITE
                             else _postgres().tables(self.conn))

    def columns(self, table: str) -> set[str]:
        """The columns ``table`` has (none if it does not exist): an older database has fewer."""
        return self._guarded(lambda: schema.columns(self.conn, table) if self.dialect == schema.SQLITE
                             else _postgres().columns(self.conn, table))

    def close(self) -> None:
        try:
            self.conn.close()
        except self._errors as exc:
            raise self._failed("close", exc) from exc

    def __enter__(self) -> LedgerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guarded(self, read: Any) -> Any:
        try:
            return read()
        except self._errors as exc:
            raise self._failed("read", exc) from exc

    def _failed(self, doing: str, exc: BaseException) -> LedgerReadError:
        return LedgerReadError(self._scrub(f"cannot {doing} {self.label}: {error_text(exc)}"))


def as_text(column: str) -> str:
    """SQL for ``column`` read as text.  SQLite keeps any value in any column: a BLOB (or a
    number) another tool or a hand edit left where a name belongs comes back as text, its bytes
    read as UTF-8 (`schema.lenient_text`), not as bytes no price look-up or report can use.
    PostgreSQL's text columns hold only text: there the cast changes nothing."""
    return f"CAST({column} AS TEXT)"


def _postgres() -> Any:
    from ccswitch.ledger import postgres
    return postgres


def _sqlite_tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):          # sum() of a BIGINT column is NUMERIC in PostgreSQL
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def exists(target: Path | PostgresURL) -> bool:
    """Whether there is a ledger to read: a SQLite file that exists; a PostgreSQL server is asked."""
    return isinstance(target, PostgresURL) or target.is_file()


def open_reader(target: Path | PostgresURL, *, timeout: float = 5.0) -> LedgerReader:
    """A read-only connection to the ledger at ``target`` (a SQLite path must exist)."""
    label = str(target)
    if isinstance(target, PostgresURL):
        postgres = _postgres()
        try:
            conn = postgres.connect(target, readonly=True, timeout=timeout)
        except postgres.DriverMissing as exc:
            raise LedgerReadError(str(exc)) from None
        except postgres.driver().Error as exc:
            raise LedgerReadError(target.scrub(f"cannot connect to {label}: {error_text(exc)}")) from None
        return LedgerReader(conn, schema.POSTGRESQL, label, target.scrub)
    try:
        conn = _open_sqlite(target, timeout)
    except sqlite3.Error as exc:
        raise LedgerReadError(f"cannot open {label}: {exc}") from None
    except _UnreadableLog as exc:
        raise LedgerReadError(f"cannot read {label}: {exc}") from None
    return LedgerReader(conn, schema.SQLITE, label)


class _UnreadableLog(Exception):
    """A WAL database in a folder the user cannot write, with a write-ahead log only a writer reads."""


def _open_sqlite(path: Path, timeout: float) -> sqlite3.Connection:
    """A read-only connection, its first read done: a WAL database (the ledger is one) is read
    through an index file, ``usage.db-shm``, that SQLite creates beside it, so a user who cannot
    write in its folder (a ledger the service's user writes, read by another) cannot read it:
    "unable to open database file" on the first read.  Without ``usage.db-wal`` no writer has it
    open (the last one to close writes the log into the file and removes it), so the file holds
    every row: it is read as it stands, without locks.  The rows of a writer that opens it
    meanwhile are not seen; one that also writes its log into the file during the read (at its
    close, or once the log is 4 MB) may make the read fail or be off, which reading again mends."""
    conn = schema.connect(str(path), readonly=True, timeout=timeout)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        folder, log = path.absolute().parent, Path(f"{path}-wal")
        if exc.sqlite_errorcode != sqlite3.SQLITE_CANTOPEN or os.access(folder, os.W_OK):
            raise
        if log.exists():
            raise _UnreadableLog(f"this user cannot write in {folder}, where SQLite must create {path.name}-shm "
                                 f"to read the rows {log.name} holds: read it as the user ccswitch writes it as, "
                                 "or copy both files to a folder of yours") from None
    return schema.connect(str(path), readonly=True, timeout=timeout, immutable=True)


def as_reader(conn: sqlite3.Connection | LedgerReader, label: str = "") -> LedgerReader:
    """A reader for what the caller holds: a LedgerReader as it is, a SQLite connection wrapped."""
    return conn if isinstance(conn, LedgerReader) else LedgerReader(conn, schema.SQLITE, label)
