"""Python's garbage collector, tuned for a long-running gateway.

ccswitch brings a large heap of long-lived objects to mitmproxy's process (its modules, pydantic's
and the rules' models) and makes many short-lived ones per request.  With CPython's defaults a
full collection walks the whole startup heap again and again (about 0.1 s each with 1,000 streams
open, several per minute) and the young generation is collected every 700 new containers.  At the
first start, what startup built is frozen (`gc.freeze`: kept out of every collection; it lives as
long as the process anyway), and while running the young generation is collected less often:
with 1,000 concurrent streams the collector's time fell from about 0.9 s to 0.3 s, what bare
mitmproxy spends.

The freeze happens once per process, before any request: frozen objects that later become cyclic
garbage are never collected, so freezing again at a script reload or when the option is turned
back on would keep the requests in flight at that moment forever.

Large bodies end as cyclic garbage too: mitmproxy type-checks a request's and a response's
fields (`bytes | None`) by catching a TypeError, whose traceback holds the frame holding the body,
so each flow's body outlives it until a collection that reaches it.  Those few objects do not
bring one on, while a body is megabytes: a run of pasted screenshots held a gigabyte.  So every
BODY_BUDGET bytes of bodies ended, the whole heap is collected once (milliseconds: startup's
objects are frozen), tuned or not.
"""

from __future__ import annotations

import asyncio
import gc

from mitmproxy import ctx, http

from ccswitch.mitm.lifecycle import take_given_values

YOUNG_THRESHOLD = 7000   # new containers between young collections (CPython's default: 700)
BODY_BUDGET = 32 * 1024 * 1024    # bytes of ended flows' bodies between two full collections

_startup_frozen = False   # per process: survives a reload of the script, which builds a new addon


class CollectorTuning:
    def __init__(self) -> None:
        self._running = False
        self._before: tuple[int, ...] | None = None   # the thresholds to give back
        self._bodies = 0     # bytes of bodies ended since the last full collection

    def load(self, loader) -> None:
        loader.add_option(
            "ccswitch_gc_tuning", bool, True,
            "Tune Python's garbage collector for a long-running proxy: at the first start, freeze "
            "what startup built, and collect the young generation every 7,000 new objects instead "
            "of 700 (less CPU per request and per stream).",
        )
        take_given_values(loader.master.options)    # declared after the router's: a bad value must stop the start too

    def running(self) -> None:
        self._running = True    # not before: what startup builds is only complete now
        if ctx.options.ccswitch_gc_tuning:
            self._tune(freeze=True)

    def configure(self, updated) -> None:
        if not self._running or "ccswitch_gc_tuning" not in updated:
            return
        if ctx.options.ccswitch_gc_tuning:
            self._tune(freeze=False)
        else:
            self._untune()
            gc.unfreeze()   # all of it (CPython starts with a few hundred frozen): collected as usual

    def response(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def _ended(self, flow: http.HTTPFlow) -> None:
        answer = flow.response.raw_content if flow.response is not None else None
        self._bodies += len(flow.request.raw_content or b"") + len(answer or b"")
        if self._bodies >= BODY_BUDGET and gc.get_threshold()[0]:    # (0: the user turned collection off)
            self._bodies = 0
            # once this flow, whose answer goes out after the hook, has let go of its body too
            asyncio.get_running_loop().call_later(0.1, gc.collect)

    def done(self) -> None:
        """The thresholds go back; what was frozen at the start stays so (a reload builds a new
        addon, which does not freeze again)."""
        self._running = False
        self._untune()

    def _tune(self, *, freeze: bool) -> None:
        global _startup_frozen
        if self._before is not None:
            return
        if freeze and not _startup_frozen:
            _startup_frozen = True
            gc.collect()    # garbage of the startup is freed, not frozen for good
            gc.freeze()
        self._before = gc.get_threshold()
        young, *older = self._before
        if young:   # 0: the user turned automatic collection off, and it stays off
            gc.set_threshold(max(young, YOUNG_THRESHOLD), *older)   # a user's higher setting stays

    def _untune(self) -> None:
        if self._before is not None:
            gc.set_threshold(*self._before)
            self._before = None
