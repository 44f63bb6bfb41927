"""What rules need of the machine they run on beyond ccswitch itself: the optional packages of
the engines they name, a folder their SQLite ledger can be written in.  Checked with the rules,
so `ccswitch check`, a start and a reload say what to do, instead of a ledger that keeps its rows
in memory until a stop or a state that fails once the proxy serves."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ccswitch.config.database_url import PostgresURL
from ccswitch.config.models import Rules


def unmet_needs(rules: Rules) -> list[tuple[str, str]]:
    """(key, what to do) for each need of the rules this machine does not meet."""
    problems = []
    if isinstance(rules.usage_db, PostgresURL):
        if importlib.util.find_spec("psycopg") is None:
            problems.append(("usage_db", "a PostgreSQL usage_db needs psycopg, which is not installed here: "
                                         "pip install 'ccswitch[postgres]'"))
    elif isinstance(rules.usage_db, Path) and (unwritable := ledger_unwritable(rules.usage_db)):
        problems.append(("usage_db", unwritable))
    if rules.state is not None and (missing := redis_missing()):
        problems.append(("state", missing))
    return problems


def redis_missing() -> str | None:
    """What to install for a Redis `state`, or None when it is there."""
    if importlib.util.find_spec("redis") is None:
        return "a Redis state needs the redis package, which is not installed here: pip install 'ccswitch[redis]'"
    return None


def ledger_unwritable(path: Path) -> str | None:
    """Why a SQLite ledger cannot be made or written at `path` (its folders are made as needed),
    or None.  Only what is certain now: a full disk or a lost mount stays the writer's to report."""
    if path.is_dir():
        return f"{path} is a folder: name a file in it, e.g. {path / 'usage.db'}"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"{path} cannot be written (no permission)"
    above = path.parent
    while not above.exists():
        if above.is_symlink():
            return f"{above} is a link to {os.readlink(above)}, which does not exist"
        above = above.parent
    if not above.is_dir():
        return f"{above} is a file, so no folder can be made there for {path}"
    if not os.access(above, os.W_OK | os.X_OK):
        return f"cannot create {path} (no permission to write in {above})"
    return None
