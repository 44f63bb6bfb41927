"""Spend against budgets: per upstream and per client key, per calendar day and month in the
rules' time zone.  Amounts come in as requests are recorded (and from the ledger at start-up);
checking a budget is a dictionary look-up, never a database query.  Crossing 80 % and 100 %
of a budget is announced once per period on the event bus.  What this instance spends goes out
through `on_change` (routing.changes.SpendAdded, per period); the shared totals come back
through `apply` (SpendTotal), which only ever raises a period's spend."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from ccswitch.config.models import Budget, Rules
from ccswitch.money import usd
from ccswitch.routing.changes import Feed, SpendAdded, SpendTotal, notify
from ccswitch.routing.events import Event, Events

log = logging.getLogger("ccswitch.budget")

UPSTREAM, CLIENT = "upstream", "client"
PERIODS = ("daily", "monthly")
_WARN_AT = 0.8
#: what a sum of float costs may fall short of the budget by and still have reached it: ten
#: requests of $0.10 add up to $0.9999999999999999
_ROUNDING = 1e-9


def reached(spent: float, line: float) -> bool:
    return spent >= line - _ROUNDING


def period_start(kind: str, moment: datetime, tz: tzinfo) -> datetime:
    """The local start of the day or month `moment` falls in (an aware datetime in `tz`)."""
    return _instant(_first_day(kind, moment, tz), tz)


def period_end(kind: str, moment: datetime, tz: tzinfo) -> datetime:
    """The next period's start (from the local date: a start that a DST change moved to 01:00
    is no base for the next day's)."""
    first = _first_day(kind, moment, tz)
    following = first + timedelta(days=1) if kind == "daily" else (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return _instant(following, tz)


def _first_day(kind: str, moment: datetime, tz: tzinfo) -> datetime:
    """The local date's midnight, or its month's first's (naive).  fold=0: a midnight that comes
    twice (clocks set back from 01:00) is the day's first one."""
    day = moment.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0, fold=0, tzinfo=None)
    return day if kind == "daily" else day.replace(day=1)


def _instant(local: datetime, tz: tzinfo) -> datetime:
    """A local wall time as the real instant's (with the zone's offset on that date): a midnight
    that a DST change skips (America/Havana, Africa/Cairo) is 01:00, as a total's start read back
    from its timestamp is, so the two compare equal."""
    return datetime.fromtimestamp(local.replace(tzinfo=tz).timestamp(), tz)


@dataclass(frozen=True)
class Overrun:
    kind: str            # daily | monthly
    limit: float
    spent: float
    until: datetime      # when the next period starts (aware, UTC)

    def describe(self, who: str) -> str:
        period = "today" if self.kind == "daily" else "this month"
        spent, limit = usd(self.spent, self.limit)
        return f"{who} has spent {spent} of its {self.kind} budget of {limit} {period}"


def _add_to(spent: dict[tuple[str, str, str], tuple[datetime, float]], key: tuple[str, str, str],
            start: datetime, usd: float) -> None:
    """Add to the period of `key` that starts at `start`: a later period replaces the one held,
    an earlier one is left out."""
    held = spent.get(key)
    if held is None or held[0] < start:
        spent[key] = (start, usd)
    elif held[0] == start:
        spent[key] = (start, held[1] + usd)


