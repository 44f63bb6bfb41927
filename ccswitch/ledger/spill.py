"""Usage rows a PostgreSQL ledger could not take before ccswitch stopped (the server down during a
restart or a redeploy): kept on this machine in a SQLite file of the ledger's own schema, and
written by the next start, which then deletes the file.  Written twice (a stop while a batch's
commit hung, say), a row still goes in once: the ledger skips rows it has (schema migration 5).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from ccswitch.ledger.backend import Row, SQLiteBackend
from ccswitch.ledger.schema import columns as table_columns

log = logging.getLogger("ccswitch.ledger")

SPILL_DIR = Path("~/.ccswitch/unwritten")
_PATTERN = "usage-*.db"


def spill(rows: list[Row], directory: Path, columns: dict[str, tuple[str, ...]]) -> Path:
    """Write `rows` to a new file in `directory`; raises OSError or sqlite3.Error when it cannot."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = directory.expanduser() / f"usage-{stamp}-{os.getpid()}.db"
    backend = SQLiteBackend(path, columns)
    try:
        backend.insert(rows)
    finally:
        backend.close()
    return path


def spilled(directory: Path) -> list[Path]:
    """The files earlier stops left, oldest first."""
    directory = directory.expanduser()
    return sorted(directory.glob(_PATTERN)) if directory.is_dir() else []


def read(path: Path, columns: dict[str, tuple[str, ...]]) -> list[Row]:
    """A spill file's rows, each table's in the order they were written."""
    conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        rows: list[Row] = []
        for table, cols in columns.items():
            if table_columns(conn, table):
                rows += [(table, tuple(values)) for values in
                         conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY id")]
        return rows
    finally:
        conn.close()


def remove(path: Path) -> None:
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            part.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("ccswitch: cannot remove %s (its rows are written): %s", part, exc)
