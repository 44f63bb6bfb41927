"""The live page's data, `/_ccswitch/status.json`: each upstream's state now, the last requests
and today's totals.  Computed when asked for, from the `LiveBoard` and the boards routing keeps.

No key text: only names, counts and states leave here, and error texts (which an upstream may
have filled with what it was sent) are scrubbed of every configured key first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ccswitch.clock import wall_text
from ccswitch.config.models import Rules
from ccswitch.config.schedule import Upcoming
from ccswitch.dial.job import Job
from ccswitch.report.live import LiveBoard, Served
from ccswitch.report.terminal import visible_controls
from ccswitch.routing.affinity import SessionBindings
from ccswitch.routing.budget import CLIENT, UPSTREAM, SpendBoard
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.quota import QuotaBoard
from ccswitch.routing.status import next_activation_text, upstream_state
from ccswitch.wire.redact import scrub_text

#: an upstream's state, in the order routing asks: the page colours and the metrics' state label use these
STATES = ("disabled", "outside_hours", "over_budget", "cooling", "full", "available")
MAX_TEXT = 300   # longest error or model text shown
MAX_IN_FLIGHT = 50   # requests under way listed (all are counted)


@dataclass(frozen=True)
class UpstreamView:
    name: str
    protocol: str
    routes: tuple[str, ...]
    state: str                      # one of STATES
    detail: str                     # the state in words
    until: datetime | None          # when a cooldown, a full window or a spent budget ends (local time)
    failures: int
    last_error: str | None
    utilization: float | None       # the highest live window's, 0..1
    window: str | None
    resets_at: datetime | None      # that window's reset (local time)
    sessions: int                   # sessions bound to it
    preferred: bool                 # chosen by ccswitch.use
    budget: tuple[str, ...] = ()    # `$1.20 of $5.00 today (until 00:00)` per budget it has
    in_flight: int = 0              # requests whose attempt on it is under way
    activation: str | None = None   # its next activation probe (`tue 06:00`, `none`), if it has times
    connections: tuple[int, int] = (0, 0)   # ccswitch's connections to it: open, requests waiting for one
    via: str | None = None          # the proxy it is reached through, without credentials (None: directly)

    @property
    def up(self) -> bool:
        return self.state == "available"


@dataclass(frozen=True)
class InstanceView:
    """This instance, and how its ledger and shared state are doing: behind a load balancer, which
    instance answered, and whether rows pile up or the state is its own for now."""
    host: str
    pid: int
    ledger: str | None              # where the rows go (never a password); None: no ledger
    ledger_waiting: int = 0         # rows in memory, not yet written
    ledger_dropped: int = 0         # rows lost to a full buffer or refused by the database
    ledger_trouble: str | None = None   # why rows are not being written now
    state: str = "in memory (this instance only)"
    state_shared: bool = False
    state_up: bool = True           # a shared state reachable now


def instance_dict(view: InstanceView, secrets: list[str]) -> dict[str, Any]:
    return {
        "host": view.host, "pid": view.pid,
        "ledger": None if view.ledger is None else {
            "db": view.ledger, "waiting": view.ledger_waiting, "dropped": view.ledger_dropped,
            "trouble": clean_text(view.ledger_trouble, secrets)},
        "state": {"at": view.state, "shared": view.state_shared, "up": view.state_up},
    }


def clean_text(text: str | None, secrets: list[str]) -> str | None:
    if text is None:
        return None
    # scrubbed whole, then cut: a key cut in two first would no longer be found
    return visible_controls(scrub_text(str(text), secrets)[:MAX_TEXT])


def trying(job: Job) -> str | None:
    """The upstream a request under way is on now (None: not sent yet, or between attempts)."""
    attempt = job.running_attempt
    return attempt.upstream if attempt is not None else None


def upstream_views(rules: Rules, health: HealthBoard, quota: QuotaBoard, sessions: SessionBindings,
                   now: datetime, spend: SpendBoard | None = None, running: Sequence[Job] = (),
                   connections: Mapping[str, tuple[int, int]] | None = None,
                   probes: Mapping[str, Upcoming] | None = None) -> list[UpstreamView]:
    """Each upstream's state at `now` (aware, in the rules' time zone), in the rules' order;
    `running`: the requests under way, `connections`: (open, waiting) by upstream, `probes`:
    its activation probes' retry and the times probed already, by upstream."""
    secrets = rules.secret_texts()
    preferred = health.preferred_name()
    bound = sessions.count_by_upstream()
    on = Counter(trying(job) for job in running)
    connections = connections or {}
    views = []
    for upstream in rules.upstreams:
        name = upstream.name
        state, detail, until = upstream_state(upstream, rules, health, now, quota, spend)
        known = quota.utilization(name)
        value, window = known if known is not None else (None, None)
        resets_at = None
        if window is not None and window.resets_at is not None:
            # added in UTC: a span across a DST change is elapsed time, not wall-clock time
            # and to the nearest second: read back from the clock, a reset at 18:59:00 read 18:58:59.998
            resets_at = (now.astimezone(UTC) + timedelta(seconds=window.resets_at - quota.clock() + 0.5)
                         ).replace(microsecond=0).astimezone(now.tzinfo)
        views.append(UpstreamView(
            name=name, protocol=str(upstream.protocol),
            routes=rules.routes.routes_of(name),
            state=state, detail=detail, until=until, failures=health.get(name).failures,
            last_error=clean_text(health.get(name).last_error, secrets), utilization=value,
            window=window.name if window is not None else None, resets_at=resets_at,
            sessions=bound.get(name, 0), preferred=name == preferred,
            budget=tuple(spend.report(UPSTREAM, name)) if spend is not None else (),
            in_flight=on.get(name, 0), connections=connections.get(name, (0, 0)),
            via=upstream.proxy.shown if upstream.proxy is not None else None,
            activation=(next_activation_text(upstream, state, now, (probes or {}).get(name))
                        if upstream.activate_at else None)))
    return views


