"""The usage ledger in PostgreSQL (psycopg 3): connecting, the schema version, the writer's backend.

Same tables and columns as SQLite's, from the same migrations (schema.py, the PostgreSQL types
filled in).  The version is the one row of ``ccswitch_schema``; each migration runs in its own
transaction under an advisory lock, so instances starting at once against an old (or empty)
database migrate it once.  Tables go to the connection's current schema (``search_path``).

psycopg is imported only when a PostgreSQL ``usage_db`` is used (the ``postgres`` extra).
A password in the URL reaches libpq only; log lines and errors name ``url.redacted``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ccswitch.config.database_url import PostgresURL
from ccswitch.config.needs import install_hint
from ccswitch.ledger import schema
from ccswitch.ledger.backend import VALUE_ERRORS, Backend, Row, Unavailable, insert_sql

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("ccswitch.ledger")

SCHEMA_TABLE = "ccswitch_schema"
_MIGRATION_LOCK = 0x63637377      # pg_advisory_xact_lock key: 'ccsw'
# a dead server or a silent network is noticed within seconds, not at TCP's 15-minute timeout
_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
              "tcp_user_timeout": 30_000}


# libpq's words for a server that answers but will not take this URL: settings to mend, not an outage
_REFUSALS = (
    ("password authentication failed", "the URL's password"),
    ("no password supplied", "the URL's password"),
    ("pg_hba.conf", "the server's pg_hba.conf, or the URL's user or sslmode"),
    ("database \"", "the URL's database name"),          # database "x" does not exist
    ("role \"", "the URL's user"),                       # role "x" does not exist
    ("permission denied", "the user's rights on that database"),
)


class DriverMissing(RuntimeError):
    """psycopg is not installed: a PostgreSQL usage_db cannot be used."""


def driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise DriverMissing(f"a PostgreSQL usage_db needs psycopg: {install_hint('postgres')}") from None
    return psycopg


def connect(url: PostgresURL, *, readonly: bool = False, timeout: float = 5.0) -> psycopg.Connection:
    """An autocommit connection (transactions are explicit); migrated unless ``readonly``."""
    conn = driver().connect(url.conninfo, autocommit=True, connect_timeout=max(1, round(timeout)),
                            application_name="ccswitch", prepare_threshold=None, **_KEEPALIVE)
    try:
        if readonly:
            conn.execute("SET default_transaction_read_only = on")
        else:
            migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def version(conn: psycopg.Connection) -> int:
    if conn.execute("SELECT to_regclass(%s)", (SCHEMA_TABLE,)).fetchone()[0] is None:
        return 0
    row = conn.execute(f"SELECT max(version) FROM {SCHEMA_TABLE}").fetchone()
    return row[0] or 0


def migrate(conn: psycopg.Connection) -> int:
    """Bring the schema to schema.VERSION; returns the version found before."""
    found = version(conn)
    if found > schema.VERSION:
        raise RuntimeError(f"usage database schema {found} is newer than this ccswitch ({schema.VERSION})")
    for number in range(found + 1, schema.VERSION + 1):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
            if version(conn) >= number:       # another instance migrated while we waited for the lock
                continue
            for statement in schema.statements(number, schema.POSTGRESQL):
                conn.execute(statement)
            conn.execute(f"DELETE FROM {SCHEMA_TABLE}")
            conn.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (%s)", (number,))
    return found


def tables(conn: psycopg.Connection) -> set[str]:
    # the catalog, not information_schema: that shows only tables the user has rights on, and a
    # database of another program's tables read as an empty ledger
    return {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')")}


def columns(conn: psycopg.Connection, table: str) -> set[str]:
    """The columns ``table`` has (none if it does not exist), from the catalog as `tables`: a
    ledger read by a user without rights on it is that, not "no ccswitch tables"."""
    return {r[0] for r in conn.execute(
        "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
        "AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped", (table,))}


def _storable(values: tuple) -> tuple:
    # SQLite stores a bool as 0/1; PostgreSQL would refuse a boolean in an integer column
    return tuple(int(v) if isinstance(v, bool) else v for v in values)


class PostgresBackend(Backend):
    """One connection, kept while it works; a batch is one transaction of pipelined inserts that
    skip a row in already (a batch is written again when the answer to its commit was lost:
    schema migration 5).  No temporary tables and no prepared statements: a plain user behind a
    transaction-pooling PgBouncer writes as well as the database's owner."""

    def __init__(self, url: PostgresURL, columns: dict[str, tuple[str, ...]], *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.label = url.redacted
        self.connect_timeout = connect_timeout
        self._insert = {table: insert_sql(table, cols, "%s") for table, cols in columns.items()}
        self._conn: psycopg.Connection | None = None

    def connect(self) -> None:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = connect(self.url, timeout=self.connect_timeout)
            except driver().Error as exc:
                raise Unavailable(self.url.scrub(str(exc))) from exc

    def insert(self, rows: list[Row]) -> None:
        by_table: dict[str, list[tuple]] = {}
        for table, values in rows:        # each table's rows keep their order
            by_table.setdefault(table, []).append(_storable(values))
        kept = self._conn is not None and not self._conn.closed
        try:
            self._write_rows(by_table)
        except driver().OperationalError:
            self.close()
            if not kept:
                raise
            # the connection kept since the last batch was closed meanwhile (a server restart, an
            # idle timeout, a proxy): once more on a new one before this counts as an outage
            self._write_rows(by_table)

    def _write_rows(self, by_table: dict[str, list[tuple]]) -> None:
        self.connect()
        conn = self._conn
        assert conn is not None
        try:
            with conn.transaction(), conn.cursor() as cursor:
                for table, values in by_table.items():
                    cursor.executemany(self._insert[table], values)     # one pipeline, not a round trip each
        except BaseException as exc:
            if not self.is_poison(exc):   # a bad row leaves a good connection; anything else: reconnect
                self.close()
            raise

    def is_poison(self, exc: BaseException) -> bool:
        if isinstance(exc, DriverMissing):
            return False        # the rows wait: installing it mends it (and here a raise would lose them)
        psycopg = driver()
        return isinstance(exc, (psycopg.DataError, psycopg.IntegrityError, *VALUE_ERRORS))

    def refusal(self, exc: BaseException) -> str | None:
        text = self.describe(exc)
        return next((what for said, what in _REFUSALS if said in text), None)

    def describe(self, exc: BaseException) -> str:
        return self.url.scrub(super().describe(exc))     # libpq never echoes it; should a message ever do

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except driver().Error as exc:
                log.debug("closing the ledger's PostgreSQL connection failed too: %s", exc)
