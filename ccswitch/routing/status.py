"""A readable account of every upstream's state, for `ccswitch.status`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from ccswitch.clock import wall_text
from ccswitch.config.models import Rules, Upstream
from ccswitch.config.schedule import Upcoming, next_activation, schedule_block, schedule_opens, weekday_time
from ccswitch.money import usd
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.budget import CLIENT, UPSTREAM, SpendBoard
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.plan import full_past_cooldown
from ccswitch.routing.quota import QuotaBoard


def upstream_state(upstream: Upstream, rules: Rules, health: HealthBoard, now: datetime,
                   quota: QuotaBoard | None = None, spend: SpendBoard | None = None) -> tuple[str, str, datetime | None]:
    """(state, what it means, until when) of an upstream at `now` (aware, in the rules' zone):
    disabled, outside_hours, over_budget, cooling, full or available, in the order the plan
    skips them; the live page, its metrics and `ccswitch.status` all say it so."""
    if not health.enabled(upstream.name, upstream.enabled):
        return "disabled", "disabled" if not upstream.enabled else "disabled by ccswitch.disable", None
    block = schedule_block(upstream, now)
    if block:   # until its days and hours let it in again (the live page's "left")
        return "outside_hours", block, schedule_opens(upstream, now)
    overrun = spend.over(UPSTREAM, upstream.name) if spend is not None else None
    if overrun is not None:   # skipped like a full upstream until the budget's next period
        until = overrun.until.astimezone(now.tzinfo)
        when = f"{until:%H:%M}" if overrun.kind == "daily" else f"{until:%Y-%m-%d %H:%M}"
        return "over_budget", f"over its {overrun.kind} budget ({usd(overrun.limit)[0]}) until {when}", until
    cooling = health.cooling_until(upstream.name)
    full = quota.full_until(upstream.name, rules.failover.drain_at) if quota is not None else None
    if cooling is not None and full_past_cooldown(health, quota, upstream.name, rules.failover.drain_at) is None:
        # the board's clock is monotonic: read back as wall time it lands a few ms off the
        # moment it was set for (a reset at 17:00:00 read 16:59:59.998, shown as 16:59:59)
        # (added in UTC: a span across a DST change is elapsed time, not wall-clock time)
        until = (now.astimezone(UTC) + timedelta(seconds=cooling - health.clock() + 0.5)
                 ).replace(microsecond=0).astimezone(now.tzinfo)
        return "cooling", f"cooling down until {wall_text(until, now, seconds=True)}", until
    if full is not None:
        until = datetime.fromtimestamp(full, now.tzinfo)   # wall time: the reset exactly, not "now" + a span read later
        window = quota.full(upstream.name, rules.failover.drain_at)
        return "full", (f"full until {wall_text(until, now, seconds=True)}"
                        + (f" ({window.name} window)" if window else "")), until
    if health.busy_probing(upstream.name):
        return "available", "available (being probed after its cooldown)", None
    return "available", "available", None


def quota_text(quota: QuotaBoard, name: str, drain_at: float, now: datetime) -> str | None:
    """`utilization 0.42 (5h window, resets 14:00)`, with `full` when it is; None if unknown."""
    known = quota.utilization(name)
    if known is None:
        return None
    value, window = known
    reset = (f", resets {wall_text(datetime.fromtimestamp(window.resets_at, now.tzinfo), now)}"
             if window.resets_at else "")
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
                connections: Mapping[str, tuple[int, int]] | None = None,
                probes: Mapping[str, Upcoming] | None = None) -> str:
    """`connections`: per upstream, (connections open, requests waiting for one); `probes`: per
    upstream, when a failed activation probe is tried again and the times probed already."""
    routes = {u.name: rules.routes.routes_of(u.name) for u in rules.upstreams}
    preferred = health.preferred_name()
    bound = sessions.count_by_upstream() if sessions is not None else {}
    head = f"ccswitch at {now:%Y-%m-%d %H:%M:%S %Z}"
    if preferred:
        left = health.preferred[1] - health.clock()
        head += f"; preferring {preferred} for {left / 60:.0f} more minute(s)"
    lines = [head]
    for upstream in rules.upstreams:
        state = health.get(upstream.name)
        kind, detail, until = upstream_state(upstream, rules, health, now, quota, spend)
        if kind == "cooling" and until is not None:
            detail += f" ({(until - now).total_seconds():.0f}s left)"
        parts = [f"{upstream.name} [{upstream.protocol}; routes: {', '.join(routes[upstream.name]) or '-'}]",
                 detail, f"failures {state.failures}"]
        if state.last_error:
            parts.append(f"last error: {state.last_error}")
        usage = quota_text(quota, upstream.name, rules.failover.drain_at, now) if quota else None
        if usage:
            parts.append(usage)
        if connections is not None:
            parts.append(connections_text(upstream, connections))
        if bound.get(upstream.name):
            parts.append(f"{bound[upstream.name]} session(s) bound")
        if spend is not None:
            parts += [f"budget {line}" for line in spend.report(UPSTREAM, upstream.name)]
        if upstream.activate_at:
            upcoming = (probes or {}).get(upstream.name)
            parts.append(f"next activation {next_activation_text(upstream, kind, now, upcoming)}")
        lines.append("  " + "; ".join(parts))
    for client in rules.client_keys:
        budgets = spend.report(CLIENT, client.name) if spend is not None else []
        if budgets:
            lines.append(f"  client key {client.name}: budget " + "; ".join(budgets))
    return "\n".join(lines)


def next_activation_text(upstream: Upstream, state: str, now: datetime, probes: Upcoming | None = None) -> str:
    """`tue 06:00` (a time probed already that day skipped), `retry tue 06:02:45` when a failed
    probe's retry comes first, or `none` (a disabled upstream is never probed: no time to show)."""
    if state == "disabled":
        return "none"
    probes = probes or Upcoming()
    upcoming = next_activation(upstream.activate_at, upstream.days, now, probes.taken)
    retry = probes.retry
    if retry is not None and (upcoming is None or retry < upcoming):
        return "retry " + weekday_time(retry.astimezone(now.tzinfo), seconds=True)
    return weekday_time(upcoming) if upcoming is not None else "none"
