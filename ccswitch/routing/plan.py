"""Which upstreams may serve a request, in which order, and why an upstream is off now.

Availability first (switched on, in schedule, admitting the model, not cooling, not full),
then the route's strategy orders what is left, then affinity: a session's bound upstream
goes first while it is available.  `ccswitch.use` beats both.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ccswitch.clock import wall_text
from ccswitch.config.models import RouteSpec, Rules, Upstream
from ccswitch.config.schedule import schedule_block, schedule_opens
from ccswitch.money import usd
from ccswitch.routing.affinity import SessionBindings, session_fraction
from ccswitch.routing.budget import UPSTREAM, SpendBoard
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.quota import QuotaBoard
from ccswitch.vocab import Strategy

#: chat clients ask for thinking with a model-name suffix (the original gateway's convention)
THINKING_SUFFIX = "-thinking"
_NOT_SERVING = "not serving model"


@dataclass
class Plan:
    candidates: list[Upstream] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    why_first: str = ""                 # why the first candidate leads (for the flow comment)
    bound_to: str | None = None         # the upstream the request's session was bound to
    binding: str | None = None          # the key it is bound under (`session_binding`)
    #: seconds until the soonest reset when every upstream is full or cooling after a 429 that
    #: named its reset: ccswitch then answers 429 itself instead of calling any of them
    limited_for: float | None = None

    def why_none(self, route: str) -> str:
        if not self.blocked:
            return f"no upstream is configured for the {route} route"
        reasons = "; ".join(f"{name} is {why}" for name, why in self.blocked)
        if any(why.startswith(_NOT_SERVING) for _, why in self.blocked):   # no wait mends that one
            reasons += " (an upstream's only_models in ccswitch's rules name the models it serves)"
        return f"no upstream available for the {route} route: {reasons}"


def plan(rules: Rules, route: str, model: str | None, health: HealthBoard, now: datetime, *,
         quota: QuotaBoard | None = None, sessions: SessionBindings | None = None,
         session: str | None = None, spend: SpendBoard | None = None,
         unable: Mapping[str, object] | None = None, only: str | None = None) -> Plan:
    """The candidates for one request, in the order they are tried.

    If every otherwise-available upstream is cooling, the first to recover is tried anyway, and
    the next (`_second_chance`; a route never goes dark on its own) — unless each is full or cooling after a 429
    with a known reset: then `limited_for` says how long until the first one is back.  An
    upstream being probed after its cooldown serves one request at a time.  `unable`: upstreams
    that cannot take this request as it is, by name, with why (a conversion's refusal); they are
    left out as if switched off, so the others, and their second chance, serve it.  `only`: the
    one upstream that can serve it (the issuer of the stored response it continues), when it
    is one of the route's.
    """
    spec = rules.routes.spec(route)
    result = Plan()
    cooling: list[tuple[float, Upstream, str]] = []    # (when it is back, it, why it is out)
    limited: list[float] = []     # seconds until each rate-limited upstream is back
    unknown_wait = False          # something is cooling without a known reset
    for name in spec.upstreams:
        upstream = rules.upstream(name)
        why = off_reason(upstream, health, now, model)
        if why is None and unable and name in unable:
            why = f"unable to take this request ({unable[name]})"
        if why is None and only is not None and name != only and only in spec.upstreams:
            why = f"not the issuer of the response this request continues ({only})"
        if why is not None:
            result.blocked.append((name, why))
            continue
        until = health.cooling_until(name)
        full = quota.full(name, rules.failover.drain_at) if quota is not None else None
        overrun = spend.over(UPSTREAM, name) if spend is not None else None
        if overrun is not None:     # like a full upstream: skipped until its next period
            result.blocked.append((name, f"over its {overrun.kind} budget ({usd(overrun.limit)[0]}) until "
                                         f"{overrun.until.astimezone(rules.tz):%Y-%m-%d %H:%M %Z}"))
            limited.append((overrun.until - spend.clock()).total_seconds())
        elif until is not None:
            # added in UTC: a DST change between now and then moves the wall clock, not the end
            # (rounded: the board's monotonic clock read back lands a few ms before the second it was set for)
            ends = (now.astimezone(UTC) + timedelta(seconds=max(0.0, until - health.clock()) + 0.5)
                    ).replace(microsecond=0).astimezone(now.tzinfo)
            # to the second, as the live page says it (a minute's rounding read as over already)
            full_end = full_past_cooldown(health, quota, name, rules.failover.drain_at)
            result.blocked.append((name, _full_text(full, rules, now, full_end) if full_end is not None
                                   else f"cooling down until {wall_text(ends, now, seconds=True)}"))
            back = (_back_after(until - health.clock(), quota, name, rules.failover.drain_at)
                    if health.get(name).rate_limited else None)
            if back is not None:      # its 429 named when: a wait known, not a failure
                limited.append(back)
                cooling.append((until, upstream, LIMITED))
            else:
                unknown_wait = True
                cooling.append((until, upstream, FAILING))
        elif full is not None:
            result.blocked.append((name, _full_text(full, rules, now, quota.full_until(name, rules.failover.drain_at))))
            cooling.append((float("inf"), upstream, FULL))   # tried last, if nothing else is left
            if full.resets_at is not None:
                limited.append(full.resets_at - quota.clock())
            else:
                unknown_wait = True
        elif health.busy_probing(name):
            cooling.append((0.0, upstream, FAILING))   # tried anyway if nothing else is left
            result.blocked.append((name, "being probed after its cooldown"))
            unknown_wait = True
        else:
            result.candidates.append(upstream)
    if session is not None and sessions is not None and spec.sticky > 0:
        # also when every upstream is out: the row says whether the session stayed or moved
        result.binding, result.bound_to = session_binding(rules, route, session, model, sessions)
    if not result.candidates:
        if limited and not unknown_wait:
            # only the issuer can serve a request pinned to it: another's hours are no wait for it
            pinned = only is not None and only in spec.upstreams
            opens = back_in(rules, [b for b in result.blocked if not pinned or b[0] == only], model, health, now)
            if opens is not None and opens < min(limited):
                return result      # nothing until an upstream's hours begin: the route's 503 says when
            result.limited_for = max(0.0, min(limited))
            return result
        if cooling:
            result.candidates.extend(_second_chance(cooling))
            result.why_first = "recovers first"
        return result
    result.why_first = _order(result.candidates, spec, quota, session)
    if _to_front(result.candidates, result.bound_to):
        result.why_first = "kept session"
    preferred = health.preferred_name()
    if preferred and _to_front(result.candidates, preferred):
        result.why_first = "ccswitch.use"
    return result


#: why an upstream that is left out is out, for the second chance below
FAILING, LIMITED, FULL = "failing", "limited", "full"


def _second_chance(out: list[tuple[float, Upstream, str]]) -> list[Upstream]:
    """What a route tries when every upstream is out: the one that recovers first, and after a
    blip that put them all in cooldown the next one too, so the first failing again does not fail
    a request another would serve.  Two, not all: during a real outage every request would try
    each upstream.  One cooling after a 429 with a known reset is tried only if nothing else is
    left (the route answers 429 itself when all are), a full one after those."""
    out = sorted(out, key=lambda entry: entry[0])
    for kind in (FAILING, LIMITED, FULL):
        found = [upstream for _, upstream, why in out if why == kind]
        if found:
            return found[:2] if kind == FAILING else found[:1]
    return []


def _back_after(cooling_left: float, quota: QuotaBoard | None, name: str, drain_at: float) -> float:
    """Seconds until a rate-limited upstream serves again: its cooldown (the wait its 429 named)
    can end before a window it reported full resets (a short retry-after), and it is back only
    when both are over (a window that named no reset: when it is believed full till)."""
    full_until = quota.full_until(name, drain_at) if quota is not None else None
    if full_until is None:
        return cooling_left
    return max(cooling_left, full_until - quota.clock())


def _order(candidates: list[Upstream], spec: RouteSpec, quota: QuotaBoard | None, session: str | None) -> str:
    """Order the candidates in place by the route's strategy; why the first one leads."""
    if spec.strategy == Strategy.WEIGHTED and len(candidates) > 1:
        # a session always draws the same number: its first pick never flaps
        draw = session_fraction(session) if session is not None else random.random()
        total = sum(u.weight for u in candidates)
        point, pick = draw * total, candidates[-1]
        for upstream in candidates:
            point -= upstream.weight
            if point < 0:
                pick = upstream
                break
        _to_front(candidates, pick.name)
        return f"weighted pick ({pick.weight:g} of {total:g})"
    if spec.strategy == Strategy.QUOTA and quota is not None:
        known = {u.name: quota.utilization(u.name) for u in candidates}
        candidates.sort(key=lambda u: known[u.name][0] if known[u.name] else 0.0)   # stable: ties keep route order
        first = known[candidates[0].name]
        return f"least utilized {first[0]:.2f}" if first else "least utilized (unknown)"
    return "route order"


def _to_front(candidates: list[Upstream], name: str | None) -> bool:
    for i, upstream in enumerate(candidates):
        if upstream.name == name:
            candidates.insert(0, candidates.pop(i))
            return True
    return False


def full_past_cooldown(health: HealthBoard, quota: QuotaBoard | None, name: str, drain_at: float) -> float | None:
    """When a cooling upstream stops being full, if that is after its cooldown ends (a window
    without a known reset: when it is believed full till); None otherwise.  It is back only when
    both are over, so that later end is the one to tell."""
    cooling = health.cooling_until(name)
    full = quota.full_until(name, drain_at) if quota is not None else None
    if cooling is None or full is None or full - quota.clock() <= cooling - health.clock():
        return None
    return full


def _full_text(window, rules: Rules, now: datetime, until: float | None = None) -> str:
    """`until`: when it is believed full till, where its window named no reset."""
    end = window.resets_at if window.resets_at is not None else until
    if end is None:
        return f"full ({window.name} window)"
    reset = datetime.fromtimestamp(end, rules.tz)
    return f"full until {wall_text(reset, now.astimezone(rules.tz), seconds=True)} ({window.name} window)"


def off_reason(upstream: Upstream, health: HealthBoard, now: datetime, model: str | None = None) -> str | None:
    """Why an upstream takes no request now, health aside (switched off, outside its days or
    hours, not serving the model), or None."""
    if not health.enabled(upstream.name, upstream.enabled):
        return "disabled" if not upstream.enabled else "disabled by ccswitch.disable"
    block = schedule_block(upstream, now)
    if block:
        return block
    if model is not None and not serves_model(upstream, model):
        return f"{_NOT_SERVING} {model!r}"
    return None


def session_binding(rules: Rules, route: str, session: str, model: str | None,
                    sessions: SessionBindings) -> tuple[str, str | None]:
    """(the key a request's session is bound under, the upstream bound there): the session's
    own, unless the upstream it is bound to does not serve the request's model (another model of
    the session on upstreams of its own, e.g. Claude Code's small one beside its main one): then
    the session's binding for that model, so that neither model's requests move the other's
    prompt cache."""
    bound = sessions.bound(route, session)
    if bound is None or model is None:
        return session, bound
    upstream = next((u for u in rules.upstreams if u.name == bound), None)
    if upstream is None or serves_model(upstream, model):
        return session, bound
    key = f"{session} [{model}]"
    return key, sessions.bound(route, key)


def back_in(rules: Rules, blocked: list[tuple[str, str]], model: str | None, health: HealthBoard,
            now: datetime) -> float | None:
    """Seconds until the first of the `blocked` upstreams that is off only by its days or hours
    takes requests again; None if none will by itself (switched off, not serving the model)."""
    opening = [schedule_opens(upstream, now) for upstream in (rules.upstream(name) for name, _ in blocked)
               if schedule_block(upstream, now) is not None and health.enabled(upstream.name, upstream.enabled)
               and (model is None or serves_model(upstream, model))]
    soonest = min((at.astimezone(UTC) for at in opening if at is not None), default=None)
    return None if soonest is None else max(0.0, (soonest - now.astimezone(UTC)).total_seconds())


def serves_model(upstream: Upstream, model: str) -> bool:
    """Its `only_models` admit the model (a `-thinking` name by the name without the suffix too)."""
    return upstream.admits_model(model) or (model.endswith(THINKING_SUFFIX)
                                            and upstream.admits_model(model[:-len(THINKING_SUFFIX)]))
