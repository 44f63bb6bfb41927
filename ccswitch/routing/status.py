"""A readable account of every upstream's state, for `ccswitch.status`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from ccswitch.config.models import Rules, Upstream
from ccswitch.config.schedule import describe_next
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.budget import CLIENT, UPSTREAM, SpendBoard
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.plan import off_reason
from ccswitch.routing.quota import QuotaBoard
from ccswitch.vocab import Route


def upstream_state(upstream: Upstream, health: HealthBoard, now: datetime) -> str:
    """available / cooling down until … / outside its days or hours / disabled."""
    reason = off_reason(upstream, health, now)
    if reason:
        return reason
    until = health.cooling_until(upstream.name)
    if until is not None:
        left = until - health.clock()
        return f"cooling down until {(now + timedelta(seconds=left)):%H:%M:%S} ({left:.0f}s left)"
    if health.busy_probing(upstream.name):
        return "available (being probed after its cooldown)"
    return "available"


def quota_text(quota: QuotaBoard, name: str, drain_at: float, tz) -> str | None:
    """`utilization 0.42 (5h window, resets 14:00)`, with `full` when it is; None if unknown."""
    known = quota.utilization(name)
    if known is None:
        return None
    value, window = known
    reset = f", resets {datetime.fromtimestamp(window.resets_at, tz):%H:%M}" if window.resets_at else ""
    full = quota.full(name, drain_at)
    return f"utilization {value:.2f} ({window.name} window{reset})" + ("; full" if full is not None else "")


def connections_text(upstream: Upstream, counts: Mapping[str, tuple[int, int]]) -> str:
    """`connections 3 open of max 4, 2 waiting; via socks5://host:port` (the proxy without credentials)."""
    opened, waiting = counts.get(upstream.name, (0, 0))
    cap = f" of max {upstream.max_connections}" if upstream.max_connections else ""
    text = f"connections {opened} open{cap}, {waiting} waiting"
    return text + (f"; via {upstream.proxy.shown}" if upstream.proxy is not None else "")


def status_text(rules: Rules, health: HealthBoard, now: datetime, quota: QuotaBoard | None = None,
                sessions: SessionBindings | None = None, spend: SpendBoard | None = None,
                connections: Mapping[str, tuple[int, int]] | None = None) -> str:
    """`connections`: per upstream, (connections open, requests waiting for one)."""
    routes = {name: [r for r in Route if name in rules.routes.for_route(r)]
              for name in (u.name for u in rules.upstreams)}
    preferred = health.preferred_name()
    bound = sessions.count_by_upstream() if sessions is not None else {}
    head = f"ccswitch at {now:%Y-%m-%d %H:%M:%S %Z}"
    if preferred:
        left = health.preferred[1] - health.clock()
        head += f"; preferring {preferred} for {left / 60:.0f} more minute(s)"
    lines = [head]
    for upstream in rules.upstreams:
        state = health.get(upstream.name)
        parts = [f"{upstream.name} [{upstream.protocol}; routes: {', '.join(routes[upstream.name]) or '-'}]",
                 upstream_state(upstream, health, now), f"failures {state.failures}"]
        if state.last_error:
            parts.append(f"last error: {state.last_error}")
        usage = quota_text(quota, upstream.name, rules.failover.drain_at, now.tzinfo) if quota else None
        if usage:
            parts.append(usage)
        if connections is not None:
            parts.append(connections_text(upstream, connections))
        if bound.get(upstream.name):
            parts.append(f"{bound[upstream.name]} session(s) bound")
        if spend is not None:
            parts += [f"budget {line}" for line in spend.report(UPSTREAM, upstream.name)]
        if upstream.activate_at:
            parts.append(f"next activation {describe_next(upstream.activate_at, upstream.days, now)}")
        lines.append("  " + "; ".join(parts))
    for client in rules.client_keys:
        budgets = spend.report(CLIENT, client.name) if spend is not None else []
        if budgets:
            lines.append(f"  client key {client.name}: budget " + "; ".join(budgets))
    return "\n".join(lines)
