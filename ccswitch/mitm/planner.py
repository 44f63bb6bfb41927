"""What a request that passed admission gets: its job (the upstreams to try, in order, and the
bodies converted for each), or ccswitch's own answer when no upstream can take it now.  Shared
by the request hook and by Codex's WebSocket turns, which are planned like HTTPS requests."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from ccswitch.clock import utc_now
from ccswitch.dial.job import Job
from ccswitch.mitm.gateway import Gateway
from ccswitch.routing.budget import CLIENT
from ccswitch.routing.events import Event
from ccswitch.routing.plan import plan
from ccswitch.translate import convert_for_candidates
from ccswitch.wire import protocols
from ccswitch.wire.exchange import ClientRequest, RenderError

#: ccswitch's own answer: status, message, extra headers
OwnAnswer = tuple[int, str, dict | None]


class Planner:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def client_over_budget(self, client_name: str | None) -> OwnAnswer | None:
        """ccswitch's 429 for a client key whose budget is spent, or None."""
        spend = self.gateway.spend
        overrun = spend.over(CLIENT, client_name) if client_name is not None else None
        if overrun is None:
            return None
        wait = (overrun.until - spend.clock()).total_seconds()
        reset = overrun.until.astimezone(self.gateway.rules.tz)
        return (429, f"{overrun.describe(f'client key {client_name}')}; it resets at {reset:%Y-%m-%d %H:%M}",
                {"retry-after": str(max(1, math.ceil(wait)))})

    def plan_job(self, req: ClientRequest, flow_id: str, client_name: str | None, session: str | None, *,
                 shown: bool) -> Job | OwnAnswer:
        """The job for a request, or ccswitch's own answer when no upstream can take it now.
        `shown`: someone looks at finished flows (they show what went upstream)."""
        gateway, rules = self.gateway, self.gateway.rules
        chosen = plan(rules, req.route, req.model, gateway.health, datetime.now(rules.tz),
                      quota=gateway.quota, sessions=gateway.sessions, session=session, spend=gateway.spend)
        if chosen.limited_for is not None:   # every upstream is rate limited until a known reset
            self._exhausted(req.route, chosen.why_none(req.route), chosen.limited_for)
            return (429, chosen.why_none(req.route),
                    protocols.rate_limit_headers(req.client_protocol, chosen.limited_for, gateway.quota.clock()))
        if not chosen.candidates:
            self._exhausted(req.route, chosen.why_none(req.route), None)
            return 503, chosen.why_none(req.route), {"retry-after": "30"}
        converted, refused = convert_for_candidates(req, chosen.candidates, rules)
        candidates, skipped, why_first = chosen.candidates, chosen.blocked, chosen.why_first
        if refused:
            candidates = [upstream for upstream in candidates if upstream.name not in refused]
            skipped = skipped + [(name, f"unable to take this request ({exc})") for name, exc in refused.items()]
            if not candidates:
                return self._refused_everywhere(req, chosen.blocked, refused)
            if candidates[0] is not chosen.candidates[0]:   # the reason was the refused one's
                why_first = ""
        return Job(request=req, rules=rules, candidates=candidates, flow_id=flow_id, converted=converted,
                   client=client_name, session=session, bound_to=chosen.bound_to, why_first=why_first,
                   skipped=skipped, shown=shown)

    def _refused_everywhere(self, req: ClientRequest, blocked: list[tuple[str, str]],
                            refused: dict[str, RenderError]) -> OwnAnswer:
        """No upstream available now can take the request as it is: the client's error (the
        first refusal's), unless one that is out for now could take it: then it is a wait."""
        rules = self.gateway.rules
        waiting = [(name, why) for name, why in blocked
                   if not convert_for_candidates(req, [rules.upstream(name)], rules)[1]]
        if not waiting:
            first = next(iter(refused.values()))
            return first.status, str(first), None
        reasons = "; ".join([f"{name} is {why}" for name, why in waiting]
                            + [f"{name} cannot take it ({exc})" for name, exc in refused.items()])
        return 503, f"no upstream available for this request on the {req.route} route: {reasons}", \
            {"retry-after": "30"}

    def _exhausted(self, route: str, reason: str, wait: float | None) -> None:
        """ccswitch answers the route itself: one event per soonest reset (429), or per hour
        while nothing is available with no known end (503), however many requests are refused."""
        if wait is not None:   # to the second: every refusal until that reset names the same one
            until = datetime.fromtimestamp(round(self.gateway.quota.clock() + wait), UTC)
            episode = f"429 until {until:%Y-%m-%dT%H:%M:%S}"
        else:
            until, episode = None, f"503 {utc_now():%Y-%m-%dT%H}"
        self.gateway.events.emit(Event("exhausted", None, reason, route=route, until=until, episode=episode))
