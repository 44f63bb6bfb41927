"""Which shared state the rules ask for."""

from __future__ import annotations

from ccswitch.config.needs import redis_missing
from ccswitch.config.state_url import RedisURL
from ccswitch.routing.state import InMemoryState, SharedState


class StateUnavailable(Exception):
    """The rules ask for a shared state this installation cannot provide."""


def check(url: RedisURL | None) -> None:
    """Raise StateUnavailable when `url` names a state this installation cannot reach (the rules'
    check says so first; rules read before the package went still get here)."""
    if url is not None and (missing := redis_missing()):
        raise StateUnavailable(f"state: {missing}")


def state_for(url: RedisURL | None) -> SharedState:
    """The shared state the rules' `state` names: in memory when it names none."""
    check(url)
    if url is None:
        return InMemoryState()
    # the redis package is imported only when a rules file asks for it
    from ccswitch.shared.redis_state import RedisState
    return RedisState(url)
