#!/usr/bin/env python3
"""A day of Claude Code sessions over three subscription keys, under each route strategy,
with session affinity on (`sticky: 1h`) and off: what it does to 429s, prompt caching and cost.

No sockets, no mitmproxy, no sleeping: one simulated clock drives ccswitch's own HealthBoard,
QuotaBoard and SessionBindings, and every request is planned by the real `plan()` over real
`Rules` parsed from YAML.  The dialer's bookkeeping is mirrored (see `Simulation._dial`).

    python scripts/simulate_routing.py                      # 160 sessions over 24 h, seed 7 (about a second)
    python scripts/simulate_routing.py --seed 3 --sessions 300 --hours 48

The model (every number below is an option or a constant here, none is measured):

* Workload, the same for every row (paired comparison; one seed draws it all).  `--sessions`
  sessions arrive over `--hours`, Poisson given their count, at a rate by hour of day: 1 in
  09-18 h, 0.25 in 07-09 and 18-23 h, 0.03 at night (every day is a working day).  A session
  is 1 + a geometric number of requests, 40 on average ("turns": each API call of the agent
  loop), at most 300.
  Its first prompt is a system prompt + tools of 14-24k tokens plus 0.5-3k of user text; each
  later prompt is the previous prompt + its answer + new tokens (tool results, user text;
  lognormal, median 1.2k, at most 30k).  Answers: lognormal, median 300 tokens, at most 8k.
  Between turns: 85 % a tool step (2 s + exponential mean 12 s, generation included), 15 % a
  human pause (lognormal, median 90 s: about one in five is past the 5-minute cache TTL).  A
  prompt past 160k tokens is compacted to its system prefix + 12k of summary.
* Prompt cache: one per session per upstream (cross-session sharing of the system prompt is
  ignored, so a move costs a little more here than in life).  Every prompt carries a cache
  breakpoint at its end (Claude Code does), so uncached input is 0: a turn reads the prefix
  that is cached on the upstream serving it, if that cache was used within 5 minutes (the TTL
  is refreshed on use, as Anthropic's default cache), and writes the rest.  A turn on another
  upstream, or after 5 idle minutes, pays a full write.
* Price (relative list prices): input 1, cache write 1.25, cache read 0.1, output 5 (Sonnet's
  $15 against $3).  "cost" is the sum in millions of these units; "rel cost" is the cost per
  prompt token served, relative to the first row, so that rows which lost different turns (a
  late turn has a long prompt) still compare on what routing did to caching.
* Upstreams: three keys `max-1..3`, route order max-1, max-2, max-3, weight 1 each.  Each has
  a 5-hour window that opens at its first request after the previous one ended, with a budget
  of `--budget` million cost units (the unit above: the plan's real accounting is not public),
  and outside use of the same subscription (claude.ai, another machine): `--outside` of the
  budget per working hour (09-18 h) while a window is open, which ccswitch cannot see until
  the key answers (in life, requests in flight when a key fills add a few more 429s: here a
  request takes no time).  Every answer carries `anthropic-ratelimit-unified-5h-utilization`
  (used / budget after the request), `-5h-reset`, `-5h-status`, `-unified-status` and
  `-unified-reset`; a request arriving when used >= budget gets a 429 with status `rejected`.
* ccswitch: `failover` defaults (drain_at 0.95, max_attempts 4, 429: switch).  The answer's
  headers go to QuotaBoard.record; a 2xx records success and binds the session with the
  route's sticky (Dialer._served); a 429 cools the key until `rejection_reset` (else a window
  known full), else `cooldown` (Dialer._rate_limited).  A request that `plan()` finds fully
  rate limited gets ccswitch's own 429, retry-after = ceil(limited_for).
* Client: after a 429 (ccswitch's own, or every attempt answered 429) it waits as told (the
  upstream's reset for a passed-on 429) plus 0-2 minutes, then sends the same turn again; if
  told to wait more than `--patience` (1 h), the user gives up and the rest of the session
  is lost ("turns lost").

Columns: requests (client requests, retries included), client 429s, upstream 429s (attempts
answered 429), cache hit rate = cache_read / (input + cache_write + cache_read), cache writes
(M tokens), moved sessions (served by more than one key; with sticky off ccswitch's ledger would
not call them `moved`: without a binding there is nothing to move from), turns lost, share of
turns per key, cost, rel cost.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import math
import random
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ccswitch.config.load import parse_rules  # noqa: E402
from ccswitch.config.models import Rules  # noqa: E402
from ccswitch.routing.affinity import SessionBindings  # noqa: E402
from ccswitch.routing.health import HealthBoard  # noqa: E402
from ccswitch.routing.plan import plan  # noqa: E402
from ccswitch.routing.quota import QuotaBoard  # noqa: E402
from ccswitch.routing.rate_limits import rejection_reset  # noqa: E402
from ccswitch.vocab import Action  # noqa: E402

ROUTE = "claude"
MODEL = "claude-sonnet-4-5"
KEYS = ("max-1", "max-2", "max-3")
STRATEGIES = ("priority", "weighted", "quota")
STICKY = ("1h", "off")
START = datetime(2026, 12, 7, tzinfo=UTC).timestamp()   # a Monday, 00:00 UTC

WINDOW = 5 * 3600.0
CACHE_TTL = 300.0
PRICE = {"input": 1.0, "cache_write": 1.25, "cache_read": 0.1, "output": 5.0}
WORK_HOURS = (9, 18)
CONTEXT_LIMIT = 160_000
SUMMARY = 12_000


class SimClock:
    """Seconds since the epoch, moved by the simulation only."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- workload

