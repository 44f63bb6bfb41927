"""Outgoing proxies: the `proxy:` text, and the HTTP client through loopback HTTP CONNECT and
SOCKS5 proxies that count their tunnels and record the credentials and targets they saw."""

from __future__ import annotations

import asyncio
import re
import ssl
from contextlib import asynccontextmanager

import pytest

from ccswitch.dial.outcome import network_failure
from ccswitch.net import http1
from ccswitch.net.proxy import Proxy, parse_proxy
from tests.support.mock_upstream import MockUpstream
from tests.support.tunnel_proxies import ConnectProxy, Socks5Proxy

SECRET = "pa55-word-never-shown"

# ---------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, expected", [
    ("direct", None),
    (" DIRECT ", None),
    ("http://127.0.0.1:3128", Proxy("http", "127.0.0.1", 3128)),
    ("socks5://proxy.lan:1080", Proxy("socks5", "proxy.lan", 1080)),
    ("socks5h://me:pw@127.0.0.1:1080/", Proxy("socks5h", "127.0.0.1", 1080, "me", "pw")),
    ("http://me@[::1]:8080", Proxy("http", "::1", 8080, "me", "")),
    ("http://a%40b:p%3As@h:1", Proxy("http", "h", 1, "a@b", "p:s")),
])
def test_proxy_urls_parse(text, expected):
    assert parse_proxy(text) == expected


