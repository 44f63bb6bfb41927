"""Packages a rules file needs beyond ccswitch's own (the optional extras): checked with the
rules, so `ccswitch check`, a start and a reload say what to install, instead of a ledger that
keeps its rows in memory until a stop or a state that fails once the proxy starts."""

from __future__ import annotations

import importlib.util

from ccswitch.config.database_url import PostgresURL
from ccswitch.config.models import Rules


def missing_drivers(rules: Rules) -> list[tuple[str, str]]:
    """(key, what to install) for each optional package the rules need and this Python lacks."""
    problems = []
    if isinstance(rules.usage_db, PostgresURL) and importlib.util.find_spec("psycopg") is None:
        problems.append(("usage_db", "a PostgreSQL usage_db needs psycopg, which is not installed here: "
                                     "pip install 'ccswitch[postgres]'"))
    if rules.state is not None and (missing := redis_missing()):
        problems.append(("state", missing))
    return problems


def redis_missing() -> str | None:
    """What to install for a Redis `state`, or None when it is there."""
    if importlib.util.find_spec("redis") is None:
        return "a Redis state needs the redis package, which is not installed here: pip install 'ccswitch[redis]'"
    return None
