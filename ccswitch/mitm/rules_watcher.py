"""Load the rules at start-up (invalid rules stop it) and reload them when the file changes."""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Iterable

from mitmproxy import ctx, exceptions

from ccswitch.config.models import Rules
from ccswitch.config.needs import unmet_needs
from ccswitch.config.values import RulesError
from ccswitch.config.watch import SETTLE
from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.lifecycle import hook_task

log = logging.getLogger("ccswitch.rules")


class RulesWatcher:
    """Load the rules at start-up (invalid rules stop it) and reload them on change."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._task: asyncio.Task | None = None
        gateway.rules_file.needs = _unmet_here

    def load(self, loader) -> None:
        loader.add_option("ccswitch_rules", str, "",
                          "Path of ccswitch's rules.yaml (default: ./rules.yaml, else "
                          "~/.ccswitch/rules.yaml, else the built-in default).")

    def configure(self, updated) -> None:
        if "ccswitch_rules" in updated:
            try:
                changed = self.gateway.rules_file.open(ctx.options.ccswitch_rules or None)
            except RulesError as exc:
                raise exceptions.OptionsError(f"invalid ccswitch rules:\n{exc}") from None
            if self._task is None:      # at start-up: the ledger and the state open as the proxy starts
                self.gateway.sync_upstreams()
            elif changed:               # another file while running (`set ccswitch_rules`): all of it applies
                hook_task(self._apply(), "rules apply")   # held until done, a failure logged

    def running(self) -> None:
        # every addon has declared its options by now: a `ccswitch_…` one still set aside is a typo
        options = getattr(ctx, "options", None)     # none in a test of the watcher alone
        for line in misspelt_options(options.deferred, options.keys()) if options is not None else ():
            log.warning(line)
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def done(self) -> None:
        if self._task:
            self._task.cancel()

    async def _watch(self) -> None:
        rules_file = self.gateway.rules_file
        while True:
            # a change just seen is read again soon: applied only once it stays the same
            await asyncio.sleep(SETTLE if rules_file.pending else 1.0)
            try:
                if rules_file.reload_if_changed():
                    await self._apply()
            except Exception:   # a bug here must not end reloading for good
                log.exception("ccswitch: the rules could not be reloaded; watching on")

    async def _apply(self) -> None:
        """Everything new rules may change beyond what each request reads from them."""
        self.gateway.sync_upstreams()
        await self.gateway.open_state()
        if self.gateway.ledger is not None:
            self.gateway.open_ledger(True)


def misspelt_options(deferred: Iterable[str], known: Iterable[str]) -> list[str]:
    """A warning for each `ccswitch_…` option set (`--set`, mitmproxy's config.yaml) that no addon
    declares: mitmproxy keeps an unknown option aside without a word, for a script loaded later."""
    ours = sorted(name for name in known if name.startswith("ccswitch_"))
    lines = []
    for name in sorted(name for name in deferred if name.startswith("ccswitch_")):
        close = difflib.get_close_matches(name, ours, n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}?" if close else f"ccswitch's are {', '.join(ours)}"
        lines.append(f"ccswitch: no option is called {name}, so it does nothing: {hint}")
    return lines


def _unmet_here(rules: Rules) -> list[tuple[str, str]]:
    """What this machine lacks for the rules, the ledger's database only while the ledger is on
    (the Router declares its option; without it, as in a test of the watcher alone, it counts as on)."""
    options = getattr(ctx, "options", None)     # none before mitmproxy's master exists
    return unmet_needs(rules, ledger=getattr(options, "ccswitch_ledger", True))
