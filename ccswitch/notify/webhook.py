"""Posting one event to one hook: a single POST bounded by the hook's timeout (`post_once`),
the same with the retry policy (`deliver`), and a test event to every hook (`send_test`).

A hook URL often carries a token in its path or query (Slack, Discord): only its host ever
reaches a log line or a result."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from ccswitch.config.models import NotifyHook, Rules
from ccswitch.dial.outcome import transport_text
from ccswitch.net import http1
from ccswitch.notify.payload import TEST_EVENT, render
from ccswitch.notify.retry import RetryPolicy, delivered
from ccswitch.routing.events import Event

log = logging.getLogger("ccswitch.notify")

# a hook's status is its answer; its body is only read to its end so that the connection can be kept,
# for a second at most: a body slower than that costs the connection, never the notification a retry
_BODY_WAIT = 1.0


def hook_host(hook: NotifyHook) -> str:
    """host[:port] of the hook's URL: what logs and results name it by."""
    parts = urlsplit(hook.url.get_secret_value())
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host


@dataclass(frozen=True)
class Delivery:
    host: str
    status: int | None            # None: no answer (network error, timeout, refused)
    error: str | None = None      # why there was no answer
    attempts: int = 1
    headers: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return delivered(self.status)

    @property
    def outcome(self) -> str:
        """`ok (HTTP 200)`, `failed (HTTP 500)`, `failed (no answer within 5s)`, with the tries."""
        tries = f" after {self.attempts} tries" if self.attempts > 1 else ""
        if self.ok:
            return f"ok (HTTP {self.status}){tries}"
        said = f"HTTP {self.status}" if self.status is not None else self.error or "no answer"
        return f"failed ({said}){tries}"

    def describe(self) -> str:
        return f"{self.host}: {self.outcome}"


def without_login(url: str) -> tuple[str, str | None]:
    """(the URL without a `user:password@`, that login as an HTTP Basic `authorization` value):
    a login in a hook's URL is sent, as curl sends it, not dropped."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    login = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
    return (urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])),
            "Basic " + base64.b64encode(login).decode())


def _safe(text: str, url: str) -> str:
    """An error text without the URL's path and query (where tokens live)."""
    parts = urlsplit(url)
    for secret in (url, parts.path + (f"?{parts.query}" if parts.query else ""), parts.query):
        if len(secret) > 1:
            text = text.replace(secret, "<hook url>")
    return text


class WebhookPoster:
    """POSTs through ccswitch's own HTTP client, asking `allow_url` first like the dialer."""

    def __init__(self, client: http1.UpstreamClient, *, allow_url: Callable[[str], bool] = lambda url: True,
                 policy: RetryPolicy | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.client = client
        self.allow_url = allow_url
        self.policy = RetryPolicy() if policy is None else policy
        self.sleep = sleep

    async def post_once(self, hook: NotifyHook, content_type: str, body: bytes) -> Delivery:
        url, host = hook.url.get_secret_value(), hook_host(hook)
        if not self.allow_url(url):
            return Delivery(host, None, "refused by the URL guard")
        headers = [("content-type", content_type), ("user-agent", "ccswitch")]
        url, login = without_login(url)
        if login is not None:
            headers.append(("authorization", login))
        try:
            async with asyncio.timeout(hook.timeout):
                response = await self.client.send("POST", url, headers, body, connect_timeout=hook.timeout)
        except TimeoutError:
            return Delivery(host, None, f"no answer within {hook.timeout:g}s")
        except (http1.TransportError, OSError) as exc:     # as the attempts table says it: `connection refused`
            return Delivery(host, None, _safe(transport_text(exc), url))
        except ValueError as exc:
            return Delivery(host, None, _safe(f"{type(exc).__name__}: {exc}", url))
        await _let_go(response, min(hook.timeout, _BODY_WAIT))
        return Delivery(host, response.status_code, headers=tuple(response.headers))

    async def deliver(self, hook: NotifyHook, event: Event, secrets: list[str]) -> Delivery:
        """Post with retries; never raises (a hook is someone else's server)."""
        content_type, body = render(event, hook.format, secrets)
        attempt = 0
        while True:
            attempt += 1
            result = await self.post_once(hook, content_type, body)
            wait = self.policy.wait_before(attempt, result.status, list(result.headers))
            if wait is None:
                result = Delivery(result.host, result.status, result.error, attempt)
                if not result.ok:
                    about = event.upstream or (event.client and f"client {event.client}")
                    log.warning("ccswitch: notification %s%s to %s: %s", event.kind,
                                f" ({about})" if about else "", result.host, result.outcome)
                return result
            await self.sleep(wait)


async def _let_go(response: http1.Response, wait: float) -> None:
    """Done with an answer whose status is all that counts: its body's end is awaited up to `wait`
    (the connection goes back to the pool), past that, or cut short, the connection is closed."""
    try:
        with contextlib.suppress(OSError):      # a reset: the answer was had all the same
            await response.finish(wait)
    finally:
        await response.aclose()


def sample_event() -> Event:
    return Event(kind=TEST_EVENT, upstream=None,
                 reason="a test notification: this hook receives ccswitch's events")


def hook_lines(rules: Rules, results: list[Delivery]) -> list[str]:
    """One line per hook, told apart by position and format where two share a host:
    `hook 2 (slack) hooks.slack.com: ok (HTTP 200)`."""
    return [f"hook {i} ({hook.format}) {result.describe()}"
            for i, (hook, result) in enumerate(zip(rules.notify, results), 1)]


async def send_test(poster: WebhookPoster, rules: Rules) -> list[Delivery]:
    """One test event to every hook at once, each tried once: its result, as it is now."""
    secrets = rules.secret_texts()
    event = sample_event()

    async def one(hook: NotifyHook) -> Delivery:
        content_type, body = render(event, hook.format, secrets)
        return await poster.post_once(hook, content_type, body)

    return list(await asyncio.gather(*(one(hook) for hook in rules.notify)))
