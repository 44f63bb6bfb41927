"""One POST and its retries, against a real loopback receiver through ccswitch's own client."""

import asyncio
import time

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.config.models import NotifyHook
from ccswitch.net.http1 import UpstreamClient
from ccswitch.notify.retry import RetryPolicy
from ccswitch.notify.webhook import Delivery, WebhookPoster, hook_host, send_test
from ccswitch.routing.events import Event
from tests.support.helpers import KEY_A
from tests.support.webhook_receiver import WebhookReceiver

TOKEN = "T0KEN-in-the-path"
EVENT = Event(kind="cooldown", upstream="relay-a", reason=f"HTTP 401 for {KEY_A}", episode="1")


@pytest.fixture
async def client():
    client = UpstreamClient()
    yield client
    await client.aclose()


class Sleeps:
    def __init__(self):
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def hook(receiver: WebhookReceiver, **fields) -> NotifyHook:
    return NotifyHook(url=receiver.url(f"/hook/{TOKEN}?token={TOKEN}"), **fields)


def test_a_hook_is_named_by_its_host_only():
    assert hook_host(NotifyHook(url=f"https://hooks.example.com/services/{TOKEN}")) == "hooks.example.com"
    assert hook_host(NotifyHook(url=f"http://user:{TOKEN}@127.0.0.1:9000/x?t={TOKEN}")) == "127.0.0.1:9000"


async def test_a_post_reaches_the_hook_with_its_format(client):
    with WebhookReceiver() as receiver:
        result = await WebhookPoster(client).deliver(hook(receiver, format="slack"), EVENT, [KEY_A])
        assert result == Delivery(f"127.0.0.1:{receiver.port}", 200)
        assert result.describe() == f"127.0.0.1:{receiver.port}: ok (HTTP 200)"
        [got] = receiver.received
    assert got.path == f"/hook/{TOKEN}?token={TOKEN}"
    assert got.headers["content-type"] == "application/json"
    assert got.json()["text"].startswith("ccswitch cooldown: relay-a: HTTP 401 for [redacted]")


async def test_a_login_in_the_hook_url_is_sent_as_basic_authentication_not_dropped(client):
    import base64
    with WebhookReceiver() as receiver:
        url = receiver.url(f"/hook?token={TOKEN}").replace("://", "://ops%40team:pw%3Asecret@", 1)
        result = await WebhookPoster(client).deliver(NotifyHook(url=url), EVENT, [KEY_A])
        [got] = receiver.received
    assert result.status == 200 and got.path == f"/hook?token={TOKEN}"
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"ops@team:pw:secret").decode()
    assert "secret" not in result.describe()


async def test_a_500_is_retried_with_backoff_then_reported(client, caplog):
    sleeps = Sleeps()
    with WebhookReceiver(status=500) as receiver:
        poster = WebhookPoster(client, policy=RetryPolicy(attempts=3, first_wait=1.0), sleep=sleeps)
        result = await poster.deliver(hook(receiver), EVENT, [])
        assert len(receiver.received) == 3
    assert (result.status, result.attempts, result.ok) == (500, 3, False)
    assert sleeps.waits == [1.0, 2.0]
    assert "failed (HTTP 500) after 3 tries" in caplog.text
    assert TOKEN not in caplog.text


async def test_a_failed_client_budget_notification_names_the_client_in_the_log(client, caplog):
    # an upstream's said "(relay-a)"; a client key's said nothing of whose budget it was
    about_carol = Event("budget", None, "client carol reached its daily budget ($0.0070 of $0.0060)", client="carol")
    with WebhookReceiver(status=404) as receiver:
        await WebhookPoster(client, sleep=Sleeps()).deliver(hook(receiver), about_carol, [])
    assert "notification budget (client carol) to 127.0.0.1" in caplog.text


async def test_a_final_4xx_is_not_retried(client):
    with WebhookReceiver(status=404) as receiver:
        result = await WebhookPoster(client, sleep=Sleeps()).deliver(hook(receiver), EVENT, [])
        assert len(receiver.received) == 1
    assert (result.status, result.attempts) == (404, 1)


async def test_a_hanging_hook_times_out_within_its_timeout(client):
    with WebhookReceiver(hang=True) as receiver:
        began = time.monotonic()
        result = await WebhookPoster(client).post_once(hook(receiver, timeout=0.3), "text/plain", b"x")
        took = time.monotonic() - began
    assert result.status is None and result.error == "no answer within 0.3s"
    assert took < 2.0


