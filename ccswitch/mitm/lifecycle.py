"""The `running` and `done` hooks that need to wait: mitmproxy awaits them at start and stop, but
calls them from synchronous code when it reloads the script (an edit of addon.py, or an upgrade
rewriting it), where a coroutine function is refused and ends mitmproxy's script watcher.  So they
are plain functions starting a task: a `done` hook returns it, to be awaited at stop and left to run
on a reload; a `running` hook does not (mitmproxy's own addons after the scripts get their
`running` only after it, and the listeners are open meanwhile)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from mitmproxy import ctx, exceptions

log = logging.getLogger("ccswitch")

_running: set[asyncio.Task] = set()   # held until done: the loop keeps only weak references


def hook_task(work: Coroutine[Any, Any, None], name: str) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(work, name=f"ccswitch-{name}")
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def pending() -> list[asyncio.Task]:
    """The hook tasks still running on this loop (a stop's: requests in flight, the ledger's last rows)."""
    loop = asyncio.get_running_loop()
    return [task for task in _running if not task.done() and task.get_loop() is loop]


def _finished(task: asyncio.Task) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:   # awaited or not, it is told once
        log.error("ccswitch: %s failed: %r", task.get_name(), task.exception(), exc_info=task.exception())


def stopping() -> bool:
    """Whether mitmproxy itself is stopping (not merely reloading the script)."""
    return ctx.master.should_exit.is_set()


class RefusalsAsMessages(logging.Filter):
    """mitmproxy logs an option refused while the script loads (loopback, stream_large_bodies,
    invalid rules) with a traceback, as if ccswitch had crashed; a refusal is a message saying
    what to change, so it is logged as one."""

    def filter(self, record: logging.LogRecord) -> bool:
        refusal = record.exc_info[1] if record.exc_info else None
        if isinstance(refusal, exceptions.OptionsError):
            record.msg, record.args = "%s", (str(refusal),)
            record.exc_info, record.exc_text = None, None
        return True


def log_refusals_as_messages() -> None:
    script_log = logging.getLogger("mitmproxy.addons.script")
    if not any(isinstance(f, RefusalsAsMessages) for f in script_log.filters):   # once, over reloads
        script_log.addFilter(RefusalsAsMessages())


def take_given_values(options) -> None:
    """Parse now the values given for the options just declared (`--set ccswitch_max_body=…`).
    mitmproxy parses them only once the whole script has loaded, and a value it cannot parse
    then leaves the script out without a word: mitmproxy would run on without ccswitch, passing
    every request on unrouted, client keys and all.  A bad value logged as an error here stops
    mitmdump and mitmweb at start (their start-up error check)."""
    try:
        options.process_deferred()
    except exceptions.OptionsError as exc:   # mitmproxy's message names the option and the value
        log.error("ccswitch cannot start: %s", exc)