class SpendBoard:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 events: Events | None = None) -> None:
        self.clock = clock
        self.events = events
        self.tz: tzinfo = UTC
        self._budgets: dict[tuple[str, str], Budget] = {}
        # (who kind, name, period kind) -> (period start, spend in it); only the current period is kept
        self._spent: dict[tuple[str, str, str], tuple[datetime, float]] = {}
        # the same, of this run's own additions only: a ledger read late raises the spend to what
        # it holds plus these (never adds to a shared total that may hold the ledger's spend too)
        self._own: dict[tuple[str, str, str], tuple[datetime, float]] = {}
        # budget lines already told: (who, name, period kind, period start, share, the budget's amount), so a
        # budget changed by a reload has its own lines told
        self._told: set[tuple[str, str, str, datetime, float, float]] = set()
        self.on_change: Feed | None = None   # the shared state's hook (None: this instance alone)
        # True: crossings are told from this board's own view.  False while a shared state is up:
        # Redis orders the additions, and the instance whose addition took the shared total
        # across a line tells it (`apply`'s `added`), once for all instances
        self.alone = True
        self._told_other_zone = False

    def configure(self, rules: Rules) -> None:
        """Take the rules' budgets and time zone (at start-up and on every reload)."""
        before = self._budgets
        if rules.tz != self.tz:
            self._move_to(rules.tz)   # its lines marked told are the old amounts': a changed one is news below
        self._budgets = {(UPSTREAM, u.name): u.budget for u in rules.upstreams if u.budget}
        self._budgets.update({(CLIENT, c.name): c.budget for c in rules.client_keys if c.budget})
        # a budget new or changed below the spend: no request will cross its lines (one over it gets
        # none), so the reload is the news (with a shared state, every instance reloading says it,
        # and the claim of its notification lets one tell it)
        now = self.clock()
        for key, budget in self._budgets.items():
            if before.get(key) == budget:
                continue
            for kind in PERIODS:
                held = self._spent.get((*key, kind))
                if held is not None and held[0] == period_start(kind, now, self.tz):
                    self._announce(*key, kind, held[0])

    def _move_to(self, tz: tzinfo) -> None:
        """A new zone (`timezone:` edited): the spend of each current period goes on in the period
        that holds now in the new zone, instead of starting again from $0 for the rest of it."""
        now = self.clock()
        def move(spent: dict) -> dict:
            return {key: (period_start(key[2], now, tz), usd) for key, (start, usd) in spent.items()
                    if start == period_start(key[2], now, self.tz)}
        moved = move(self._spent)
        # the lines told in the current periods stay told in them (a zone and an amount changed
        # away and back tell nothing again)
        told = {(who, name, kind, period_start(kind, now, tz), share, amount)
                for who, name, kind, start, share, amount in self._told if start == period_start(kind, now, self.tz)}
        self.tz, self._spent, self._own, self._told = tz, moved, move(self._own), told
        for (who, name, kind), (start, _) in moved.items():
            self._announce(who, name, kind, start, news_from=math.inf)   # crossed already: told already

    def add(self, who: str, name: str | None, usd: float, at: datetime | None = None) -> None:
        """Count `usd` spent by an upstream or a client key at `at` (default now)."""
        if name is None or usd <= 0:
            return
        at = at or self.clock()
        for kind in PERIODS:
            start = period_start(kind, at, self.tz)
            if not self._add_period(who, name, kind, start, usd):
                continue
            _add_to(self._own, (who, name, kind), start, usd)
            if self.alone:
                self._announce(who, name, kind, start)
            if self.on_change is not None:
                notify(self.on_change, SpendAdded(who, name, kind, start.timestamp(),
                                                  period_end(kind, start, self.tz).timestamp(), usd))

    def load(self, amounts: Iterable[tuple[str, str | None, float, datetime]]) -> None:
        """The ledger's spend before this run, `(who, name, usd, at)` each: at start-up, or later,
        once a ledger that could not be read at the start can be.  Each period's spend becomes at
        least the ledger's plus this run's own: a shared total taken in meanwhile may hold the
        ledger's spend already (a shared ledger, or this instance's own earlier runs), so the
        larger stands.  A line the ledger's spend reached by itself was told by the run that
        crossed it; one crossed only with what this run spent meanwhile is news now.  (With a
        shared state, the instances that added it told it.)"""
        loaded: dict[tuple[str, str, str], tuple[datetime, float]] = {}
        for who, name, cost, at in amounts:
            if name is None or cost <= 0:
                continue
            for kind in PERIODS:
                _add_to(loaded, (who, name, kind), period_start(kind, at, self.tz), cost)
        for key, (start, cost) in loaded.items():
            held = self._spent.get(key)
            if held is not None and held[0] > start:
                continue              # the ledger's latest day is over: this run holds a later one
            own = self._own.get(key)
            floor = cost + (own[1] if own is not None and own[0] == start else 0.0)
            if held is None or held[0] < start or held[1] < floor:
                self._spent[key] = (start, floor)
            self._announce(*key, start, news_from=cost if self.alone else math.inf)

    def _add_period(self, who: str, name: str, kind: str, start: datetime, usd: float) -> bool:
        """Add to one period's spend; False for a period older than the one held."""
        held = self._spent.get((who, name, kind))
        if held is not None and held[0] > start:
            return False              # an old row (start-up load out of order): not this period
        _add_to(self._spent, (who, name, kind), start, usd)
        return True

    def spent(self, who: str, name: str, kind: str) -> float:
        held = self._spent.get((who, name, kind))
        if held is None or held[0] != period_start(kind, self.clock(), self.tz):
            return 0.0
        return held[1]

    def over(self, who: str, name: str) -> Overrun | None:
        """The budget of `name` that its spend reached and that holds it back longest (the month's
        over the day's, when both are spent: the client is told when it can really come back),
        or None (also with no budget)."""
        budget = self._budgets.get((who, name))
        if budget is None:
            return None
        now, found = self.clock(), None
        for kind in PERIODS:     # daily first: a monthly overrun ends no sooner than the day's
            limit = getattr(budget, kind)
            spent = self.spent(who, name, kind)
            if limit is not None and reached(spent, limit):
                found = Overrun(kind, limit, spent, period_end(kind, now, self.tz).astimezone(UTC))
        return found

    # ------------------------------------------------------------------ shared with other instances

    def shared(self, who: str, name: str, kind: str) -> SpendTotal | None:
        held = self._spent.get((who, name, kind))
        if held is None:
            return None
        start = held[0]
        return SpendTotal(who, name, kind, start.timestamp(), period_end(kind, start, self.tz).timestamp(), held[1])

    def view(self) -> list[SpendTotal]:
        """This instance's spend in the current periods, as totals."""
        now = self.clock()
        return [total for (who, name, kind), (start, _) in self._spent.items()
                if start == period_start(kind, now, self.tz) and (total := self.shared(who, name, kind)) is not None]

    def apply(self, total: SpendTotal, *, unsent: float = 0.0, added: float | None = None) -> None:
        """The shared word on a period's whole spend (`total.usd`; `unsent`: this instance's spend
        not in it yet): raise this one's to it, never lower.  `added`: this instance's own addition,
        which Redis answered with this total: a line it took the total across is this instance's
        to tell.  Any other line under the total was crossed by another instance, which told it."""
        start = datetime.fromtimestamp(total.start, self.tz)
        if start != period_start(total.period, start, self.tz):
            # another zone's day or month (an instance with another `timezone`, or records from
            # before it changed): taken for a later period, it stopped this one's counting for good
            if not self._told_other_zone:
                self._told_other_zone = True
                log.warning("ccswitch: budgets: spend shared for another time zone's day or month is "
                            "ignored (an instance with another `timezone`, or from before it changed): "
                            "give every instance sharing the state the same `timezone`")
            return
        key = (total.who, total.name, total.period)
        held = self._spent.get(key)
        known = held[1] if held is not None and held[0] == start else 0.0
        if total.usd + unsent > known and not self._add_period(*key, start, total.usd + unsent - known):
            return                    # a period older than the one held
        if self._spent.get(key, (None,))[0] == start:
            news_from = total.usd - added if added is not None else math.inf
            self._announce(*key, start, news_from=news_from, news_to=total.usd)

    def report(self, who: str, name: str) -> list[str]:
        """`$1.20 of $5.00 today (until 00:00)` for each budget `name` has (for ccswitch.status)."""
        budget = self._budgets.get((who, name))
        if budget is None:
            return []
        now, out = self.clock(), []
        for kind in PERIODS:
            limit = getattr(budget, kind)
            if limit is not None:
                end = period_end(kind, now, self.tz)
                period = "today" if kind == "daily" else "this month"
                when = f"{end:%H:%M}" if kind == "daily" else f"{end:%Y-%m-%d}"
                spent, of = usd(self.spent(who, name, kind), limit)
                out.append(f"{spent} of {of} {period} (until {when})")
        return out

    def _announce(self, who: str, name: str, kind: str, start: datetime, *,
                  news_from: float = -math.inf, news_to: float = math.inf) -> None:
        """Tell the 80 % and 100 % lines the spend reached, each once per period and amount: those above
        `news_from` (lines at or under it were known: marked told, not told again), and no higher
        than `news_to` (a line above it is left for whoever crosses it)."""
        budget = self._budgets.get((who, name))
        limit = getattr(budget, kind) if budget else None
        if limit is None or self.events is None:
            return
        spent = min(self._spent[(who, name, kind)][1], news_to)
        # a request begun in a period that ended before it did: no one is refused for that period
        # any more, so its lines are news of nothing (the ledger and the report have its spend)
        end = period_end(kind, start, self.tz)
        ended = end <= self.clock()
        for share in (_WARN_AT, 1.0):
            mark = (who, name, kind, start, share, limit)
            line = limit * share
            if reached(spent, line) and mark not in self._told:
                self._told.add(mark)
                self._told = {m for m in self._told if m[3] >= start or m[2] != kind}   # forget past periods
                if ended or reached(news_from, line) or (share < 1.0 and reached(spent, limit)):
                    continue      # known already, or one step past the whole budget: "reached" says it
                what = "reached" if share >= 1.0 else f"{share:.0%} of"
                told_spent, told_limit = usd(spent, limit)
                episode = f"{who}:{name}:{kind}:{start.isoformat()}:{share}:{limit}"
                self.events.emit(Event(
                    kind="budget", upstream=name if who == UPSTREAM else None, client=name if who == CLIENT else None,
                    reason=f"{who} {name} {what} its {kind} budget ({told_spent} of {told_limit})",
                    until=end.astimezone(UTC),
                    episode=episode, claim=f"budget:{episode}"))
