"""Where what the boards know lives: in this instance's memory only (the default), or also
shared with other instances (`state:` in rules.yaml, ccswitch/shared).

Either way the request path reads the local boards and never waits: a shared state only
listens to the boards' change records (`Boards.listen`) and feeds other instances' records
back in (`Boards.apply`, `Boards.merge_in`), off the request path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.budget import SpendBoard
from ccswitch.routing.changes import (
    BindChange,
    Change,
    Feed,
    HealthChange,
    IssueChange,
    PreferChange,
    QuotaForget,
    SpendTotal,
    SwitchChange,
    WindowChange,
    account_digest,
    merge,
)
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.issued import IssuedResponses
from ccswitch.routing.quota import QuotaBoard

#: the records that are one account's: what an upstream's key learned (or issued) is not another key's
_ACCOUNTS_OWN = HealthChange | WindowChange | IssueChange


class Boards:
    """The boards whose state instances share (health, quota, affinity, spend, the issuers of
    stored responses), as one thing to listen to and feed.

    An upstream's health and rate-limit windows are its account's: the records carry the account
    they were learned under (`account_digest`), and a record of another account than the one this
    instance's rules give that name is not taken in.  A key changed by a reload then stays fresh
    whatever the shared store still holds of the old one (it was unreachable during the reload,
    or came back from an older snapshot), and instances that reload one after another do not
    mark each other's keys full."""

    def __init__(self, health: HealthBoard, quota: QuotaBoard, sessions: SessionBindings, spend: SpendBoard,
                 issued: IssuedResponses) -> None:
        self.health, self.quota, self.sessions, self.spend, self.issued = health, quota, sessions, spend, issued
        self.accounts: dict[str, str] = {}    # upstream name -> its account (`account_digest`)

    def sync_accounts(self, fingerprints: dict[str, tuple]) -> None:
        """The rules' upstreams (at start-up and after every reload): `Upstream.fingerprint` by name."""
        self.accounts = {name: account_digest(fp) for name, fp in fingerprints.items()}

    def listen(self, feed: Feed | None) -> None:
        """Hand every change record of every board to `feed` (None: stop), each account's own
        record stamped with its account."""
        def stamped(change: Change) -> None:
            feed(self._stamp(change))      # type: ignore[misc]
        for board in (self.health, self.quota, self.sessions, self.spend, self.issued):
            board.on_change = None if feed is None else stamped

    def _stamp(self, change: Change) -> Change:
        if isinstance(change, _ACCOUNTS_OWN):
            account = self.accounts.get(change.upstream, "")
            if account != change.account:
                return replace(change, account=account)
        return change

    def foreign(self, change: Change) -> bool:
        """A record of another account than the one the rules give its upstream's name (one
        without an account, from an older ccswitch, is taken as this one's)."""
        return (isinstance(change, _ACCOUNTS_OWN) and bool(change.account)
                and change.account != self.accounts.get(change.upstream, change.account))

    def apply(self, change: Change) -> None:
        """Another instance's record, in the order it was published: it replaces what this
        instance knew of that thing (spend totals only raise); another account's is left out.
        A health record replaces only a word no newer than the last one this instance told or
        took in (as in a merge, a tie to the record): two instances that changed an upstream
        within the milliseconds a record travels would each take the other's.  A 2xx it kept to
        itself (no news while healthy) does not count: no one else has it to settle on."""
        if self.foreign(change):
            return
        if isinstance(change, HealthChange) and (told := self.health.told(change.upstream)) is not None \
                and merge(change, told) is not change:
            return
        if isinstance(change, HealthChange | SwitchChange | PreferChange):
            self.health.apply(change)
        elif isinstance(change, WindowChange | QuotaForget):
            self.quota.apply(change)
        elif isinstance(change, BindChange):
            self.sessions.apply(change)
        elif isinstance(change, IssueChange):
            self.issued.apply(change)
        elif isinstance(change, SpendTotal):
            self.spend.apply(change)
        # SpendAdded is one instance's own addition: only ever summed in the shared store

    def local(self, key: tuple) -> Change | None:
        """This instance's record of the thing `key` names (a record's `key`), or None."""
        found = self._local(key)
        return None if found is None else self._stamp(found)

    def _local(self, key: tuple) -> Change | None:
        kind = key[0]
        if kind == "h":
            return self.health.shared(key[1]) if self.health.known(key[1]) else None
        if kind == "sw":
            return self.health.shared_switch(key[1])
        if kind == "use":
            return self.health.shared_preference()
        if kind == "q":
            return self.quota.shared(key[1], key[2])
        if kind == "qf":
            return self.quota.shared_forget(key[1])
        if kind == "b":
            return self.sessions.shared(key[1], key[2])
        if kind == "r":
            return self.issued.shared(key[1])
        if kind == "s":
            found = self.spend.shared(key[1], key[2], key[3])
            return found if found is not None and found.start == key[4] else None
        return None

    def merge_in(self, remote: Change) -> Change | None:
        """Another view of a thing, order unknown (the shared store after an outage): both views
        merge (routing.changes.merge), this instance takes the result, and it is returned when
        it differs from `remote` (the shared store should take it too)."""
        local = self.local(remote.key)
        if self.foreign(remote):
            return local      # another account's (the store had it from before a reload): this one's stands
        merged = merge(local, remote)
        self.apply(merged)
        return None if merged == remote else merged

    def view(self) -> list[Change]:
        """Everything this instance would tell the others."""
        return [self._stamp(change) for change in
                (*self.health.view(), *self.quota.view(), *self.sessions.view(), *self.spend.view(),
                 *self.issued.view())]


class SharedState(Protocol):
    """Keeps the boards in step with other instances, or does nothing (in memory)."""

    #: where the state lives, for logs (never a password)
    where: str
    #: whether other instances share it (what is told, and claimed, is theirs too)
    shared: bool
    #: whether it is in step with the shared store now (always, when nothing is shared)
    up: bool

    async def start(self, boards: Boards) -> None:
        """Begin (returns at once: connecting and loading happen in the background)."""

    async def stop(self) -> None:
        """End, handing on what is still queued if that is quick."""

    async def first_look(self) -> None:
        """Return once the shared store was first tried (its records merged in, or found out of
        reach), a few seconds at most; at once when nothing is shared."""

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
    up = True

    async def start(self, boards: Boards) -> None:
        boards.listen(None)

    async def stop(self) -> None:
        return None

    async def first_look(self) -> None:
        return None

    async def claim(self, name: str, until: float) -> bool:
        return True

    async def claim_state(self, name: str, state: str, episode: str, *, absorbed: bool = False) -> bool:
        return not absorbed