@pytest.mark.parametrize("text, message", [
    ("https://u:SECRETPW@h:1", "not supported"),
    ("ftp://u:SECRETPW@h:1", "must be direct or a URL"),
    ("socks5://u:SECRETPW@h", "port"),
    ("socks5://u:SECRETPW@h:1/path", "path"),
    ("socks5://u:SECRETPW@h:99999", "the port must be a number from 1 to 65535"),
    ("socks5://u:SECRETPW@h:0", "the port must be a number from 1 to 65535"),
    ("http://u:SECRETPW@h:00", "the port must be a number from 1 to 65535"),
    ("http://u:SECRETPW@h:http", "the port must be a number from 1 to 65535"),
    ("ftp://u:SECRETPW@h:0", "must be direct or a URL"),
    ("socks5://u@h:1", "both a user name and a password"),
    ("http://:SECRETPW@h:1", "password without a user name"),
    ("http://u:SECRETPW\u00e9@h:1", "printable ASCII"),
    ("h:1", "must be direct or a URL"),
    # a reserved character left in the password: the URL ends there, and what follows `:` is no port
    ("http://u:SECRETPW#x@h:1", "'#' in the user name or password must be percent-encoded"),
    ("http://u:SECRETPW/x@h:1", "must be percent-encoded \\(%2F, %3F, %23\\)"),
    ("http://h:abc/x", "the port must be a number from 1 to 65535"),
    ("http://u:1234#SECRETPW@h:1", "must be percent-encoded"),          # digits before the `#`
    ("http://us/er:SECRETPW@h:1", "must be percent-encoded"),           # in the user name
])
def test_bad_proxy_urls_are_refused_without_repeating_them(text, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_proxy(text)
    assert "SECRETPW" not in str(caught.value)


def test_a_password_that_is_not_printable_ascii_is_refused_saying_how_to_write_every_reserved_character():
    """Written in the file itself, `%`, `?` and `#` must be percent-encoded too (a ${VAR} goes in as it is)."""
    with pytest.raises(ValueError) as caught:
        parse_proxy("http://u:SECRETPW\u00e9@h:1")
    assert "percent-encode % @ : / ? # as %25 %40 %3A %2F %3F %23" in str(caught.value)


def test_a_proxy_prints_without_its_credentials():
    proxy = parse_proxy(f"socks5h://user:{SECRET}@127.0.0.1:1080")
    assert proxy.shown == "socks5h://127.0.0.1:1080" and parse_proxy("http://u:p@[::1]:1").shown == "http://[::1]:1"
    for text in (str(proxy), repr(proxy), f"{proxy}", repr([proxy])):
        assert SECRET not in text and "user" not in text
    assert proxy.password == SECRET and proxy.resolves_names and not parse_proxy("socks5://h:1").resolves_names


# ---------------------------------------------------------------------- through the proxies

@asynccontextmanager
async def client(**kw):
    c = http1.UpstreamClient(**kw)
    try:
        yield c
    finally:
        await c.aclose()


async def post(c: http1.UpstreamClient, url: str, via: http1.Via, **kw) -> tuple[int, bytes]:
    body = b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'
    response = await c.send("POST", url + "/v1/messages", [("content-type", "application/json")], body,
                            via=via, **kw)
    return response.status_code, await response.aread()


def via(text: str, upstream: str | None = "up") -> http1.Via:
    return http1.Via(parse_proxy(text), upstream)


@pytest.fixture
def upstream():
    with MockUpstream("U") as up:
        yield up


@pytest.mark.parametrize("kind, scheme", [(ConnectProxy, "http"), (Socks5Proxy, "socks5"), (Socks5Proxy, "socks5h")])
async def test_a_plain_http_upstream_through_each_proxy_with_its_credentials(upstream, kind, scheme):
    with kind(auth=("me", SECRET)) as proxy:
        async with client() as c:
            for _ in range(3):
                status, body = await post(c, upstream.base_url, via(proxy.url("me", SECRET, scheme)))
                assert status == 200 and b"Hello from mock U" in body
        assert proxy.tunnels == 1 and proxy.credentials == [("me", SECRET)]     # kept alive: one tunnel
        assert proxy.targets == [("127.0.0.1", upstream.port)]
    assert len(upstream.requests) == 3 and upstream.connections_accepted == 1
    assert upstream.last().headers["host"] == f"127.0.0.1:{upstream.port}"   # origin-form through a tunnel


@pytest.mark.parametrize("answer", ["split", "bare_lf"])
async def test_a_connect_answer_in_two_segments_or_with_bare_line_feeds_opens_the_tunnel(upstream, answer):
    with ConnectProxy(**{answer: True}) as proxy:
        async with client() as c:
            status, body = await post(c, upstream.base_url, via(proxy.url()))
    assert status == 200 and b"Hello from mock U" in body and proxy.tunnels == 1


def test_a_short_proxy_login_is_scrubbed_where_it_stands_as_a_word_only():
    from ccswitch.net.proxy import scrub
    proxy = parse_proxy("http://u:pw@127.0.0.1:3128")
    assert scrub("407 Proxy Authentication Required for u (pw)", proxy) == \
        "407 Proxy Authentication Required for *** (***)"


async def test_a_short_proxy_login_is_not_scrubbed_out_of_the_words_around_it():
    with ConnectProxy(auth=("u", "p")) as proxy:
        async with client() as c:
            with pytest.raises(http1.ProxyFailure) as caught:
                await post(c, "http://127.0.0.1:9", via(proxy.url("u", "wrong")))
    assert "407 Proxy Authentication Required" in str(caught.value)


async def test_a_407_of_a_proxy_that_offers_no_basic_login_says_what_it_asks_for():
    # a company's NTLM/Negotiate proxy looked like a wrong password
    with ConnectProxy(auth=("u", "p"), schemes=("NTLM", "Negotiate")) as proxy:
        async with client() as c:
            with pytest.raises(http1.ProxyFailure) as caught:
                await post(c, "http://127.0.0.1:9", via(proxy.url("DOMAIN%5Cu", "p")))
    assert str(caught.value).endswith("authentication failed (407 Proxy Authentication Required): it asks for "
                                      "NTLM, Negotiate, and ccswitch logs in to a proxy with Basic only")
    for schemes in (('Basic realm="test"',), ('Negotiate, Basic realm="corp", charset="UTF-8"',)):
        with ConnectProxy(auth=("u", "p"), schemes=schemes) as proxy:
            async with client() as c:
                with pytest.raises(http1.ProxyFailure) as caught:
                    await post(c, "http://127.0.0.1:9", via(proxy.url("u", "wrong")))
        assert str(caught.value).endswith("authentication failed (407 Proxy Authentication Required)")


@asynccontextmanager
async def tls_upstream(directory):
    """An HTTPS server for `localhost` (self-signed): its URL and the client TLS context trusting it."""
    from tests.support.helpers import localhost_tls_server_context
    context, cert = localhost_tls_server_context(directory)
    served = []

    async def serve(reader, writer):
        served.append(writer)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nthru-ok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield f"https://localhost:{server.sockets[0].getsockname()[1]}", ssl.create_default_context(cafile=str(cert))
    finally:
        for writer in served:
            writer.transport.abort()
        server.close()


@pytest.mark.parametrize("kind, scheme", [(ConnectProxy, "http"), (Socks5Proxy, "socks5h")])
async def test_an_https_upstream_through_a_proxy_is_verified_end_to_end(tmp_path, kind, scheme):
    async with tls_upstream(tmp_path) as (url, trusting):
        with kind(auth=("me", SECRET)) as proxy:
            async with client(ssl_context=trusting) as c:
                assert await post(c, url, via(proxy.url("me", SECRET, scheme))) == (200, b"thru-ok")
                assert await post(c, url, via(proxy.url("me", SECRET, scheme))) == (200, b"thru-ok")
            assert proxy.tunnels == 1 and proxy.targets == [("localhost", int(url.rsplit(":", 1)[1]))]
            async with client() as c:       # the proxy does not stand in for the upstream's certificate
                with pytest.raises(http1.ConnectError) as caught:
                    await post(c, url, via(proxy.url("me", SECRET, scheme)))
            reason = network_failure("u", caught.value, "switch", "first_byte").reason
            assert re.fullmatch(r"TLS error: certificate verify failed: self[- ]signed certificate", reason)


async def test_socks5h_sends_the_name_and_socks5_resolves_it_here(upstream):
    name_url = f"http://relay.test:{upstream.port}"          # a name only the proxy knows
    with Socks5Proxy(aliases={"relay.test": "127.0.0.1"}) as proxy:
        async with client() as c:
            assert (await post(c, name_url, via(proxy.url(scheme="socks5h"))))[0] == 200
            with pytest.raises(http1.ProxyFailure, match="cannot resolve the upstream's name here"):
                await post(c, name_url, via(proxy.url(scheme="socks5")))
        assert proxy.targets == [("relay.test", upstream.port)]    # the name went to the proxy, once
    assert upstream.last().headers["host"] == f"relay.test:{upstream.port}"


async def test_connections_are_pooled_per_proxy_and_origin(upstream):
    with ConnectProxy() as one, Socks5Proxy() as two, MockUpstream("V") as other:
        async with client() as c:
            for _ in range(2):
                for route in (via(one.url()), via(two.url()), http1.Via(None, "up")):
                    for origin in (upstream, other):
                        assert (await post(c, origin.base_url, route))[0] == 200
            assert c.connection_counts() == {"up": (6, 0)}
        assert one.tunnels == 2 and two.tunnels == 2                # one per origin, each reused
    assert upstream.connections_accepted == 3 and other.connections_accepted == 3


async def test_a_proxy_that_refuses_is_a_proxy_failure_naming_no_credentials(upstream):
    port = MockUpstream.closed_port()
    async with client() as c:
        with pytest.raises(http1.ProxyFailure) as caught:
            await post(c, upstream.base_url, via(f"socks5://me:{SECRET}@127.0.0.1:{port}"))
    message = str(caught.value)
    assert message == f"proxy socks5://127.0.0.1:{port}: cannot connect to the proxy (Connection refused)"
    assert network_failure("u", caught.value, "switch", "first_byte").reason == message
    assert c.connection_counts() == {"up": (0, 0)} and upstream.requests == []


@pytest.mark.parametrize("kind, scheme", [(ConnectProxy, "http"), (Socks5Proxy, "socks5")])
async def test_a_wrong_password_is_an_authentication_failure_naming_no_credentials(upstream, kind, scheme):
    with kind(auth=("me", "right-one")) as proxy:
        async with client() as c:
            with pytest.raises(http1.ProxyFailure) as caught:
                await post(c, upstream.base_url, via(proxy.url("me", SECRET, scheme)))
        assert proxy.credentials == [("me", SECRET)] and proxy.tunnels == 0
    message = str(caught.value)
    assert message.startswith(f"proxy {scheme}://127.0.0.1:{proxy.port}: authentication failed")
    assert SECRET not in message and "me:" not in message and upstream.requests == []


@pytest.mark.parametrize("kind, scheme, why", [(ConnectProxy, "http", "502 Bad Gateway"),
                                               (Socks5Proxy, "socks5", "Connection refused by destination host")])
async def test_a_proxy_that_cannot_reach_the_upstream(kind, scheme, why):
    with kind() as proxy:
        async with client() as c:
            with pytest.raises(http1.ProxyFailure) as caught:
                await post(c, f"http://127.0.0.1:{MockUpstream.closed_port()}", via(proxy.url(scheme=scheme)))
    assert str(caught.value) == f"proxy {scheme}://127.0.0.1:{proxy.port}: {why}"


@pytest.mark.parametrize("kind, scheme, auth", [(ConnectProxy, "http", None), (Socks5Proxy, "socks5", None),
                                                (ConnectProxy, "http", ("me", SECRET)),
                                                (Socks5Proxy, "socks5", ("me", SECRET))])
async def test_only_a_refusal_of_the_rules_credentials_is_a_lasting_failure(upstream, kind, scheme, auth):
    # a wrong password fails the client's retry as well (told not to retry); a proxy that cannot
    # reach the upstream (or is down) may do better on the next try, and is no lasting failure
    with kind(auth=("me", "right-one")) as refusing, kind() as unreaching:
        async with client() as c:
            if auth is not None:
                target, route = upstream.base_url, via(refusing.url(*auth, scheme))
            else:
                target, route = f"http://127.0.0.1:{MockUpstream.closed_port()}", via(unreaching.url(scheme=scheme))
            with pytest.raises(http1.ProxyFailure) as caught:
                await post(c, target, route)
    failure = network_failure("u", caught.value, "switch", "connect")
    assert caught.value.credentials is (auth is not None) and failure.lasting is (auth is not None)


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_a_silent_proxy_is_a_connect_timeout_naming_it(scheme):
    import socket
    with socket.create_server(("127.0.0.1", 0)) as silent:      # accepts, never answers
        port = silent.getsockname()[1]
        async with client() as c:
            with pytest.raises(http1.ConnectTimeout, match=f"through proxy {scheme}://127.0.0.1:{port} timed out") \
                    as caught:
                await post(c, "http://127.0.0.1:9", via(f"{scheme}://me:{SECRET}@127.0.0.1:{port}"),
                           connect_timeout=0.2)
            assert c.connection_counts() == {"up": (0, 0)}
    # what the ledger, the flow's comment and the client read: not the upstream's own silence
    failure = network_failure("up", caught.value, "failover", "connect")
    assert failure.reason == f"connect timeout (through proxy {scheme}://127.0.0.1:{port})"


@pytest.mark.parametrize("status", [b"407 Denied", b"502 Bad"])
async def test_a_proxy_quoting_its_proxy_authorization_back_names_no_credentials(status):
    # the login goes as HTTP Basic: base64 of user:password, which a proxy's refusal may quote whole
    async def quoting(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        quoted = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"proxy-authorization:"))
        writer.write(b"HTTP/1.1 " + status + b" " + quoted + b"\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(quoting, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with client() as c:
            with pytest.raises(http1.ProxyFailure) as caught:
                await post(c, "http://127.0.0.1:9", via(f"http://me:{SECRET}@127.0.0.1:{port}"))
    finally:
        server.close()
    import base64
    basic = base64.b64encode(f"me:{SECRET}".encode()).decode()
    assert basic not in str(caught.value) and SECRET not in str(caught.value)
    assert basic in Proxy("http", "h", 1, "me", SECRET).secrets()


@pytest.mark.parametrize("kind, scheme", [(ConnectProxy, "http"), (Socks5Proxy, "socks5")])
async def test_a_proxy_that_wants_a_login_the_rules_do_not_give_is_a_lasting_failure(upstream, kind, scheme):
    # a SOCKS proxy's "no acceptable authentication methods" read as a passing failure: the client
    # was told to retry, which no retry mends (an HTTP proxy's 407 already said not to)
    with kind(auth=("me", "right-one")) as proxy:
        async with client() as c:
            with pytest.raises(http1.ProxyFailure) as caught:
                await post(c, upstream.base_url, via(proxy.url(scheme=scheme)))
    assert caught.value.credentials and network_failure("u", caught.value, "switch", "connect").lasting
    assert str(caught.value).startswith(f"proxy {scheme}://127.0.0.1:{proxy.port}: authentication failed")


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_a_proxy_that_resets_the_connection_is_told_in_words_not_an_errno(upstream, scheme):
    # read "proxy http://127.0.0.1:PORT: [Errno 104] Connection reset by peer"
    import socket
    import struct
    import threading
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def reset_each():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(1024)       # the CONNECT, or SOCKS' greeting: then a reset, no answer
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
    threading.Thread(target=reset_each, daemon=True).start()
    try:
        async with client() as c:
            with pytest.raises(http1.ProxyFailure) as caught:
                await post(c, upstream.base_url, via(f"{scheme}://127.0.0.1:{port}"))
    finally:
        listener.close()
    assert str(caught.value) == (f"proxy {scheme}://127.0.0.1:{port}: the connection to the proxy failed "
                                 "(Connection reset by peer)")


@pytest.mark.parametrize("value,shown,suggestion", [
    ("http://alice:s3cret@proxy.corp:3128/", "http://proxy.corp:3128", "http://USER:${VAR}@proxy.corp:3128"),
    ("proxy.corp:3128", "http://proxy.corp:3128", "http://proxy.corp:3128"),
    ("https://proxy.corp", "https://proxy.corp", "http://proxy.corp:PORT"),
    ("socks5h://[::1]:1080", "socks5h://[::1]:1080", "socks5h://[::1]:1080"),
    (" HTTP://Proxy.Corp:8080 ", "http://proxy.corp:8080", "http://proxy.corp:8080")])
def test_a_proxy_another_program_s_environment_names_is_told_as_the_rules_would_name_it(value, shown, suggestion):
    from ccswitch.net.proxy import named_proxy
    proxy = named_proxy(value)
    assert (proxy.shown, proxy.suggestion) == (shown, suggestion)


@pytest.mark.parametrize("value", ["", "socks4://proxy:1080", "http://proxy:99999", "http://pro\nxy:3128", "http://:3128"])
def test_a_proxy_value_ccswitch_cannot_use_or_read_names_nothing(value):
    from ccswitch.net.proxy import named_proxy
    assert named_proxy(value) is None
