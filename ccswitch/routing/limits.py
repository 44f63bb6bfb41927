"""What an upstream's answer says about its limits, learnt the same way wherever the answer came
from (a client's request or an activation probe): its rate-limit windows, the `full` news, and a
429's cooldown."""

from __future__ import annotations

from datetime import UTC, datetime

from ccswitch.routing.events import Event, Events, news_slot
from ccswitch.routing.health import HealthBoard
from ccswitch.routing.quota import QuotaBoard
from ccswitch.routing.rate_limits import rejection_reset


def learn_windows(quota: QuotaBoard, events: Events | None, name: str, headers: list[tuple[str, str]],
                  drain_at: float) -> None:
    """Learn the answer's rate-limit windows; an upstream this answer made full is news."""
    was_full = events is not None and quota.full(name, drain_at) is not None
    quota.record(name, headers)
    if events is None or was_full:
        return
    window = quota.full(name, drain_at)
    if window is None:
        return
    if window.resets_at is not None:
        slot = news_slot(window.resets_at)
    else:   # a window that names no reset, seen again at each probe: news once an hour
        slot = "no reset " + news_slot(quota.clock(), 3600)
    events.emit(Event(
        "full", name, f"its {window.name} window is at {window.utilization:.0%} (drain_at {drain_at:.0%})"
        f"{', rejecting requests' if window.rejected else ''}: skipped until it resets",
        until=None if window.resets_at is None else datetime.fromtimestamp(window.resets_at, UTC),
        episode=f"{window.name}:{slot}", claim=f"full:{name}:{window.name}:{slot}"))


def cool_rate_limited(health: HealthBoard, quota: QuotaBoard, name: str, reason: str,
                      headers: list[tuple[str, str]], cooldown: float, *, refusal: bool,
                      began: float | None = None) -> None:
    """A rate-limited upstream cools down at once: until the reset of the window that rejected,
    when it was reported (here or in the rate-limit headers last seen), else for `cooldown`.
    `refusal`: the headers are the 429's own, not those of a 2xx whose stream said it later;
    `began`: when the request was sent (health's clock)."""
    now = quota.clock()
    reset = rejection_reset(headers, now, lone=refusal) if headers else None
    if reset is None:
        full = quota.full(name, 1.0)
        reset = full.resets_at if full is not None else None
    if reset is not None and reset > now:
        health.record_rate_limit(name, reason, seconds=reset - now, reset_known=True, began=began)
    else:
        health.record_rate_limit(name, reason, seconds=cooldown, reset_known=False, began=began)
