"""What ccswitch does when mitmproxy reloads its script, or drops it, while the proxy runs on.

mitmproxy looks at a script's file once a second. When it has changed it loads it again, but that
re-runs only the entry (`addon.py`): the rest of the package stays what the process imported
(and what it imports later comes from disk), so after an upgrade in place the process would run
a mix of old and new code.  When the file is missing at that moment (pip moves an old install
aside before it writes the new one; pipx builds a new venv; someone deleted addon.py), or the
reloaded entry fails, mitmproxy goes on without ccswitch: a plain proxy passing requests on
unrouted, past ccswitch's client keys and its loopback guard.  In either case ccswitch stops the
proxy, once its requests in flight have ended, with exit status 1, so that a supervisor
(systemd's `Restart=on-failure`, launchd's `KeepAlive`) starts it again on the new code; until
then a new request gets a 503.  An edit of addon.py alone reloads it, as mitmproxy does."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from ccswitch.dial.shutdown import ENDING_WAIT, RETRY_AFTER
from ccswitch.mitm.flows import answer_error, likely_protocol
from ccswitch.mitm.lifecycle import hook_task, pending, stopping

log = logging.getLogger("ccswitch")

#: a file every install of the package rewrites: its change says the code on disk is not this process's
PACKAGE_MARK = Path(__file__).resolve().parent.parent / "__init__.py"
#: the addon whose presence means ccswitch is serving (mitmproxy names an addon by its class)
SERVING_ADDON = "router"
#: what a request gets while the proxy stops after ccswitch was unloaded
CLOSING = "ccswitch was unloaded and the proxy is stopping (a restart brings it back)"
UPGRADED = ("ccswitch: its package changed on disk since this process started (an upgrade?): stopping, "
            "with exit status 1, so that a supervisor starts the new version (else start it again)")


class _Process:
    """What outlives a reload of the script (it re-runs the entry only, not this module)."""
    loaded_from: float | None = None     # the mark's time at the first load
    first_load = True
    stopping = False                     # for good: no later load of the script serves


def mark_time() -> float | None:
    try:
        return PACKAGE_MARK.stat().st_mtime
    except OSError:
        return None


class UnloadGuard:
    """First of ccswitch's addons: its `load` comes before the others', its `done` too."""

    def load(self, loader) -> None:
        now = mark_time()
        if _Process.first_load:
            _Process.first_load, _Process.loaded_from = False, now
        elif now != _Process.loaded_from and not _Process.stopping:
            log.error("%s", UPGRADED)
            _Process.stopping = True
        if _Process.stopping:
            # refused before the others load: the old addons' stop goes on, and no generation serves
            raise exceptions.OptionsError("ccswitch is stopping: start it again to run it")

    def done(self) -> None:
        # sync: mitmproxy calls it from synchronous code when it reloads or drops the script
        if stopping():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # a reload registers the new addons in the same step as it removes these: look once it is over
        loop.call_soon(still_serving, ctx.master, ctx.options.ccswitch_shutdown_grace)


def still_serving(master, grace: float) -> None:
    """After ccswitch's addons were taken out: stop the proxy unless new ones serve."""
    if master.should_exit.is_set() or master.addons.get(SERVING_ADDON) is not None:
        return
    if not _Process.stopping:
        _Process.stopping = True
        log.error("ccswitch: mitmproxy unloaded ccswitch while running on (its script file went missing or "
                  "failed to load, as during an upgrade in place): stopping rather than passing requests "
                  "on unrouted, with exit status 1 so that a supervisor starts it again")
    if master.addons.get("closing") is not None:      # a second generation dropped: stopping already
        return
    if type(master).__module__.startswith("mitmproxy.tools."):   # mitmdump, mitmweb: not a test's master
        atexit.register(exit_failed)
    master.addons.add(Closing())     # meanwhile nothing passes on unrouted
    hold_until_stopped(master, grace + ENDING_WAIT + 30)


class Closing:
    """Stands in for ccswitch while the proxy stops after an unload (its requests in flight get
    their grace): every new request, and every CONNECT, gets a 503 in its API's shape."""

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._refuse(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        self._refuse(flow)

    @staticmethod
    def _refuse(flow: http.HTTPFlow) -> None:
        if flow.response is None:
            answer_error(flow, likely_protocol(flow.request), 503, CLOSING,
                         {"retry-after": RETRY_AFTER, "connection": "close"})


def hold_until_stopped(master, wait: float) -> None:
    """Stop mitmproxy once ccswitch's own stop (requests in flight, the ledger's last rows) is over,
    `wait` seconds at most: mitmproxy awaits it at a stop, but not after dropping the script."""
    async def stop() -> None:
        others = [task for task in pending() if task is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=wait)
        master.shutdown()
    hook_task(stop(), "stop after unload")


def exit_failed() -> None:
    """mitmdump exits 0 after a shutdown; this runs once it has stopped and its threads ended."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
