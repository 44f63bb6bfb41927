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
from ccswitch.routing.events import Event, news_slot
from ccswitch.routing.plan import back_in, plan, serves_model
from ccswitch.translate import convert_for_candidates
from ccswitch.vocab import Endpoint
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
        return (429, f"{overrun.describe(f'client key {client_name}')}; it resets at {reset:%Y-%m-%d %H:%M %Z}",
                {"retry-after": str(max(1, math.ceil(wait)))})

    def plan_job(self, req: ClientRequest, flow_id: str, client_name: str | None, session: str | None, *,
                 shown: bool) -> Job | OwnAnswer:
        """The job for a request, or ccswitch's own answer when no upstream can take it now.
        `shown`: someone looks at finished flows (they show what went upstream)."""
        gateway, rules = self.gateway, self.gateway.rules
        # a client names its session as it likes: one holding a key of the rules is bound (and, with
        # Redis, told to every instance) under the name its ledger row gets
        session = rules.scrub(session) if session else session
        now = datetime.now(rules.tz)
        refused: dict[str, RenderError] = {}
        issuer = self._issuer(req)
        for _ in range(len(rules.upstreams) + 1):   # each round leaves out at least one more upstream
            chosen = plan(rules, req.route, req.model, gateway.health, now, quota=gateway.quota,
                          sessions=gateway.sessions, session=session, spend=gateway.spend, unable=refused,
                          only=issuer)
            # the body converted for each candidate of another protocol, before any upstream call
            converted, newly = convert_for_candidates(req, chosen.candidates, rules)
            if not newly:
                break
            # planned again without them: the others, and their second chance, serve it
            refused.update(newly)
        else:   # a bug, not a loop that holds the proxy for good
            raise RuntimeError(f"planning kept upstreams that cannot take the request: {sorted(newly)}")
        if refused and not chosen.candidates and not self._could_take(req, chosen.blocked, refused):
            # the client's to change: no wait helps, nothing to alert
            return next(iter(refused.values())).status, _why_none_could(refused), None
        if chosen.limited_for is not None:   # every upstream is rate limited until a known reset
            if issuer is None:       # one request's issuer out is no news of the route
                self._exhausted(req.route, chosen.why_none(req.route), chosen.limited_for)
            return (429, chosen.why_none(req.route),
                    protocols.rate_limit_headers(req.client_protocol, chosen.limited_for, gateway.quota.clock()))
        if not chosen.candidates:
            if issuer is None:
                self._exhausted(req.route, chosen.why_none(req.route), None)
            later = self._could_take(req, [b for b in chosen.blocked if issuer is None or b[0] == issuer], refused)
            return 503, chosen.why_none(req.route), _come_back(back_in(rules, later, req.model, gateway.health, now))
        return Job(request=req, rules=rules, candidates=chosen.candidates, flow_id=flow_id, converted=converted,
                   client=client_name, session=session, bound_to=chosen.bound_to, binding=chosen.binding,
                   why_first=chosen.why_first,
                   skipped=chosen.blocked, shown=shown)

    def _issuer(self, req: ClientRequest) -> str | None:
        """The upstream of the request's route that issued the stored response an HTTP Responses
        request continues (a bridged socket's turns carry their conversation themselves), when
        this instance (or one sharing its state) saw it."""
        if req.endpoint != Endpoint.RESPONSES or not isinstance(req.json, dict):
            return None
        previous = req.json.get("previous_response_id")
        issuer = self.gateway.issued.issuer(previous) if isinstance(previous, str) else None
        # one a reload took out of the route: the request is routed as any
        return issuer if issuer in self.gateway.rules.routes.for_route(req.route) else None

    def _could_take(self, req: ClientRequest, blocked: list[tuple[str, str]],
                    refused: dict[str, RenderError]) -> list[tuple[str, str]]:
        """The upstreams of the route out for now (cooling, full, switched off, outside their
        hours) that serve the model and could take the request as it is, with why they are out."""
        rules = self.gateway.rules
        others = [(name, why) for name, why in blocked if name not in refused
                  and (req.model is None or serves_model(rules.upstream(name), req.model))]
        _, refusals = convert_for_candidates(req, [rules.upstream(name) for name, _ in others], rules)
        return [(name, why) for name, why in others if name not in refusals]

    def _exhausted(self, route: str, reason: str, wait: float | None) -> None:
        """ccswitch answers the route itself: one event per soonest reset (429), or per hour
        while nothing is available with no known end (503), however many requests are refused."""
        if wait is not None:   # to the second; a per-minute bucket's resets, once a quarter hour
            reset = round(self.gateway.quota.clock() + wait)
            until = datetime.fromtimestamp(reset, UTC)
            episode = f"429 until {news_slot(reset)}"
        else:
            until, episode = None, f"503 {utc_now():%Y-%m-%dT%H}"
        self.gateway.events.emit(Event("exhausted", None, reason, route=route, until=until, episode=episode,
                                       claim=f"exhausted:{route}:{episode}"))


def _why_none_could(refused: dict[str, RenderError]) -> str:
    """Why no upstream could take the request: each reason once, and, when they differ (a route
    of several protocols), which upstreams each stands for."""
    by_reason: dict[str, list[str]] = {}
    for name, exc in refused.items():
        by_reason.setdefault(str(exc), []).append(name)
    if len(by_reason) == 1:
        return next(iter(by_reason))
    return "; ".join(f"{reason} ({', '.join(names)})" for reason, names in by_reason.items())


NO_END_RETRY_AFTER = 60


def _come_back(wait: float | None) -> dict[str, str]:
    """When to ask again for a route that is closed for now: when its first upstream opens by its
    hours; a client is told at once (`x-should-retry: false`) rather than retrying for minutes
    when that is over a minute away, or when none will open by itself (switched off, or none
    serves the model)."""
    if wait is None:
        # every own 503 carries a retry-after; nothing opens by itself, but a reload or
        # `ccswitch.enable` may: a client that retries regardless (not an SDK, which obeys
        # x-should-retry; Codex is given none, see own_error) waits a minute, not a moment
        return {"x-should-retry": "false", "retry-after": str(NO_END_RETRY_AFTER)}
    return {"retry-after": str(max(1, math.ceil(wait)))}
