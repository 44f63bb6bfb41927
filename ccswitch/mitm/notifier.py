"""mitmproxy glue for webhook notifications: the notifier listens on the gateway's event bus
from `running` to `done`; `ccswitch.notify.test` sends a test event to every hook."""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, exceptions

from ccswitch.mitm.commands import ccswitch_command
from ccswitch.mitm.gateway import UPSTREAM_TLS_OPTIONS, Gateway, upstream_tls
from ccswitch.mitm.lifecycle import hook_task
from ccswitch.net import http1
from ccswitch.notify.notifier import Notifier
from ccswitch.notify.webhook import Delivery, WebhookPoster, hook_lines, send_test

log = logging.getLogger("ccswitch.notify")

_FLUSH_AT_EXIT = 2.0   # seconds queued notifications get to go out when the proxy stops


class Notifications:
    """Posts the events the rules' `notify` hooks ask for, off the request path."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.client: http1.UpstreamClient | None = None
        self.poster: WebhookPoster | None = None
        self.notifier: Notifier | None = None
        self._tests: set[asyncio.Task] = set()

    def load(self, loader) -> None:
        loader.add_option("ccswitch_notify_settle", int, 30,
                          "An upstream back in cooldown within these seconds of a recovery the notify "
                          "hooks were told is flapping: its next recovery is told once it has lasted "
                          "this long, the cooldowns before then not at all (one outage, not a storm of "
                          "webhooks). 0: every one told as it comes.")

    def configure(self, updated) -> None:
        if "ccswitch_notify_settle" in updated and ctx.options.ccswitch_notify_settle < 0:
            raise exceptions.OptionsError("ccswitch_notify_settle must be 0 or more seconds")
        if self.client is not None and updated & UPSTREAM_TLS_OPTIONS:
            self.client.ssl_context = upstream_tls()

    def running(self) -> None:
        gateway = self.gateway
        self.client = http1.UpstreamClient(ssl_context=upstream_tls())
        # looked up per POST: tests install their loopback guard after this addon starts
        self.poster = WebhookPoster(self.client, allow_url=lambda url: gateway.allow_url(url))
        self.notifier = Notifier(lambda: gateway.rules, self.poster,
                                 claim=lambda name, until: gateway.state.claim(name, until),
                                 claim_state=lambda name, state, episode, absorbed: gateway.state.claim_state(
                                     name, state, episode, absorbed=absorbed),
                                 settle=lambda: ctx.options.ccswitch_notify_settle,
                                 cooling=lambda name: gateway.health.cooling_until(name) is not None,
                                 shared=lambda: gateway.state.shared)
        self.notifier.start()
        gateway.events.subscribe(self.notifier.offer)

    def done(self) -> asyncio.Task:
        return hook_task(self._stop(), "notifications stop")

    async def _stop(self) -> None:
        if self.notifier is not None:
            self.gateway.events.unsubscribe(self.notifier.offer)
            await self.notifier.aclose(_FLUSH_AT_EXIT)
        for task in list(self._tests):
            task.cancel()
        if self.client is not None:
            await self.client.aclose()

    @ccswitch_command("ccswitch.notify.test")   # mitmweb runs only names of [a-z.]
    def notify_test(self) -> str:
        """Send a test event to every notify hook now; each hook's result goes to the event log."""
        hooks = self.gateway.rules.notify
        if not hooks:
            raise exceptions.CommandError("the rules have no notify hooks")
        if self.poster is None:
            raise exceptions.CommandError("ccswitch is not running yet")
        task = asyncio.get_running_loop().create_task(self.run_test())
        self._tests.add(task)
        task.add_done_callback(self._tests.discard)
        return f"sending a test event to {len(hooks)} hook(s); each result goes to the event log"

    async def run_test(self) -> list[Delivery]:
        rules = self.gateway.rules
        results = await send_test(self.poster, rules)
        for result, line in zip(results, hook_lines(rules, results)):
            (log.info if result.ok else log.warning)("ccswitch notify test: %s", line)
        return results