@dataclass
class Turn:
    new: int        # tokens added to the prompt before this turn (previous answer excluded)
    output: int
    gap: float      # seconds until the next turn


@dataclass
class SessionPlan:
    key: str
    start: float
    system: int
    turns: list[Turn]


def hour_rate(hour: int) -> float:
    if WORK_HOURS[0] <= hour < WORK_HOURS[1]:
        return 1.0
    return 0.25 if 7 <= hour < 9 or 18 <= hour < 23 else 0.03


def capped_lognormal(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return max(1, min(cap, int(rng.lognormvariate(math.log(median), sigma))))


def workload(rng: random.Random, sessions: int, hours: float) -> list[SessionPlan]:
    spans = [min(1.0, hours - h) for h in range(math.ceil(hours))]     # the last hour may be partial
    rates = [hour_rate(h % 24) * span for h, span in enumerate(spans)]
    plans = []
    for n in range(sessions):
        hour = rng.choices(range(len(spans)), weights=rates)[0]
        start = START + (hour + rng.random() * spans[hour]) * 3600
        count = min(300, 1 + int(math.log(1 - rng.random()) / math.log(1 - 1 / 40)))   # 1 + geometric: 40 on average
        turns = []
        for i in range(count):
            new = rng.randint(500, 3000) if i == 0 else capped_lognormal(rng, 1200, 1.0, 30_000)
            gap = 2 + rng.expovariate(1 / 12) if rng.random() < 0.85 else rng.lognormvariate(math.log(90), 1.2)
            turns.append(Turn(new, capped_lognormal(rng, 300, 1.0, 8000), gap))
        plans.append(SessionPlan(f"sim-session-{n}", start, rng.randint(14_000, 24_000), turns))
    return sorted(plans, key=lambda p: p.start)


# --------------------------------------------------------------------------- upstreams

@dataclass
class Usage:
    input: int = 0
    cache_write: int = 0
    cache_read: int = 0
    output: int = 0

    def cost(self) -> float:
        return sum(PRICE[name] * getattr(self, name) for name in PRICE)


def working_seconds(since: float, until: float) -> float:
    """Seconds of [since, until) inside working hours (by hour of day, UTC)."""
    total, day = 0.0, math.floor((since - START) / 86400)
    while START + day * 86400 < until:
        begin = START + day * 86400 + WORK_HOURS[0] * 3600
        end = START + day * 86400 + WORK_HOURS[1] * 3600
        total += max(0.0, min(until, end) - max(since, begin))
        day += 1
    return total


class SimUpstream:
    """A subscription key: a 5-hour window from its first request, a budget in cost units."""

    def __init__(self, name: str, budget: float, outside_per_hour: float) -> None:
        self.name = name
        self.budget = budget
        self.outside_rate = outside_per_hour * budget / 3600
        self.window_end: float | None = None
        self.used = 0.0
        self.accrued_to = 0.0
        self.rejected_in: list[float] = []     # the window (by its end) of each 429 answered

    def _advance(self, now: float) -> None:
        if self.window_end is not None:
            self.used += self.outside_rate * working_seconds(self.accrued_to, min(now, self.window_end))
            self.accrued_to = now
            if now >= self.window_end:
                self.window_end, self.used = None, 0.0
        if self.window_end is None:
            self.window_end, self.accrued_to = float(math.ceil(now + WINDOW)), now

    def answer(self, now: float, cost: float) -> tuple[int, list[tuple[str, str]]]:
        self._advance(now)
        status = 429 if self.used >= self.budget else 200
        if status == 200:
            self.used += cost
        else:
            self.rejected_in.append(self.window_end)
        used = self.used / self.budget
        word = "rejected" if status == 429 else "allowed_warning" if used >= 0.8 else "allowed"
        reset = str(int(self.window_end))
        return status, [("anthropic-ratelimit-unified-status", word),
                        ("anthropic-ratelimit-unified-reset", reset),
                        ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
                        ("anthropic-ratelimit-unified-5h-status", word),
                        ("anthropic-ratelimit-unified-5h-utilization", f"{used:.4f}"),
                        ("anthropic-ratelimit-unified-5h-reset", reset)]


# --------------------------------------------------------------------------- one session

@dataclass
class Session:
    plan: SessionPlan
    index: int = 0                          # the next turn
    prompt: int = 0                         # the last served prompt's length
    last_output: int = 0
    caches: dict[str, tuple[int, float]] = field(default_factory=dict)   # upstream -> (prefix, expires)
    served_by: list[str] = field(default_factory=list)

    def next_prompt(self) -> tuple[int, bool]:
        """The next turn's prompt length, and whether it was compacted (shares only the system prefix)."""
        turn = self.plan.turns[self.index]
        if self.index == 0:
            return self.plan.system + turn.new, False
        grown = self.prompt + self.last_output + turn.new
        if grown > CONTEXT_LIMIT:
            return self.plan.system + SUMMARY + turn.new, True
        return grown, False

    def usage_on(self, upstream: str, now: float) -> Usage:
        prompt, compacted = self.next_prompt()
        cached, expires = self.caches.get(upstream, (0, 0.0))
        read = min(cached, self.plan.system if compacted else prompt) if expires >= now else 0
        return Usage(cache_write=prompt - read, cache_read=read, output=self.plan.turns[self.index].output)

    def served(self, upstream: str, now: float) -> None:
        prompt, _ = self.next_prompt()
        self.caches[upstream] = (prompt, now + CACHE_TTL)
        self.prompt, self.last_output = prompt, self.plan.turns[self.index].output
        self.served_by.append(upstream)
        self.index += 1


# --------------------------------------------------------------------------- results

@dataclass
class Tally:
    strategy: str
    sticky: str
    sessions: int = 0
    turns_planned: int = 0
    requests: int = 0
    served: int = 0
    own_429: int = 0          # ccswitch answered 429 itself (plan().limited_for)
    passed_429: int = 0       # every attempt was answered 429: the client got the last one
    other_errors: int = 0     # a plan with no candidate and no known reset (the model never makes one);
    #                           the client waits `cooldown` and tries again, like after a 429
    attempts: int = 0
    upstream_429: int = 0
    retries: int = 0
    abandoned: int = 0
    turns_lost: int = 0
    moved_sessions: int = 0
    usage: Usage = field(default_factory=Usage)
    by_key: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))

    @property
    def client_429(self) -> int:
        return self.own_429 + self.passed_429

    @property
    def prompt_tokens(self) -> int:
        return self.usage.input + self.usage.cache_write + self.usage.cache_read

    @property
    def hit_rate(self) -> float:
        return self.usage.cache_read / self.prompt_tokens if self.prompt_tokens else 0.0

    def cost_per_prompt_token(self) -> float:
        return self.usage.cost() / self.prompt_tokens if self.prompt_tokens else 0.0


