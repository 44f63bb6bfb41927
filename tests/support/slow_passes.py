"""A test's stand-in for mitmproxy's passes after an answer taking long (a slow addon, a loaded
machine): each `update` pass of a flow that has an answer, but its first, waits half a second.
Loaded beside the addon (`-s`) by the tests that use it; it only reads flows."""

import asyncio
from collections import Counter

WAIT = 0.5


class SlowPasses:
    def __init__(self) -> None:
        self.passes: Counter[str] = Counter()

    async def update(self, flows) -> None:
        for flow in flows:
            if flow.response is not None:
                self.passes[flow.id] += 1
                if self.passes[flow.id] > 1:
                    await asyncio.sleep(WAIT)


addons = [SlowPasses()]
