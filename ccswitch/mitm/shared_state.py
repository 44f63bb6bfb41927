"""The shared state's place in mitmproxy's life: checked with the rules, started once the proxy
runs, stopped (what is queued handed on) after the requests in flight have ended."""

from __future__ import annotations

import asyncio

from mitmproxy import exceptions

from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.lifecycle import hook_task
from ccswitch.shared.factory import StateUnavailable, check


class SharedStateSync:
    """Starts and stops the gateway's shared state (`state:` in rules.yaml; in memory without).

    Listed after the Router: its `done` follows the drain (the last requests' spend is handed
    on).  Its `running` does not wait for the Router's spend read: the ledger's spend and the
    shared total may come in either order (`SpendBoard.load` keeps the larger view)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def configure(self, updated) -> None:
        if "ccswitch_rules" in updated:
            try:
                check(self.gateway.rules.state)
            except StateUnavailable as exc:
                raise exceptions.OptionsError(f"ccswitch: {exc}") from None

    def running(self) -> asyncio.Task:
        return hook_task(self.gateway.open_state(), "shared state start")

    def done(self) -> asyncio.Task:
        return hook_task(self.gateway.close_state(), "shared state stop")
