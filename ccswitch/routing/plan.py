"""Which upstreams may serve a request, in which order, and why an upstream is off now."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ccswitch.config.models import Rules, Upstream
from ccswitch.config.schedule import schedule_block
from ccswitch.routing.health import HealthBoard

#: chat clients ask for thinking with a model-name suffix (the original gateway's convention)
THINKING_SUFFIX = "-thinking"


@dataclass
class Plan:
    candidates: list[Upstream] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)  # (name, why)

    def why_none(self, route: str) -> str:
        if not self.blocked:
            return f"no upstream is configured for the {route} route"
        reasons = "; ".join(f"{name} is {why}" for name, why in self.blocked)
        return f"no upstream available for the {route} route: {reasons}"


def plan(rules: Rules, route: str, model: str | None, health: HealthBoard, now: datetime) -> Plan:
    """Candidates in route order: enabled, in schedule, admitting the model, not cooling.

    If every otherwise-available upstream is cooling, the one that recovers first
    is tried anyway: a route never goes dark on its own.  An upstream being
    probed after its cooldown serves one request at a time.
    """
    result = Plan()
    cooling: list[tuple[float, Upstream]] = []
    for name in rules.routes.for_route(route):
        upstream = rules.upstream(name)
        why = off_reason(upstream, health, now, model)
        if why is not None:
            result.blocked.append((name, why))
            continue
        until = health.cooling_until(name)
        if until is not None:
            cooling.append((until, upstream))
            result.blocked.append((name, "cooling down"))
        elif health.busy_probing(name):
            cooling.append((0.0, upstream))   # tried anyway if nothing else is left
            result.blocked.append((name, "being probed after its cooldown"))
        else:
            result.candidates.append(upstream)
    if not result.candidates and cooling:
        result.candidates.append(min(cooling, key=lambda pair: pair[0])[1])
    preferred = health.preferred_name()
    if preferred:
        for i, upstream in enumerate(result.candidates):
            if upstream.name == preferred:
                result.candidates.insert(0, result.candidates.pop(i))
                break
    return result


def off_reason(upstream: Upstream, health: HealthBoard, now: datetime, model: str | None = None) -> str | None:
    """Why an upstream takes no request now, health aside (switched off, outside its days or
    hours, not serving the model), or None.  Routing and `ccswitch.status` both ask here."""
    if not health.enabled(upstream.name, upstream.enabled):
        return "disabled" if not upstream.enabled else "disabled by ccswitch.disable"
    block = schedule_block(upstream, now)
    if block:
        return block
    if model is not None and not upstream.admits_model(model) \
            and not (model.endswith(THINKING_SUFFIX) and upstream.admits_model(model[:-len(THINKING_SUFFIX)])):
        return f"not serving model {model!r}"
    return None
