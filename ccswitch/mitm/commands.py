"""mitmproxy commands to see and steer upstreams at run time (in memory only)."""

from __future__ import annotations

import logging
from datetime import datetime

from mitmproxy import command, exceptions

from ccswitch.mitm.gateway import Gateway
from ccswitch.routing.status import status_text

log = logging.getLogger("ccswitch")


class Commands:
    """`ccswitch.status`, `.use`, `.reset`, `.enable`, `.disable`: live, in memory."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _upstream(self, name: str):
        try:
            return self.gateway.rules.upstream(name)
        except KeyError:
            known = ", ".join(u.name for u in self.gateway.rules.upstreams)
            raise exceptions.CommandError(f"no upstream named {name!r} (known: {known})") from None

    @command.command("ccswitch.status")
    def status(self) -> str:
        """Each upstream's state: available, cooling down, outside its hours, failures."""
        rules = self.gateway.rules
        gateway = self.gateway
        return status_text(rules, gateway.health, datetime.now(rules.tz), gateway.quota, gateway.sessions)

    @command.command("ccswitch.use")
    def use(self, name: str, minutes: int = 30) -> str:
        """Prefer one upstream for its routes for a while (default 30 minutes)."""
        self._upstream(name)
        health = self.gateway.health
        health.preferred = (name, health.clock() + minutes * 60)
        log.info("ccswitch: preferring %s for %d minutes", name, minutes)
        return f"preferring {name} for {minutes} minutes"

    @command.command("ccswitch.reset")
    def reset(self, name: str) -> str:
        """Clear an upstream's failures and cooldown."""
        self._upstream(name)
        self.gateway.health.reset(name)
        self.gateway.quota.forget(name)
        log.info("ccswitch: %s reset", name)
        return f"{name}: failures and cooldown cleared"

    @command.command("ccswitch.enable")
    def enable(self, name: str) -> str:
        """Switch an upstream on until the next reload."""
        upstream = self._upstream(name)
        if upstream.auth != "client" and upstream.api_key is None:
            raise exceptions.CommandError(f"{name} has no api_key (its environment variable is not set)")
        self.gateway.health.switch(name, True)
        log.info("ccswitch: %s enabled until the next reload", name)
        return f"{name} enabled until the next reload"

    @command.command("ccswitch.disable")
    def disable(self, name: str) -> str:
        """Switch an upstream off until the next reload."""
        self._upstream(name)
        self.gateway.health.switch(name, False)
        log.info("ccswitch: %s disabled until the next reload", name)
        return f"{name} disabled until the next reload"