async def answering_200_then(body_end: bytes | None):
    """A hook that answers 200 with 20 bytes of body announced and two sent, then, after a
    moment, `body_end` (None: closes the connection, the body cut short); the POSTs it got."""
    posts: list[bytes] = []

    async def answer(reader, writer):
        posts.append(await reader.read(65536))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(5 if body_end is not None else 0.05)
        if body_end is not None:
            writer.write(body_end)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook/{TOKEN}", posts


@pytest.mark.parametrize("body_end", [b"-" * 18, None], ids=["slow", "cut short"])
async def test_a_200_is_delivered_once_however_its_body_comes(client, body_end):
    # a body slower than the timeout made the 200 "no answer within 0.3s", and the hook got it 4 times
    server, url, posts = await answering_200_then(body_end)
    try:
        began = time.monotonic()
        result = await WebhookPoster(client, sleep=Sleeps()).deliver(NotifyHook(url=url, timeout=0.3), EVENT, [])
        took = time.monotonic() - began
    finally:
        server.close()
    assert (result.status, result.attempts, len(posts)) == (200, 1, 1)
    assert took < 2.0


async def test_an_unreachable_hook_is_a_network_error_without_the_url(client, caplog):
    from tests.support.mock_upstream import MockUpstream
    port = MockUpstream.closed_port()
    dead = NotifyHook(url=f"http://127.0.0.1:{port}/hook/{TOKEN}")
    sleeps = Sleeps()
    result = await WebhookPoster(client, policy=RetryPolicy(attempts=2), sleep=sleeps).deliver(dead, EVENT, [])
    assert result.status is None and result.attempts == 2 and sleeps.waits == [1.0]
    assert result.error == "connection refused" and TOKEN not in result.error
    assert TOKEN not in caplog.text and f"127.0.0.1:{port}" in caplog.text


async def test_the_url_guard_is_asked_first(client):
    with WebhookReceiver() as receiver:
        poster = WebhookPoster(client, allow_url=lambda url: False, sleep=Sleeps())
        result = await poster.deliver(hook(receiver), EVENT, [])
        assert receiver.received == []
    assert result.error == "refused by the URL guard" and not result.ok


async def test_send_test_reaches_every_hook_once_and_reports_each(client):
    with WebhookReceiver() as good, WebhookReceiver(status=500) as bad:
        rules = parse_rules(f"""
notify:
  - {{url: '{good.url()}', events: [cooldown]}}
  - {{url: '{bad.url()}', format: text}}
""")
        results = await send_test(WebhookPoster(client), rules)
        assert [r.status for r in results] == [200, 500]
        assert len(good.received) == 1 and len(bad.received) == 1   # tried once: the result as it is now
        assert good.received[0].json()["event"] == "test"
        assert bad.received[0].body.startswith(b"ccswitch test: ")


async def test_a_429_s_retry_after_sets_the_wait_before_the_next_try(client):
    sleeps = Sleeps()
    with WebhookReceiver(status=429, headers={"retry-after": "7"}) as receiver:
        poster = WebhookPoster(client, policy=RetryPolicy(attempts=2, first_wait=1.0), sleep=sleeps)
        result = await poster.deliver(hook(receiver), EVENT, [])
        assert len(receiver.received) == 2
    assert (result.status, result.attempts) == (429, 2) and sleeps.waits == [7.0]


async def test_a_login_without_a_password_is_sent_too(client):
    import base64
    with WebhookReceiver() as receiver:
        url = receiver.url("/hook").replace("://", "://ops@", 1)
        result = await WebhookPoster(client).deliver(NotifyHook(url=url), EVENT, [KEY_A])
        [got] = receiver.received
    assert result.status == 200 and got.path == "/hook"
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"ops:").decode()


def test_an_error_quoting_the_hook_s_path_or_query_keeps_its_token_out():
    from ccswitch.notify.webhook import _safe
    url = f"http://127.0.0.1:9000/hook/{TOKEN}?token={TOKEN}"
    text = _safe(f"refused: POST /hook/{TOKEN}?token={TOKEN} HTTP/1.1 (token={TOKEN})", url)
    assert TOKEN not in text and "<hook url>" in text
