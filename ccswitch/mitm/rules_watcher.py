"""Load the rules at start-up (invalid rules stop it) and reload them when the file changes."""

from __future__ import annotations

import asyncio

from mitmproxy import ctx, exceptions

from ccswitch.config.values import RulesError
from ccswitch.config.watch import SETTLE
from ccswitch.mitm.gateway import Gateway


class RulesWatcher:
    """Load the rules at start-up (invalid rules stop it) and reload them on change."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._task: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option("ccswitch_rules", str, "",
                          "Path of ccswitch's rules.yaml (default: ./rules.yaml, else "
                          "~/.ccswitch/rules.yaml, else the built-in default).")

    def configure(self, updated) -> None:
        if "ccswitch_rules" in updated:
            try:
                self.gateway.rules_file.open(ctx.options.ccswitch_rules or None)
            except RulesError as exc:
                raise exceptions.OptionsError(f"invalid ccswitch rules:\n{exc}") from None
            self.gateway.sync_upstreams()

    def running(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def done(self) -> None:
        if self._task:
            self._task.cancel()

    async def _watch(self) -> None:
        rules_file = self.gateway.rules_file
        while True:
            # a change just seen is read again soon: applied only once it stays the same
            await asyncio.sleep(SETTLE if rules_file.pending else 1.0)
            if rules_file.reload_if_changed():
                self.gateway.sync_upstreams()
                await self.gateway.open_state()
                if self.gateway.ledger is not None:
                    self.gateway.open_ledger(True)
