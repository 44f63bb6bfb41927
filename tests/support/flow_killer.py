"""A test's stand-in for mitmweb's kill button: a flow whose request carries
`x-test-kill-after: SECONDS` is killed that long after its head came (`flow.kill()`, as mitmweb
does it: no hook tells an addon).  Loaded beside the addon (`-s`) by the tests that use it."""

import asyncio

from mitmproxy import http


class FlowKiller:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        after = flow.request.headers.get("x-test-kill-after")
        if after:
            asyncio.get_running_loop().call_later(float(after), self._kill, flow)

    @staticmethod
    def _kill(flow: http.HTTPFlow) -> None:
        if flow.killable:
            flow.kill()


addons = [FlowKiller()]
