"""Where what the boards know lives: in this instance's memory only (the default), or also
shared with other instances (`state:` in rules.yaml, ccswitch/shared).

Either way the request path reads the local boards and never waits: a shared state only
listens to the boards' change records (`Boards.listen`) and feeds other instances' records
back in (`Boards.apply`, `Boards.merge_in`), off the request path.
"""

from __future__ import annotations

from typing import Protocol

from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.budget import SpendBoard
from ccswitch.routing.changes import (
    BindChange,
    Change,
    Feed,
    HealthChange,
    PreferChange,
    QuotaForget,
    SpendTotal,
    SwitchChange,
    WindowChange,
    merge,
)
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.quota import QuotaBoard


class Boards:
    """The four boards whose state instances share, as one thing to listen to and feed."""

    def __init__(self, health: HealthBoard, quota: QuotaBoard, sessions: SessionBindings, spend: SpendBoard) -> None:
        self.health, self.quota, self.sessions, self.spend = health, quota, sessions, spend

    def listen(self, feed: Feed | None) -> None:
        """Hand every change record of every board to `feed` (None: stop)."""
        for board in (self.health, self.quota, self.sessions, self.spend):
            board.on_change = feed

    def apply(self, change: Change) -> None:
        """Another instance's record, in the order it was published: it replaces what this
        instance knew of that thing (spend totals only raise)."""
        if isinstance(change, HealthChange | SwitchChange | PreferChange):
            self.health.apply(change)
        elif isinstance(change, WindowChange | QuotaForget):
            self.quota.apply(change)
        elif isinstance(change, BindChange):
            self.sessions.apply(change)
        elif isinstance(change, SpendTotal):
            self.spend.apply(change)
        # SpendAdded is one instance's own addition: only ever summed in the shared store

    def local(self, key: tuple) -> Change | None:
        """This instance's record of the thing `key` names (a record's `key`), or None."""
        kind = key[0]
        if kind == "h":
            return self.health.shared(key[1]) if self.health.known(key[1]) else None
        if kind == "sw":
            return self.health.shared_switch(key[1])
        if kind == "use":
            return self.health.shared_preference()
        if kind == "q":
            return self.quota.shared(key[1], key[2])
        if kind == "b":
            return self.sessions.shared(key[1], key[2])
        if kind == "s":
            found = self.spend.shared(key[1], key[2], key[3])
            return found if found is not None and found.start == key[4] else None
        return None

    def merge_in(self, remote: Change) -> Change | None:
        """Another view of a thing, order unknown (the shared store after an outage): both views
        merge (routing.changes.merge), this instance takes the result, and it is returned when
        it differs from `remote` (the shared store should take it too)."""
        merged = merge(self.local(remote.key), remote)
        self.apply(merged)
        return None if merged == remote else merged

    def view(self) -> list[Change]:
        """Everything this instance would tell the others."""
        return [*self.health.view(), *self.quota.view(), *self.sessions.view(), *self.spend.view()]


class SharedState(Protocol):
    """Keeps the boards in step with other instances, or does nothing (in memory)."""

    #: where the state lives, for logs (never a password)
    where: str
    #: whether other instances share it (what is told, and claimed, is theirs too)
    shared: bool

    async def start(self, boards: Boards) -> None:
        """Begin (returns at once: connecting and loading happen in the background)."""

    async def stop(self) -> None:
        """End, handing on what is still queued if that is quick."""

    async def claim(self, name: str, until: float) -> bool:
        """Whether this instance tells the occurrence `name` (an `Event.claim`): the first to claim
        it until `until` (epoch seconds) does.  True when nothing is shared, and while the shared
        store cannot be reached: an occurrence told twice beats one never told."""

    async def claim_state(self, name: str, state: str, episode: str, *, absorbed: bool = False) -> bool:
        """Whether this instance tells that `name` is now `state` (an `Event.state`) for
        `episode`: the one whose claim changes the last told state does.  True when nothing is
        shared, and while the shared store cannot be reached; `absorbed` (a cooldown the flapping
        damper took back): told only if the last told state is known to be another."""


class InMemoryState:
    """Nothing shared: each instance knows what it saw (the default, and today's behaviour)."""

    where = "in memory (this instance only)"
    shared = False

    async def start(self, boards: Boards) -> None:
        boards.listen(None)

    async def stop(self) -> None:
        return None

    async def claim(self, name: str, until: float) -> bool:
        return True

    async def claim_state(self, name: str, state: str, episode: str, *, absorbed: bool = False) -> bool:
        return not absorbed
