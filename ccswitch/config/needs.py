"""What rules need of the machine the proxy runs them on beyond ccswitch itself: the optional
packages of the engines they name, a folder their SQLite ledger can be written in.  Checked by
`ccswitch check` and whenever the proxy puts rules in force (a start, a reload), so they say what
to do, instead of a ledger that keeps its rows in memory until a stop or a state that fails once
the proxy serves.  Not by the commands that only read the rules (`env`, `report`, …)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from ccswitch.config.database_url import PostgresURL
from ccswitch.config.models import Rules


def unmet_needs(rules: Rules, *, ledger: bool = True) -> list[tuple[str, str]]:
    """(key, what to do) for each need of the rules this machine does not meet (`ledger`: the
    usage ledger is on, so its database is needed)."""
    problems = []
    if ledger and (unmet := _ledger_unmet(rules.usage_db)):
        problems.append(("usage_db", unmet))
    if rules.state is not None and (missing := redis_missing()):
        problems.append(("state", missing))
    return problems


def _ledger_unmet(usage_db: PostgresURL | Path) -> str | None:
    if isinstance(usage_db, PostgresURL):
        if importlib.util.find_spec("psycopg") is None:
            return f"a PostgreSQL usage_db needs psycopg, which is not installed here: {install_hint('postgres')}"
        return None
    return ledger_unwritable(usage_db)


def redis_missing() -> str | None:
    """What to install for a Redis `state`, or None when it is there."""
    if importlib.util.find_spec("redis") is None:
        return f"a Redis state needs the redis package, which is not installed here: {install_hint('redis')}"
    return None


#: what each extra of setup.cfg installs
_EXTRAS = {"redis": "'redis>=5'", "postgres": "'psycopg[binary]>=3.1'"}


def install_hint(extra: str) -> str:
    """How to install an extra into the environment ccswitch runs in: ccswitch is on no package
    index, so `pip install 'ccswitch[redis]'` from elsewhere finds nothing (a pipx install, a
    pip of another Python)."""
    return (f"{sys.executable} -m pip install {_EXTRAS[extra]} (the environment ccswitch runs in; "
            f"pipx: pipx inject ccswitch {_EXTRAS[extra]}; a checkout: pip install -e '.[{extra}]')")


def ledger_unwritable(path: Path) -> str | None:
    """Why a SQLite ledger cannot be made or written at `path` (its folders are made as needed),
    or None.  Only what is certain now: a full disk or a lost mount stays the writer's to report."""
    try:
        return _unwritable(path)
    except OSError as exc:      # a folder on the way that may not be looked into
        return f"cannot look at {path} ({exc.strerror or type(exc).__name__})"


def _unwritable(path: Path) -> str | None:
    if path.is_symlink():
        # SQLite writes the file the link leads to, and its journal beside that file; the ledger
        # makes the link's own folder only
        target = path.resolve()
        if not target.exists() and not target.parent.is_dir():
            return (f"{path} is a link to {target}, whose folder "
                    + ("is a file" if target.parent.exists() else "does not exist"))
        path = target
    if path.is_dir():
        return f"{path} is a folder: name a file in it, e.g. {path / 'usage.db'}"
    if path.exists():
        if not os.access(path, os.W_OK):
            return f"{path} cannot be written (no permission)"
        # SQLite writes its journal beside the file
        return None if os.access(path.parent, os.W_OK | os.X_OK) else \
            f"{path} cannot be written: no permission to write in {path.parent}, where SQLite keeps its journal"
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