# --------------------------------------------------------------------------- the simulation

def rules_text(strategy: str, sticky: str) -> str:
    ups = "\n".join(f"  - {{name: {name}, protocol: anthropic, base_url: 'https://api.anthropic.com', "
                    f"api_key: sk-ant-sim-{name}, weight: 1}}" for name in KEYS)
    return (f"timezone: UTC\nupstreams:\n{ups}\nroutes:\n"
            f"  {ROUTE}: {{upstreams: [{', '.join(KEYS)}], strategy: {strategy}, sticky: '{sticky}'}}\n")


class Simulation:
    def __init__(self, rules: Rules, plans: list[SessionPlan], tally: Tally, *, seed: int,
                 budget: float, outside: float, patience: float) -> None:
        self.rules = rules
        self.plans = plans
        self.tally = tally
        self.clock = SimClock(START)
        self.health = HealthBoard(self.clock)
        self.quota = QuotaBoard(self.clock)
        self.sessions = SessionBindings(self.clock)
        self.upstreams = {name: SimUpstream(name, budget, outside) for name in KEYS}
        self.client_rng = random.Random(seed * 7919 + 1)   # waits after a 429; not the workload's
        self.patience = patience
        self.finished: list[Session] = []

    def run(self) -> Tally:
        queue = [(p.start, i, Session(p)) for i, p in enumerate(self.plans)]
        heapq.heapify(queue)
        tiebreak = len(queue)
        self.tally.sessions = len(self.plans)
        self.tally.turns_planned = sum(len(p.turns) for p in self.plans)
        while queue:
            when, _, session = heapq.heappop(queue)
            self.clock.now = when
            wait = self._turn(session)
            if wait is not None:
                tiebreak += 1
                heapq.heappush(queue, (when + wait, tiebreak, session))
        self.tally.moved_sessions = sum(len(set(s.served_by)) > 1 for s in self.finished)
        return self.tally

    def _turn(self, session: Session) -> float | None:
        """Send the session's next turn; seconds until it sends again, None when it is over."""
        t, now = self.tally, self.clock.now
        t.requests += 1
        chosen = plan(self.rules, ROUTE, MODEL, self.health, datetime.fromtimestamp(now, self.rules.tz),
                      quota=self.quota, sessions=self.sessions, session=session.plan.key)
        if chosen.limited_for is not None:
            t.own_429 += 1
            return self._after_refusal(session, max(1, math.ceil(chosen.limited_for)))   # as the router's retry-after
        if not chosen.candidates:
            t.other_errors += 1
            return self._after_refusal(session, self.rules.failover.cooldown)
        served, reset = self._dial(session, [u.name for u in chosen.candidates])
        if served is None:
            t.passed_429 += 1
            return self._after_refusal(session, (reset - now) if reset is not None else self.rules.failover.cooldown)
        usage = session.usage_on(served, now)
        for name in ("input", "cache_write", "cache_read", "output"):
            setattr(t.usage, name, getattr(t.usage, name) + getattr(usage, name))
        t.served += 1
        t.by_key[served] += 1
        gap = session.plan.turns[session.index].gap
        session.served(served, now)
        if session.index == len(session.plan.turns):
            self.finished.append(session)
            return None
        return gap

    def _after_refusal(self, session: Session, wait: float) -> float | None:
        if wait > self.patience:
            self.tally.abandoned += 1
            self.tally.turns_lost += len(session.plan.turns) - session.index
            self.finished.append(session)
            return None
        self.tally.retries += 1
        return wait + self.client_rng.uniform(0, 120)

    def _dial(self, session: Session, candidates: list[str]) -> tuple[str | None, float | None]:
        """Dialer.run without the network: candidates in plan order, once each, at most
        max_attempts; each answer's headers to the QuotaBoard.  The upstream that served, or
        None and the reset the last 429 reported."""
        failover, now = self.rules.failover, self.clock.now
        assert failover.action_for(429) == Action.SWITCH, "the model follows the default: 429 switches"
        reset = None
        for name in candidates[:failover.max_attempts]:
            self.tally.attempts += 1
            probing = self.health.needs_probe(name)
            if probing:
                self.health.begin_probe(name)
            status, headers = self.upstreams[name].answer(now, session.usage_on(name, now).cost())
            self.quota.record(name, headers)
            if probing:
                self.health.end_probe(name)
            if status == 200:   # Dialer._served
                self.health.record_success(name)
                self.sessions.bind(ROUTE, session.plan.key, name, self.rules.routes.spec(ROUTE).sticky)
                return name, None
            self.tally.upstream_429 += 1
            reset = self._rate_limited(name, headers)
        return None, reset

    def _rate_limited(self, name: str, headers: list[tuple[str, str]]) -> float | None:
        """Dialer._rate_limited: cool until the rejecting window's reset (from this answer, else a
        window known full), else for `cooldown`.  Returns the reset the client is told."""
        now = self.quota.clock()
        reset = rejection_reset(headers, now) if headers else None
        if reset is None:
            full = self.quota.full(name, 1.0)
            reset = full.resets_at if full is not None else None
        if reset is not None and reset > now:
            self.health.record_rate_limit(name, "HTTP 429", seconds=reset - now, reset_known=True)
            return reset
        self.health.record_rate_limit(name, "HTTP 429", seconds=self.rules.failover.cooldown, reset_known=False)
        return None


