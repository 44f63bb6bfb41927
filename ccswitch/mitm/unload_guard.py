"""What ccswitch does when mitmproxy reloads its script, or drops it, while the proxy runs on.

mitmproxy looks at a script's file once a second. When it has changed it loads it again, but that
re-runs only the entry (`addon.py`): the rest of the package stays the code the process started
with, so an upgrade in place is not running until a restart, and the log says so.  When the file
is missing at that moment (pip moves an old install aside before it writes the new one; pipx
builds a new venv; someone deleted addon.py), or the reloaded entry fails, mitmproxy goes on
without ccswitch: a plain proxy passing requests on unrouted, past ccswitch's client keys and
its loopback guard.  ccswitch then stops it, with exit status 1, so that a supervisor
(systemd's `Restart=on-failure`, launchd's `KeepAlive`) starts it again, on the new code."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
from pathlib import Path

from mitmproxy import ctx, http

from ccswitch.dial.shutdown import RETRY_AFTER
from ccswitch.mitm.flows import answer_error, likely_protocol
from ccswitch.mitm.lifecycle import hook_task, pending, stopping

log = logging.getLogger("ccswitch")

#: a file every install of the package rewrites: its change says the code on disk is not this process's
PACKAGE_MARK = Path(__file__).resolve().parent.parent / "__init__.py"
#: the addon whose presence means ccswitch is serving (mitmproxy names an addon by its class)
SERVING_ADDON = "router"
#: the longest a stop after an unload waits for ccswitch's own (its grace is 8 s by default)
STOP_WAIT = 120.0
_loaded_from: list[float | None] = []   # per process: the mark's time at the first load (a reload keeps this module)


def mark_time() -> float | None:
    try:
        return PACKAGE_MARK.stat().st_mtime
    except OSError:
        return None


class UnloadGuard:
    def load(self, loader) -> None:
        now = mark_time()
        if not _loaded_from:
            _loaded_from.append(now)
        elif now != _loaded_from[0]:
            log.warning("ccswitch: its package changed on disk since this process started (an upgrade?); "
                        "mitmproxy reloaded the entry, but the code running is still the one it started "
                        "with: restart ccswitch to run the new version")

    def done(self) -> None:
        # sync: mitmproxy calls it from synchronous code when it reloads or drops the script
        if stopping():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        master = ctx.master
        # a reload registers the new addons in the same step as it removes these: look once it is over
        loop.call_soon(self._still_serving, master)

    @staticmethod
    def _still_serving(master) -> None:
        if master.should_exit.is_set() or master.addons.get(SERVING_ADDON) is not None:
            return
        log.error("ccswitch: mitmproxy unloaded ccswitch while running on (its script file went missing or "
                  "failed to load, as during an upgrade in place): stopping rather than passing requests "
                  "on unrouted, with exit status 1 so that a supervisor starts it again")
        if type(master).__module__.startswith("mitmproxy.tools."):   # mitmdump, mitmweb: not a test's master
            atexit.register(exit_failed)
        master.addons.add(Closing())     # meanwhile nothing passes on unrouted
        hold_until_stopped(master)


#: what a request gets while the proxy stops after ccswitch was unloaded
CLOSING = "ccswitch was unloaded and the proxy is stopping (a restart brings it back)"


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


def hold_until_stopped(master) -> None:
    """Stop mitmproxy once ccswitch's own stop (requests in flight, the ledger's last rows) is over:
    mitmproxy awaits it at a stop, but not after dropping the script."""
    async def stop() -> None:
        others = [task for task in pending() if task is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=STOP_WAIT)
        master.shutdown()
    hook_task(stop(), "stop after unload")


def exit_failed() -> None:
    """mitmdump exits 0 after a shutdown; this runs once it has stopped and its threads ended."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
