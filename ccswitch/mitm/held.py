"""mitmproxy's intercept (mitmweb's Intercept filter, `--set intercept=…`) on a routed flow.

ccswitch answers a routed request, or hands it to the relay with its job made, in its request
hook, and mitmproxy runs a script's hooks before its intercept addon's.  Left alone, a routed
flow would stop only once routed: what the user edited then never reached an upstream, and a
request filter (`~q`) stopped no non-streamed flow at all, its answer being there already.  So
the router stops such a flow itself, as the intercept addon would, and routes what the request
is once resumed; the intercept addon's stop of that same request, right after, is undone."""

from __future__ import annotations

import asyncio
import contextlib

from mitmproxy import ctx, hooks, http

from ccswitch.mitm.flow_ends import gone_meanwhile, killed
from ccswitch.mitm.flows import Hidden, comment_on

#: seconds between looks for a kill, which ends an intercept without waking `wait_for_resume`
KILL_CHECK = 0.1
#: a held flow's comment begins so: once it goes on, what happened replaces it
HELD_COMMENT = "ccswitch: held by the intercept"


class Holds:
    def __init__(self) -> None:
        self.let_go: set[str] = set()    # flows held here and let go: the intercept addon's next stop is undone

    @staticmethod
    def wanted(flow: http.HTTPFlow) -> bool:
        intercept = ctx.master.addons.get("intercept")
        return flow.intercepted or (intercept is not None and intercept.should_intercept(flow))

    async def hold(self, flow: http.HTTPFlow, plan: str = "") -> None:
        """Until the user resumes or kills the flow; meanwhile it shows its credentials as
        `<redacted>`, and those the user left so are the client's again once it goes on.  `plan`:
        what ccswitch will do with it, shown in its comment while it waits."""
        if plan:
            comment_on(flow, f"{HELD_COMMENT}; once resumed, {plan}")
        hidden = Hidden(flow.request)
        flow.intercept()
        ctx.master.addons.trigger(hooks.UpdateHook([flow]))    # mitmweb shows it stopped
        try:
            while flow.intercepted:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(flow.wait_for_resume(), KILL_CHECK)
        finally:
            self.let_go.add(flow.id)
        if not gone_meanwhile(flow):     # else it goes nowhere, and its keys stay hidden
            hidden.restore(flow.request)
        elif HELD_COMMENT in flow.comment:   # what it was going to do is not what became of it
            comment_on(flow, "ccswitch: killed while held by the intercept: sent nowhere" if killed(flow)
                       else "ccswitch: its client left while it was held by the intercept: sent nowhere")

    def update(self, flows) -> None:
        """mitmproxy's hook after each hook pass, before it waits on a stopped flow.  The intercept
        addon stops a flow let go here once more in that pass (the filter still matches it, pointed
        at the relay or answered): nothing edited then could reach an upstream, so it goes on."""
        for flow in flows:
            if flow.intercepted and flow.id in self.let_go:
                self.let_go.discard(flow.id)
                flow.resume()

    def forget(self, flow: http.HTTPFlow) -> None:
        self.let_go.discard(flow.id)