def simulate(strategy: str, sticky: str, *, seed: int = 7, sessions: int = 160, hours: float = 24.0,
             budget: float = 16.0, outside: float = 0.1, patience: float = 3600.0) -> Tally:
    """One row: the workload drawn from `seed`, served under one strategy and sticky setting."""
    return simulation(strategy, sticky, seed=seed, sessions=sessions, hours=hours, budget=budget,
                      outside=outside, patience=patience).run()


def simulation(strategy: str, sticky: str, *, seed: int, sessions: int, hours: float, budget: float,
               outside: float, patience: float) -> Simulation:
    plans = workload(random.Random(seed), sessions, hours)
    rules = parse_rules(rules_text(strategy, sticky), "<simulation>")
    return Simulation(rules, plans, Tally(strategy, sticky), seed=seed, budget=budget * 1e6,
                      outside=outside, patience=patience)


def table(rows: list[Tally]) -> str:
    base = rows[0].cost_per_prompt_token() or 1.0
    header = ("strategy", "sticky", "requests", "client 429", "upstream 429", "hit rate", "writes Mtok",
              "moved sess", "turns lost", "turns % max-1/2/3", "cost M", "rel cost")
    lines = [header]
    for t in rows:
        shares = "/".join(f"{100 * t.by_key[k] / max(1, t.served):.0f}" for k in KEYS)
        lines.append((t.strategy, t.sticky, str(t.requests), str(t.client_429), str(t.upstream_429),
                      f"{100 * t.hit_rate:.1f}%", f"{t.usage.cache_write / 1e6:.1f}", str(t.moved_sessions),
                      str(t.turns_lost), shares, f"{t.usage.cost() / 1e6:.1f}", f"{t.cost_per_prompt_token() / base:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in
                               enumerate(zip(line, widths, strict=True))).rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sessions", type=int, default=160)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--budget", type=float, default=16.0, help="million cost units per key per 5-hour window")
    parser.add_argument("--outside", type=float, default=0.1, help="outside use, share of the budget per working hour")
    parser.add_argument("--patience", type=float, default=3600.0, help="longest wait after a 429 (s) before giving up")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.hours <= 0 or args.budget <= 0 or args.outside < 0:
        parser.error("--sessions, --hours and --budget must be positive, --outside not negative")
    quiet = logging.getLogger("ccswitch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)   # a simulated day logs every cooldown
    try:
        rows = [simulate(strategy, sticky, seed=args.seed, sessions=args.sessions, hours=args.hours,
                         budget=args.budget, outside=args.outside, patience=args.patience)
                for strategy in STRATEGIES for sticky in STICKY]
    finally:
        quiet.setLevel(level)       # called in-process (tests), the caller's logging is as it was
    print(f"seed {args.seed}, {args.sessions} sessions over {args.hours:g} h, {rows[0].turns_planned} turns; "
          f"budget {args.budget:g}M units per key per 5 h, outside use {100 * args.outside:g}%/working hour")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
