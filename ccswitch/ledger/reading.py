"""Reading the usage ledger from SQLite or PostgreSQL with the same SQL.

``open_reader(usage_db)`` gives a read-only ``LedgerReader``: never migrates, ``?`` placeholders
on both engines, rows as tuples of plain Python values (PostgreSQL's sums of 64-bit columns
come back as ``int``, not ``Decimal``), and the few SQL spellings that differ (``least``,
``count_if``).  Every driver error, on opening or while reading, is raised as
``LedgerReadError`` with the database named without its password.
"""

from __future__ import annotations

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
        conn = schema.connect(str(target), readonly=True, timeout=timeout)
    except sqlite3.Error as exc:
        raise LedgerReadError(f"cannot open {label}: {exc}") from None
    return LedgerReader(conn, schema.SQLITE, label)


def as_reader(conn: sqlite3.Connection | LedgerReader, label: str = "") -> LedgerReader:
    """A reader for what the caller holds: a LedgerReader as it is, a SQLite connection wrapped."""
    return conn if isinstance(conn, LedgerReader) else LedgerReader(conn, schema.SQLITE, label)
