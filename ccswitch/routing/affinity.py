"""Session affinity: a conversation's requests go to the upstream that holds its prompt cache.

A client's session key comes from its headers or body (Claude Code and Codex CLI send one);
a session is bound to an upstream after that upstream answered it with a 2xx, and the
binding lasts while the session keeps coming back within the route's `sticky` idle time.
Bindings are kept per route and by upstream name, so they survive a rules reload.
Everything runs on one event loop: no locks.  Bindings other instances should know go out
through `SessionBindings.on_change` (routing.changes) with epoch times.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ccswitch.routing.changes import BindChange, Feed, notify

#: headers that name a session, first present wins (ours, Claude Code's, Codex CLI's)
SESSION_HEADERS = ("x-ccswitch-session", "x-claude-code-session-id", "session-id", "session_id")
_MAX_KEY = 200          # a longer key is cut: it is stored in every ledger row
_PURGE_EVERY = 1024     # bindings stored (bound here or told by another instance) between sweeps
#: bindings kept at most (about 500 bytes each): a client naming a new session on every request
#: would otherwise keep each for the whole `sticky`; the least recently bound go first
MAX_BINDINGS = 100_000
# a binding that only had its idle time restarted is shared again after this share of its TTL
# (at most _RETELL_MAX): another instance then lets it go at most that much early
_RETELL_SHARE, _RETELL_MAX = 0.1, 60.0


def session_key(headers: Iterable[tuple[str, str]], body: Mapping[str, Any] | None) -> str | None:
    """The request's session key: the first of the session headers, else the body's
    `prompt_cache_key`, else its `metadata.user_id`; None when there is none."""
    found: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        if low in SESSION_HEADERS and low not in found and value.strip():
            found[low] = value.strip()
    for name in SESSION_HEADERS:
        if name in found:
            return found[name][:_MAX_KEY]
    body = body or {}
    key = body.get("prompt_cache_key")
    if isinstance(key, str) and key.strip():
        return key.strip()[:_MAX_KEY]
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and user.strip():
        return user.strip()[:_MAX_KEY]
    return None


def session_fraction(key: str) -> float:
    """A stable number in [0, 1) for a session: the same on every instance and every run, so a
    weighted pick never flaps for one session."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64


@dataclass
class Binding:
    upstream: str
    last_used: float
    ttl: float
    told: float = -math.inf     # when it was last shared (clock time)


