"""The usage database schema, versioned with `PRAGMA user_version`.

Each migration takes the schema from version N-1 to N; opening a database for
writing runs the missing ones in order, each in its own write transaction that
first looks at the version again (two processes opening an old file at once
migrate it once).  Columns named in the ledger reference (docs/ledger.md) are
never renamed or dropped.  A read-only connection does not migrate: readers ask
``columns(conn, table)`` for what an older file has.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: requests, attempts, activations
    """
    CREATE TABLE requests (
        id                        INTEGER PRIMARY KEY,
        request_id                TEXT NOT NULL,      -- ties attempts to their request
        ts                        TEXT NOT NULL,      -- request start, UTC ISO-8601
        route                     TEXT NOT NULL,      -- claude | codex | chat
        endpoint                  TEXT NOT NULL,      -- messages | count_tokens | responses | chat | websocket
        upstream                  TEXT,               -- NULL when ccswitch answered itself
        upstream_protocol         TEXT,
        model                     TEXT,
        upstream_model            TEXT,
        status                    INTEGER,
        stream                    INTEGER NOT NULL DEFAULT 0,
        attempts                  INTEGER NOT NULL DEFAULT 0,
        input_tokens              INTEGER NOT NULL DEFAULT 0,   -- not read from / written to cache
        output_tokens             INTEGER NOT NULL DEFAULT 0,   -- reasoning included
        cache_creation_tokens     INTEGER NOT NULL DEFAULT 0,
        cache_creation_1h_tokens  INTEGER NOT NULL DEFAULT 0,   -- subset of cache_creation_tokens
        cache_read_tokens         INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens          INTEGER NOT NULL DEFAULT 0,
        latency_ms                INTEGER,
        ttfb_ms                   INTEGER,
        error                     TEXT,
        raw_usage                 TEXT                -- the upstream's usage JSON, for audit
    );
    CREATE INDEX requests_ts ON requests (ts);
    CREATE TABLE attempts (
        id                        INTEGER PRIMARY KEY,
        request_id                TEXT NOT NULL,
        ts                        TEXT NOT NULL,
        n                         INTEGER NOT NULL,   -- 1 = first attempt
        upstream                  TEXT NOT NULL,
        status                    INTEGER,
        error                     TEXT,
        ms                        INTEGER,
        input_tokens              INTEGER NOT NULL DEFAULT 0,
        output_tokens             INTEGER NOT NULL DEFAULT 0,
        cache_creation_tokens     INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens         INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens          INTEGER NOT NULL DEFAULT 0,
        raw_usage                 TEXT
    );
    CREATE INDEX attempts_request ON attempts (request_id);
    CREATE TABLE activations (
        id                        INTEGER PRIMARY KEY,
        ts                        TEXT NOT NULL,
        upstream                  TEXT NOT NULL,
        status                    INTEGER,
        ok                        INTEGER NOT NULL,
        error                     TEXT,
        latency_ms                INTEGER
    );
    CREATE INDEX activations_ts ON activations (ts);
    """,
    # 2: session affinity
    """
    ALTER TABLE requests ADD COLUMN session TEXT;     -- the client's session key, NULL without one
    ALTER TABLE requests ADD COLUMN affinity TEXT;    -- new | kept | moved, NULL without a session
    -- one session's requests in time order; partial: requests without a session are not indexed
    CREATE INDEX requests_session ON requests (session, ts) WHERE session IS NOT NULL;
    """,
    # 3: named client keys
    """
    ALTER TABLE requests ADD COLUMN client TEXT;      -- the client key's name, NULL without client keys
    """,
]

VERSION = len(MIGRATIONS)


def _version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _statements(script: str) -> list[str]:
    """A migration's statements, one by one (executescript would commit the open transaction)."""
    out, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending.strip())
            pending = ""
    return out


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to VERSION; returns the version found before."""
    found = _version(conn)
    if found > VERSION:
        raise RuntimeError(f"usage database schema {found} is newer than this ccswitch ({VERSION})")
    for number in range(found + 1, VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _version(conn) < number:      # another process may have migrated while we waited
                for statement in _statements(MIGRATIONS[number - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:          # some errors (a full disk) have rolled it back already
                conn.execute("ROLLBACK")
            raise
    return found


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The columns ``table`` has (none if it does not exist): what an older, unmigrated file holds."""
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def connect(path: str, *, readonly: bool = False, timeout: float = 5.0) -> sqlite3.Connection:
    if readonly:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    migrate(conn)
    return conn
