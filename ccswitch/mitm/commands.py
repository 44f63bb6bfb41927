"""mitmproxy commands to see and steer upstreams at run time (in memory, and shared with the
other instances when the rules name a shared `state`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from mitmproxy import command, exceptions

from ccswitch.clock import wall_text
from ccswitch.config.models import Rules, Upstream
from ccswitch.mitm.gateway import Gateway
from ccswitch.routing.status import status_text, upstream_state

log = logging.getLogger("ccswitch")
#: the longest `ccswitch.use`: past a year it is a typo, not a plan
MAX_USE_MINUTES = 525600


def known_upstream(rules: Rules, name: str) -> Upstream:
    """The upstream NAME, else a CommandError that lists the known ones (a typo is then easy to see)."""
    try:
        return rules.upstream(name)
    except KeyError:
        known = ", ".join(u.name for u in rules.upstreams)
        raise exceptions.CommandError(f"no upstream named {name!r} (known: {known})") from None


def ccswitch_command(name: str):
    """mitmproxy's `command.command`, its help on one line: mitmproxy wraps a docstring as it is,
    so a second line's indent showed as a run of spaces in mitmweb's help."""
    def register(func):
        func.__doc__ = " ".join((func.__doc__ or "").split()) or None
        return command.command(name)(func)
    return register


class Commands:
    """`ccswitch.status`, `.use`, `.reset`, `.enable`, `.disable`: live, in memory."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _upstream(self, name: str) -> Upstream:
        return known_upstream(self.gateway.rules, name)

    @ccswitch_command("ccswitch.status")
    def status(self) -> Sequence[str]:
        """Each upstream's state, one line each: available, cooling down, full, outside its
        hours, failures, utilization, open and waiting connections, bound sessions.  The lines
        also go to the event log."""
        rules = self.gateway.rules
        gateway = self.gateway
        lines = status_text(rules, gateway.health, datetime.now(rules.tz), gateway.quota, gateway.sessions,
                            gateway.spend, gateway.connections(),
                            gateway.activations.upcoming(rules)).splitlines()
        if (not_applied := gateway.rules_file.not_applied) is not None:   # as the live page says it
            since = datetime.fromtimestamp(not_applied[1], rules.tz)
            lines.insert(1, f"{not_applied[0]} (since {since:%H:%M:%S}): the last good rules stay in force; "
                            "the log and `ccswitch check` say what to mend")
        for line in lines:      # mitmweb's event log shows them as lines; its command bar as a list
            log.info("%s", line)
        return lines

    @ccswitch_command("ccswitch.use")
    def use(self, name: str, minutes: str = "30") -> str:
        """Prefer one upstream for its routes for a while (default 30 minutes, at most 525600:
        a year; 0 ends it)."""
        # taken as text: mitmproxy's own int parsing would answer "1.5" with Python's words
        upstream = self._upstream(name)
        count = minutes.strip()
        if not count.isascii() or not count.isdigit() or not 0 <= int(count) <= MAX_USE_MINUTES:
            raise exceptions.CommandError(f"MINUTES must be a whole number from 0 to {MAX_USE_MINUTES} (a year; "
                                          f"0 ends the preference), not {minutes[:20]!r}")
        span = int(count)
        if span and not self.gateway.rules.routes.routes_of(name):
            # it would be tried first on no route: a preference that changes nothing, in place of one that may
            raise exceptions.CommandError(f"{name} is in no route, so preferring it would change nothing "
                                          "(the preference in force stays): list it in a route of the rules")
        if span == 0:
            preferred = self.gateway.health.preferred_name()
            if preferred not in (None, name):     # another's preference is not this one's to end
                return f"{name} was not preferred ({preferred} is: ccswitch.unuse ends that)"
            return self.unuse()
        health = self.gateway.health
        health.prefer(name, health.clock() + span * 60)
        tz = self.gateway.rules.tz
        now = health.wall()
        # added in UTC: a span across a clock change ends at the right wall time
        until = (now + timedelta(minutes=span)).astimezone(tz)
        when = wall_text(until, now.astimezone(tz))
        minutes_text = "1 minute" if span == 1 else f"{span} minutes"
        log.info("ccswitch: preferring %s for %s (until %s)", name, minutes_text, when)
        gateway = self.gateway
        state, detail, _ = upstream_state(upstream, gateway.rules, health, now.astimezone(tz), gateway.quota,
                                          gateway.spend)
        # preferred all the same (it serves again within the span, maybe): said, not a silent no-op
        out_now = f"; it serves nothing now: {detail}" if state != "available" else ""
        return f"preferring {name} for {minutes_text}, until {when} (ccswitch.unuse ends it){out_now}"

    @ccswitch_command("ccswitch.unuse")
    def unuse(self) -> str:
        """End the preference set with ccswitch.use."""
        health = self.gateway.health
        name = health.preferred_name()
        if name is None:
            return "no upstream was preferred"
        health.unprefer()
        log.info("ccswitch: no longer preferring %s", name)
        return f"no longer preferring {name}"

    @ccswitch_command("ccswitch.reset")
    def reset(self, name: str) -> str:
        """Clear an upstream's failures and cooldown."""
        self._upstream(name)
        self.gateway.health.reset(name)
        self.gateway.quota.forget(name)
        log.info("ccswitch: %s reset", name)
        return f"{name}: failures and cooldown cleared"

    @ccswitch_command("ccswitch.enable")
    def enable(self, name: str) -> str:
        """Switch an upstream on until the next reload."""
        upstream = self._upstream(name)
        if lacking := upstream.lacks():   # a running process's environment is its own: a restart takes a new one
            raise exceptions.CommandError(f"{lacking}: set it and restart ccswitch")
        self.gateway.health.switch(name, True)
        log.info("ccswitch: %s enabled until the next reload", name)
        return f"{name} enabled until the next reload"

    @ccswitch_command("ccswitch.disable")
    def disable(self, name: str) -> str:
        """Switch an upstream off until the next reload."""
        self._upstream(name)
        self.gateway.health.switch(name, False)
        log.info("ccswitch: %s disabled until the next reload", name)
        return f"{name} disabled until the next reload"