class SessionBindings:
    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.wall = wall           # epoch seconds, for what other instances are told
        self.on_change: Feed | None = None   # the shared state's hook (None: this instance alone)
        self._bindings: dict[tuple[str, str], Binding] = {}
        self._binds = 0
        self._sticky: dict[str, float] = {}   # each route's idle time in force now (from `sync`)
        # each route's upstreams in the rules in force (from `sync`; None before any): a binding to
        # one its route no longer lists serves nothing
        self._listed: dict[str, frozenset[str]] | None = None

    def bound(self, route: str, key: str) -> str | None:
        """The upstream this session is bound to, while it has not been idle past its TTL."""
        binding = self._bindings.get((route, key))
        if binding is None:
            return None
        if self.clock() - binding.last_used > binding.ttl:
            del self._bindings[(route, key)]
            return None
        return binding.upstream

    def bind(self, route: str, key: str, upstream: str, ttl: float) -> bool:
        """After a 2xx from `upstream`: (re)bind the session there and restart its idle time;
        whether it is bound.  With sticky off (`ttl` 0) nothing is bound, and nothing is kept to
        come back to later.  A request that began before a reload binds as the rules now in force
        say: not to an upstream its route no longer lists, and with the route's `sticky`."""
        if not self.listed(route, upstream):
            return False
        ttl = self._sticky.get(route, ttl)
        if ttl <= 0:
            self._bindings.pop((route, key), None)
            return False
        now = self.clock()
        old = self._bindings.get((route, key))
        binding = Binding(upstream, now, ttl)
        if old is not None and old.upstream == upstream and old.ttl == ttl:
            binding.told = old.told
        if self.on_change is not None and now - binding.told >= min(ttl * _RETELL_SHARE, _RETELL_MAX):
            binding.told = now
            notify(self.on_change, BindChange(route, key, upstream, ttl, self.wall()))
        self._store((route, key), binding)
        return True

    def listed(self, route: str, upstream: str) -> bool:
        return self._listed is None or upstream in self._listed.get(route, ())

    def sync(self, names: Iterable[str], sticky: Mapping[str, float] | None = None,
             routes: Mapping[str, Iterable[str]] | None = None) -> None:
        """After a reload: bindings to upstreams that keep their name stay; others go.  `sticky`
        (route -> idle time) is in force from now on for every binding, old ones included: a
        longer one keeps a session that would have been let go, a shorter one lets it fail back,
        and `off` drops the route's bindings.  Other instances are told (the shared copy expires
        as the local one does)."""
        keep = set(names)
        if routes is not None:
            self._listed = {route: frozenset(listed) for route, listed in routes.items()}
        for key in [k for k, b in self._bindings.items() if b.upstream not in keep]:
            del self._bindings[key]
        if sticky is None:
            return
        self._sticky = dict(sticky)
        self._purge()     # what expired under the old idle time stays expired
        for (route, key), binding in list(self._bindings.items()):
            ttl = self._sticky.get(route, binding.ttl)
            if ttl == binding.ttl:
                continue
            told = self._shared(route, key, binding)
            if ttl <= 0:
                del self._bindings[(route, key)]
            else:
                binding.ttl, binding.told = ttl, self.clock()
            notify(self.on_change, replace(told, ttl=max(0.0, ttl)))

    def count_by_upstream(self) -> dict[str, int]:
        """Live bindings per upstream (for `ccswitch.status`), of those whose route still lists the
        upstream (one a reload took out of the route serves the session no more: its next request
        moves it)."""
        self._purge()
        counts: dict[str, int] = {}
        for (route, _), binding in self._bindings.items():
            if self.listed(route, binding.upstream):
                counts[binding.upstream] = counts.get(binding.upstream, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self._bindings)

    def _store(self, key: tuple[str, str], binding: Binding) -> None:
        """Keep a binding; every so many, sweep the expired ones (an instance that serves little
        still stores every binding the others tell it of)."""
        self._bindings.pop(key, None)          # stored anew: the most recently bound is last
        self._bindings[key] = binding
        self._binds += 1
        if self._binds % _PURGE_EVERY == 0:
            self._purge()
        if len(self._bindings) > MAX_BINDINGS:
            self._purge()
            while len(self._bindings) > MAX_BINDINGS:
                del self._bindings[next(iter(self._bindings))]

    def _purge(self) -> None:
        now = self.clock()
        for key in [k for k, b in self._bindings.items() if now - b.last_used > b.ttl]:
            del self._bindings[key]

    # ------------------------------------------------------------------ shared with other instances

    def _shared(self, route: str, key: str, binding: Binding) -> BindChange:
        return BindChange(route, key, binding.upstream, binding.ttl, self.wall() - (self.clock() - binding.last_used))

    def shared(self, route: str, key: str) -> BindChange | None:
        binding = self._bindings.get((route, key)) if self.bound(route, key) is not None else None
        return None if binding is None else self._shared(route, key, binding)

    def view(self) -> list[BindChange]:
        """Every live binding, as other instances take it."""
        self._purge()
        return [self._shared(route, key, b) for (route, key), b in self._bindings.items()]

    def apply(self, change: BindChange) -> None:
        """Take another instance's binding in, unless this instance used the session since."""
        ttl = self._sticky.get(change.route, change.ttl)   # this instance's idle time, once it has one
        now = self.clock()
        last_used = now - max(0.0, self.wall() - change.at)
        if ttl <= 0 or now - last_used > ttl:
            return
        old = self._bindings.get((change.route, change.session))
        if old is not None and old.last_used > last_used:
            return
        # told: what another instance told needs no retelling until it is used here again
        self._store((change.route, change.session), Binding(change.upstream, last_used, ttl, told=now))