def client_budgets(rules: Rules, spend: SpendBoard | None) -> list[dict[str, Any]]:
    """Each client key with a budget: its name and what it spent of each budget (never its key)."""
    if spend is None:
        return []
    return [{"name": key.name, "budget": spend.report(CLIENT, key.name)} for key in rules.client_keys if key.budget]


def live_status(board: LiveBoard, views: list[UpstreamView], rules: Rules, now: datetime,
                running: Sequence[Job] = (), spend: SpendBoard | None = None,
                not_applied: tuple[str, float] | None = None, instance: InstanceView | None = None) -> dict[str, Any]:
    """The whole page as data: `now` aware in the rules' time zone; `running`: the requests under
    way; `spend`: for the client keys' budgets; `not_applied`: why the rules file's last change
    is not in force, and since when (the rules in force are the last good ones); `instance`:
    this one, its ledger and shared state."""
    secrets = rules.secret_texts()
    tz = now.tzinfo
    since = board.since(tz)
    stamp = now.isoformat(timespec="seconds")
    return {
        "now": stamp, "time": f"{now:%H:%M:%S}", "timezone": now.strftime("%Z"),
        "zone": rules.timezone or getattr(tz, "key", None), "utc_offset": stamp[19:] or None,
        "started": datetime.fromtimestamp(board.started, tz).isoformat(timespec="seconds"),
        "instance": None if instance is None else instance_dict(instance, secrets),
        "preferring": next((v.name for v in views if v.preferred), None),
        "rules_not_applied": None if not_applied is None else {
            "why": not_applied[0], "since": datetime.fromtimestamp(not_applied[1], tz).isoformat(timespec="seconds")},
        "upstreams": [_view_dict(v, now) for v in views],
        # of the upstreams some route lists: one in no route serves nothing, however well
        "available": sum(v.up for v in views if v.routes), "routed": sum(1 for v in views if v.routes),
        "clients": client_budgets(rules, spend),
        "today": {"date": now.date().isoformat(), "since": f"{since:%H:%M}",
                  **board.totals(tz, now).to_dict()},
        "recent": [_served_dict(s, tz, secrets) for s in reversed(board.recent)],
        "in_flight": {"count": len(running), "requests": [
            _running_dict(job, now, secrets) for job in sorted(running, key=lambda j: j.started_at)[:MAX_IN_FLIGHT]]},
    }


def _running_dict(job: Job, now: datetime, secrets: list[str]) -> dict[str, Any]:
    at, req = job.started_at.astimezone(now.tzinfo), job.request
    return {
        "ts": at.isoformat(timespec="milliseconds"), "time": f"{at:%H:%M:%S}", "route": str(req.route),
        "endpoint": str(req.endpoint), "model": clean_text(req.model, secrets), "stream": req.stream,
        "upstream": trying(job), "attempt": len(job.attempts),
        "seconds": max(0.0, round((now - at).total_seconds(), 1)),
    }


def _local(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _view_dict(view: UpstreamView, now: datetime) -> dict[str, Any]:
    return {
        "name": view.name, "protocol": view.protocol, "routes": list(view.routes), "state": view.state,
        "detail": view.detail, "up": view.up, "until": _local(view.until),
        "seconds_left": None if view.until is None else max(0, round((view.until - now).total_seconds())),
        "failures": view.failures, "last_error": view.last_error,
        "utilization": None if view.utilization is None else round(view.utilization, 4),
        "window": view.window, "resets_at": _local(view.resets_at),
        "resets": wall_text(view.resets_at, now.astimezone(view.resets_at.tzinfo)) if view.resets_at is not None else None,
        "sessions": view.sessions, "preferred": view.preferred, "budget": list(view.budget),
        "in_flight": view.in_flight, "connections": {"open": view.connections[0], "waiting": view.connections[1]},
        "via": view.via, "activation": view.activation,
    }


def _served_dict(served: Served, tz, secrets: list[str]) -> dict[str, Any]:
    at = served.at.astimezone(tz)
    return {
        "ts": at.isoformat(timespec="milliseconds"), "time": f"{at:%H:%M:%S}", "route": served.route,
        "endpoint": served.endpoint, "model": clean_text(served.model, secrets),
        "upstream_model": clean_text(served.upstream_model, secrets), "upstream": served.upstream,
        "attempts": [{"upstream": up, "result": result, "why": clean_text(why, secrets)}
                     for up, result, why in served.attempts],
        "status": served.status, "error": clean_text(served.error, secrets), "stream": served.stream,
        "tokens": dict(served.tokens),
        "cost_usd": None if served.cost_usd is None else round(served.cost_usd, 6),
        "ms": served.latency_ms, "ttfb_ms": served.ttfb_ms,
    }
