"""Usage rows a PostgreSQL ledger could not take before ccswitch stopped (the server down during a
restart or a redeploy): kept on this machine in a SQLite file of the ledger's own schema, and
written by the next start for the same ledger, which then deletes the file.

A file is named for its ledger (a digest of the URL without its password), so another ledger's
start leaves it alone.  It is written under a temporary name and renamed when whole, and a start
claims it by renaming it again: two instances on one machine never read a file half-written, nor
both take the same one.  A claim whose process is gone (killed before it wrote the rows or kept
them again) is claimed anew; a claim names its process by PID and start time, so one left by an
earlier process under the same PID (a container's PID 1, run after run) is gone too.  Written
twice all the same (a stop while a batch's commit hung), a request's row still goes in once: the
ledger skips rows it has (schema migration 5).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from ccswitch.ledger.backend import Row, SQLiteBackend
from ccswitch.ledger.schema import columns as table_columns

log = logging.getLogger("ccswitch.ledger")

SPILL_DIR = Path("~/.ccswitch/unwritten")
_CLAIMED = ".taken-"


def _prefix(ledger: str) -> str:
    return "usage-" + hashlib.sha256(ledger.encode()).hexdigest()[:12] + "-"


def spill(rows: list[Row], directory: Path, columns: dict[str, tuple[str, ...]], ledger: str) -> tuple[Path, int]:
    """Write `rows` to a new file in `directory` for the ledger named `ledger` -> (its path, rows
    it could not hold).  Raises OSError or sqlite3.Error when no file can be written."""
    directory = directory.expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = directory / f"{_prefix(ledger)}{stamp}-{os.getpid()}.db"
    partial = final.with_name("." + final.name + ".part")
    backend = SQLiteBackend(partial, columns)
    lost = 0
    try:
        try:
            backend.insert(rows)
        except Exception:       # a row SQLite cannot hold: the others, one by one
            for one in rows:
                try:
                    backend.insert([one])
                except sqlite3.OperationalError:
                    raise       # the file itself cannot be written
                except Exception as exc:
                    lost += 1
                    log.error("ccswitch: a %s row could not be kept either: %s", one[0], exc)
    finally:
        backend.close()
    os.replace(partial, final)
    return final, lost


def spilled(directory: Path, ledger: str) -> list[Path]:
    """The files earlier stops left for the ledger named `ledger`, oldest first (claims of
    processes that are gone included)."""
    directory = directory.expanduser()
    if not directory.is_dir():
        return []
    prefix = _prefix(ledger)
    found = []
    for path in directory.iterdir():
        name = path.name
        if not name.startswith(prefix):
            continue
        claimer = name.rpartition(_CLAIMED)[2] if _CLAIMED in name else None
        if name.endswith(".db") if claimer is None else _is_claimer(claimer) and not _alive(claimer):
            found.append(path)      # not a claim's `-wal` or `-shm`, which SQLite keeps while it is read
    return sorted(found, key=lambda p: p.name)


def claim(path: Path) -> Path | None:
    """Take `path` for this process (None: another took it first)."""
    base = path.name.partition(_CLAIMED)[0]
    mine = path.with_name(f"{base}{_CLAIMED}{_process(os.getpid())}")
    try:
        os.rename(path, mine)
    except FileNotFoundError:
        return None
    for sidecar in ("-wal", "-shm"):   # a dead claimer's, left by SQLite reading it: no rows of their own
        path.with_name(path.name + sidecar).unlink(missing_ok=True)
    return mine


def read(path: Path, columns: dict[str, tuple[str, ...]]) -> list[Row]:
    """A spill file's rows, each table's in the order they were written."""
    conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        rows: list[Row] = []
        for table, cols in columns.items():
            if have := table_columns(conn, table):
                # a file an older ccswitch wrote lacks the columns added since: NULL in them, as in
                # the ledger's own older rows
                picked = ", ".join(c if c in have else "NULL" for c in cols)
                rows += [(table, tuple(values)) for values in
                         conn.execute(f"SELECT {picked} FROM {table} ORDER BY id")]
        return rows
    finally:
        conn.close()


def remove(path: Path) -> None:
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            part.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("ccswitch: cannot remove %s (its rows are written): %s", part, exc)


def _process(pid: int) -> str:
    """`<pid>.<start time>` (clock ticks since boot, from /proc), or `<pid>` where the system does
    not tell the start: a PID given to another process since is not the claimer."""
    try:
        return f"{pid}.{int(Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19])}"
    except (OSError, IndexError, ValueError):
        return str(pid)


def _is_claimer(text: str) -> bool:
    """A claim's `<pid>` or `<pid>.<start time>` (not a claim's SQLite `-wal` / `-shm` beside it)."""
    pid, _, start = text.partition(".")
    return pid.isdigit() and (start.isdigit() or (not start and "." not in text))


def _alive(claimer: str) -> bool:
    pid, _, start = claimer.partition(".")
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass                # another user's process: alive, and judged by its start time as any
    # this process's own claim too (an earlier ledger of its is writing it), but not an earlier
    # process's under the same PID; a claim without a start time (an older ccswitch's) is taken as alive
    return not start or _process(int(pid)) == claimer
