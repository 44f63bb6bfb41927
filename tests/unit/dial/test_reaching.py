"""Reaching upstreams, in the attempt loop and the probes: a failing proxy fails over and counts,
a wait for a connection past `connect` fails over without counting, each upstream gets its own
cache-breakpoint shaping of the client's body, and activation probes use the proxy."""

from __future__ import annotations

import asyncio
import json

import pytest

from ccswitch.activation.probe import send_probe
from ccswitch.config.load import parse_rules
from ccswitch.dial.dialer import Dialer
from ccswitch.dial.render import render
from ccswitch.net import http1
from ccswitch.net.proxy import Proxy
from ccswitch.routing.health import HealthBoard
from ccswitch.wire.cache_breakpoints import count_cache_breakpoints
from tests.support.helpers import MemorySink, make_job
from tests.support.mock_upstream import MockUpstream, hang_before_headers, stall_after, status
from tests.support.tunnel_proxies import ConnectProxy, Socks5Proxy

PASSWORD = "s3cret-proxy-pw"
FAST = "timeouts: {connect: 300ms, first_byte: 3s, total: 3s, idle: 1s}\nfailover: {retry_backoff: 10ms}\n"


def rules_with(a_url: str, a_extra: str, b_url: str, protocol: str = "anthropic", route: str = "claude",
               head: str = ""):
    return parse_rules(f"""{head}{FAST}
upstreams:
  - {{name: a, protocol: {protocol}, base_url: '{a_url}', api_key: key-a{a_extra}}}
  - {{name: b, protocol: anthropic, base_url: '{b_url}', api_key: key-b}}
routes: {{{route}: [a, b]}}
""")


async def run(rules, body=None, path="/v1/messages", dialer=None):
    own = dialer is None
    dialer = dialer or Dialer(HealthBoard())
    job, sink = make_job(rules, path=path, body=body), MemorySink()
    try:
        await dialer.run(job, sink)
    finally:
        if own:
            await dialer.aclose()
    return job, sink, dialer


async def test_a_proxy_that_refuses_fails_over_and_counts(mock_a, mock_b):
    port = MockUpstream.closed_port()
    rules = rules_with(mock_a.base_url, f", proxy: 'http://me:{PASSWORD}@127.0.0.1:{port}'", mock_b.base_url)
    job, sink, dialer = await run(rules)
    assert sink.status == 200 and sink.headers["x-ccswitch-upstream"] == "b" and mock_a.requests == []
    error = job.attempts[0].error
    assert error == f"proxy http://127.0.0.1:{port}: cannot connect to the proxy (Connection refused)"
    assert dialer.health.get("a").failures == 1 and dialer.health.get("a").last_error == error
    assert PASSWORD not in job.comment()


async def test_a_wrong_proxy_password_fails_over_with_a_reason_without_it(mock_a, mock_b):
    with Socks5Proxy(auth=("me", "the-right-one")) as proxy:
        rules = rules_with(mock_a.base_url, f", proxy: '{proxy.url('me', PASSWORD)}'", mock_b.base_url)
        job, sink, dialer = await run(rules)
    assert sink.headers["x-ccswitch-upstream"] == "b" and proxy.credentials == [("me", PASSWORD)]
    assert job.attempts[0].error.startswith(f"proxy socks5://127.0.0.1:{proxy.port}: authentication failed")
    assert PASSWORD not in job.comment() and PASSWORD not in dialer.health.get("a").last_error
    assert dialer.health.get("a").failures == 1 and mock_a.requests == []


@pytest.mark.parametrize("spelling", ["plain", "percent-encoded"])
async def test_a_proxys_status_line_quoting_the_rules_keys_is_told_without_them(mock_b, spelling):
    """Its words go to the log, the flow's comment, the client's error and shared health."""
    from urllib.parse import quote
    key_a, key_b = "sk-test-proxied-a-0123456789", "sk-test-other-b-9876543210"
    said_a, said_b = ((key_a, key_b) if spelling == "plain" else      # no plain key beside it to point at it
                      (quote(key, safe="").replace("-", "%2D") for key in (key_a, key_b)))

    async def quoting(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 502 Bad ka={said_a} kb={said_b}\r\n\r\n".encode())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(quoting, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rules = parse_rules(f"""{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'https://api.example.com', api_key: '{key_a}',
     proxy: 'http://127.0.0.1:{port}'}}
  - {{name: b, protocol: anthropic, base_url: '{mock_b.base_url}', api_key: '{key_b}'}}
routes: {{claude: [a, b]}}
""")
    async with server:
        job, sink, dialer = await run(rules)
    error = job.attempts[0].error
    assert sink.status == 200 and error == f"proxy http://127.0.0.1:{port}: 502 Bad ka=[redacted] kb=[redacted]"
    assert dialer.health.get("a").last_error == error and key_a not in job.comment()


@pytest.mark.parametrize("kind", ["socks5", "http"])
async def test_a_proxy_refusing_the_rules_credentials_tells_the_client_not_to_retry(mock_a, kind):
    # a password in rules.yaml no retry mends (Claude Code retried its 502 silently for minutes),
    # as with an upstream's 401 to a rules key; a proxy that is merely down may be retried
    proxy_class = Socks5Proxy if kind == "socks5" else ConnectProxy
    with proxy_class(auth=("me", "the-right-one")) as proxy:
        rules = parse_rules(f"""{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', api_key: key-a, proxy: '{proxy.url("me", PASSWORD)}'}}
routes: {{claude: [a]}}
""")
        job, sink, _ = await run(rules)
    assert sink.status == 502 and sink.headers["x-should-retry"] == "false" and mock_a.requests == []
    closed = parse_rules(f"""{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', api_key: key-a,
     proxy: 'http://me:{PASSWORD}@127.0.0.1:{MockUpstream.closed_port()}'}}
routes: {{claude: [a]}}
""")
    job, sink, _ = await run(closed)
    assert sink.status == 502 and sink.headers.get("x-should-retry") == "true"


async def test_upstream_proxy_carries_every_upstream_but_a_direct_one(mock_a, mock_b):
    with ConnectProxy(auth=("me", PASSWORD)) as proxy:
        rules = rules_with(mock_a.base_url, "", mock_b.base_url, head=f"upstream_proxy: '{proxy.url('me', PASSWORD)}'\n")
        mock_a.script(status(503))
        job, sink, _ = await run(rules)
        direct = rules_with(mock_a.base_url, ", proxy: direct", mock_b.base_url,
                            head=f"upstream_proxy: '{proxy.url('me', PASSWORD)}'\n")
        await run(direct)
    assert sink.headers["x-ccswitch-upstream"] == "b"
    assert proxy.targets == [("127.0.0.1", mock_a.port), ("127.0.0.1", mock_b.port)]


async def behind_one_holding_a(rules, holding: dict, body: dict):
    """`body` sent 0.1 s after a request with `holding`, which takes `a`'s one connection (its
    `max_connections: 1`): (the first's job, the second's job, its sink, the dialer, closed)."""
    dialer = Dialer(HealthBoard())
    try:
        first = asyncio.ensure_future(run(rules, body=holding, dialer=dialer))
        await asyncio.sleep(0.1)
        assert dialer.client.connection_counts() == {"a": (1, 0)}
        second, sink, _ = await run(rules, body=body, dialer=dialer)
        served, _, _ = await first
    finally:
        await dialer.aclose()
    return served, second, sink, dialer


async def test_a_wait_for_a_connection_past_connect_fails_over_without_counting(mock_a, mock_b):
    rules = rules_with(mock_a.base_url, ", max_connections: 1", mock_b.base_url)
    mock_a.script(hang_before_headers(1.0))
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    first, second, sink, dialer = await behind_one_holding_a(rules, body, body)
    assert sink.status == 200 and sink.headers["x-ccswitch-upstream"] == "b"
    assert second.attempts[0].error == "no free connection within 0.3 s (all 1 of max_connections busy)"
    assert dialer.health.get("a").failures == 0                  # its own cap, not its failure
    assert first.upstream == "a" and len(mock_a.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_wait_for_a_connection_past_the_answers_deadline_fails_over_without_counting(mock_a, mock_b, stream):
    # first_byte / total below connect: the deadline for the answer passed while the request still
    # waited for one of the upstream's connections, read as the upstream's silence: it counted,
    # and a cooldown (with its webhooks) followed from ccswitch's own cap
    rules = parse_rules(f"""timeouts: {{connect: 3s, first_byte: 300ms, total: 300ms, idle: 1s}}
failover: {{retry_backoff: 10ms}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', api_key: key-a, max_connections: 1}}
  - {{name: b, protocol: anthropic, base_url: '{mock_b.base_url}', api_key: key-b}}
routes: {{claude: [a, b]}}
""")
    mock_a.script(stall_after(2, 0.8))           # a stream holding a's one connection
    body = {"model": "claude-x", "max_tokens": 5, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    first, second, sink, dialer = await behind_one_holding_a(rules, {**body, "stream": True}, body)
    assert sink.status == 200 and sink.headers["x-ccswitch-upstream"] == "b"
    assert second.attempts[0].error == "no free connection within 0.3 s (all 1 of max_connections busy)"
    assert dialer.health.get("a").failures == 0                  # its own cap, not its failure
    assert first.upstream == "a" and len(mock_a.requests) == 1


async def test_a_request_that_got_its_connection_late_gets_the_upstreams_whole_wait_from_then(mock_a, mock_b):
    # it waited 0.2 s of its 0.4 s first_byte for a's one connection, and a's answer 0.25 s later
    # read as a's silence: counted (a cooldown under load), failed over, though a answered in time
    rules = parse_rules(f"""timeouts: {{connect: 3s, first_byte: 400ms, total: 400ms, idle: 1s}}
failover: {{retry_backoff: 10ms}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', api_key: key-a, max_connections: 1}}
  - {{name: b, protocol: anthropic, base_url: '{mock_b.base_url}', api_key: key-b}}
routes: {{claude: [a, b]}}
""")
    mock_a.script(stall_after(2, 0.3), hang_before_headers(0.25))
    body = {"model": "claude-x", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    _, second, sink, dialer = await behind_one_holding_a(rules, body, body)
    assert sink.status == 200 and sink.headers["x-ccswitch-upstream"] == "a", second.attempts
    assert dialer.health.get("a").failures == 0 and not mock_b.requests


async def test_a_request_served_by_an_upstream_a_reload_took_out_of_its_route_moves_no_session(mock_a, mock_b):
    # its row read `moved` for a binding that was never made
    from ccswitch.routing.affinity import SessionBindings
    rules = rules_with(mock_a.base_url, "", mock_b.base_url)
    sessions = SessionBindings()
    sessions.sync(["a", "b"], {"claude": 3600}, {"claude": ["a", "b"]})
    sessions.bind("claude", "s1", "b", 3600)
    sessions.sync(["a", "b"], {"claude": 3600}, {"claude": ["b"]})     # the reload, while the request runs
    dialer = Dialer(HealthBoard(), sessions=sessions)
    job, sink = make_job(rules), MemorySink()
    job.session, job.bound_to = "s1", "b"
    job.candidates = [rules.upstream("a")]
    try:
        await dialer.run(job, sink)
    finally:
        await dialer.aclose()
    assert sink.status == 200 and job.upstream == "a"
    assert job.rebound_to is None and job.affinity == "kept" and sessions.bound("claude", "s1") == "b"


def body_with_markers() -> dict:
    marker = {"type": "ephemeral"}
    return {"model": "claude-x", "max_tokens": 5, "stream": False,
            "tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": dict(marker)}],
            "system": [{"type": "text", "text": "sys", "cache_control": dict(marker)}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": f"m{i}", "cache_control": dict(marker)}
                                                      for i in range(3)]}]}


async def test_failover_sends_each_upstream_its_own_shaping_of_the_clients_body(mock_a, mock_b):
    rules = rules_with(mock_a.base_url, ", cache_breakpoints: 2", mock_b.base_url)
    mock_a.script(status(503))
    body = body_with_markers()
    job, sink, _ = await run(rules, body=body)
    assert sink.headers["x-ccswitch-upstream"] == "b"
    sent = mock_a.last().json
    assert count_cache_breakpoints(sent) == 2 and "cache_control" in sent["system"][0]
    assert "cache_control" in sent["messages"][0]["content"][0] and "cache_control" not in sent["tools"][0]
    assert "cache_control" not in sent["messages"][0]["content"][1]
    assert mock_b.last().json["messages"] == body["messages"] and count_cache_breakpoints(mock_b.last().json) == 5
    assert job.request.json == body_with_markers() and json.loads(job.request.body) == body_with_markers()


async def test_a_body_converted_on_the_chat_route_is_trimmed_too(mock_a, mock_b):
    rules = rules_with(mock_a.base_url, ", cache_breakpoints: 1", mock_b.base_url, route="chat")
    parts = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(3)]
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": parts}]}
    job, sink, _ = await run(rules, body=body, path="/v1/chat/completions")
    assert sink.status == 200 and mock_a.last().path == "/v1/messages"
    sent = mock_a.last().json["messages"][0]["content"]
    assert [("cache_control" in block) for block in sent] == [True, False, False]


def test_only_anthropic_bodies_are_trimmed_and_the_request_says_how_it_is_reached():
    rules = rules_with("https://relay.example", ", cache_breakpoints: 0, max_connections: 4,"
                       f" proxy: 'socks5h://me:{PASSWORD}@127.0.0.1:1080'", "https://b.example")
    a = rules.upstreams[0]
    job = make_job(rules, body=body_with_markers())
    out = render(a, job.request)
    assert count_cache_breakpoints(json.loads(out.body)) == 0
    assert out.via == http1.Via(a.proxy, "a", 4) and PASSWORD not in repr(out.via)
    other_protocol = render(a.model_copy(update={"protocol": "openai-responses"}), job.request)
    assert other_protocol.body == job.request.body
    untouched = render(rules.upstreams[1], job.request)
    assert untouched.body == job.request.body and untouched.via == http1.Via(None, "b", None)


async def test_an_activation_probe_goes_through_the_upstreams_proxy(mock_a):
    with Socks5Proxy(auth=("me", PASSWORD)) as proxy:
        rules = rules_with(mock_a.base_url, f", proxy: '{proxy.url('me', PASSWORD, 'socks5h')}'", mock_a.base_url)
        client = http1.UpstreamClient()
        try:
            result = await send_probe(client, rules.upstreams[0])
            refused = await send_probe(client, rules.upstreams[0].model_copy(
                update={"proxy": Proxy("socks5", "127.0.0.1", proxy.port, "me", "no")}))
        finally:
            await client.aclose()
    assert result.ok and proxy.tunnels == 1 and proxy.targets == [("127.0.0.1", mock_a.port)]
    assert not refused.ok and refused.error.startswith(f"proxy socks5://127.0.0.1:{proxy.port}: "
                                                       "authentication failed")
    assert len(mock_a.requests) == 1 and mock_a.last().headers["x-api-key"] == "key-a"


async def test_a_websocket_upstreams_socket_goes_through_its_proxy(mock_a, mock_b):
    from tests.unit.dial.test_dialer_websocket import Conversation, user
    with ConnectProxy(auth=("me", PASSWORD)) as proxy:
        rules = parse_rules(f"""{FAST}
upstream_proxy: '{proxy.url("me", PASSWORD)}'
upstreams:
  - {{name: a, protocol: openai-responses, base_url: '{mock_a.base_url}/v1', api_key: key-a, websocket: true}}
  - {{name: b, protocol: openai-responses, base_url: '{mock_b.base_url}/v1', api_key: key-b,
     proxy: 'http://me:wrong@127.0.0.1:{proxy.port}'}}
routes: {{codex: [a, b]}}
""")
        talk = Conversation(rules)
        try:
            job, sent = await talk.turn(user("hello"))
            assert job.upstream == "a" and sent[-1]["type"] == "response.completed"
            assert proxy.tunnels == 1 and proxy.targets == [("127.0.0.1", mock_a.port)]
            mock_a.script(status(503))
            job, sent = await talk.turn(user("again"), full=True)     # a fails; b's proxy refuses b's password
        finally:
            await talk.close()
    assert [a.upstream for a in job.attempts] == ["a", "b"]
    assert job.attempts[1].error.startswith(f"proxy http://127.0.0.1:{proxy.port}: authentication failed")
    assert mock_b.requests == []


@pytest.mark.parametrize("mute", ["the proxy", "the upstream"])
async def test_a_websocket_upstreams_timeout_names_its_proxy_only_when_the_proxy_was_mute(mock_b, mute):
    # over HTTPS the reason said "connect timeout (through proxy …)", over the WebSocket only
    # "connect timeout": nothing pointed at the proxy; but a tunnel opened to an upstream that never
    # answers its upgrade is the upstream's silence (a reload changing the proxy ends only the proxy's)
    from tests.unit.dial.test_dialer_websocket import Conversation, user
    held = []

    async def silent(reader, writer):
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with ConnectProxy() as proxy:
        proxy_url = f"http://127.0.0.1:{port if mute == 'the proxy' else proxy.port}"
        rules = parse_rules(f"""{FAST}
upstreams:
  - {{name: a, protocol: openai-responses, base_url: 'http://127.0.0.1:{port if mute == "the upstream" else 9}/v1',
     api_key: key-a, websocket: true, proxy: '{proxy_url}'}}
  - {{name: b, protocol: openai-responses, base_url: '{mock_b.base_url}/v1', api_key: key-b}}
routes: {{codex: [a, b]}}
""")
        talk = Conversation(rules)
        try:
            job, _ = await talk.turn(user("hello"))
        finally:
            await talk.close()
            for writer in held:
                writer.close()
            server.close()
    assert [a.upstream for a in job.attempts] == ["a", "b"] and job.upstream == "b"
    assert job.attempts[0].error == (f"connect timeout (through proxy {proxy_url})" if mute == "the proxy"
                                     else "connect timeout")


async def test_an_activation_probe_gives_up_connecting_after_the_rules_connect_timeout(mock_a):
    """A proxy that accepts and never answers: the probe waits `timeouts.connect`, as requests do,
    not a fixed half minute."""
    held = []

    async def silent(reader, writer):
        held.append(writer)          # accepted, never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rules = rules_with(mock_a.base_url, f", proxy: 'http://127.0.0.1:{port}'", mock_a.base_url)
    client = http1.UpstreamClient()
    try:
        started = asyncio.get_running_loop().time()
        result = await send_probe(client, rules.upstreams[0], connect_timeout=rules.timeouts.connect)
        took = asyncio.get_running_loop().time() - started
    finally:
        await client.aclose()
        for writer in held:
            writer.close()
        server.close()
    assert not result.ok and result.error.startswith("connect timeout") and took < 5, (result.error, took)
    assert not mock_a.requests


@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_a_proxy_that_opens_the_tunnel_then_carries_nothing_is_told_from_one_that_never_answers(mock_b, scheme):
    # through a tunnel that carries nothing, a TLS upstream read "connect timeout (through proxy …)",
    # word for word a proxy that never answers CONNECT; a plain one "first_byte timeout", no proxy named
    held = []

    async def stalling(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        held.append(writer)

    server = await asyncio.start_server(stalling, "127.0.0.1", 0)
    proxy = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    # `connect` (the tunnel and the TLS handshake) well inside `first_byte`, which runs from
    # before the connection (its TLS setup included): 100 ms apart, a busy machine crossed them
    rules = parse_rules(f"""
timeouts: {{connect: 300ms, first_byte: 1s, total: 1s, idle: 1s}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{scheme}://127.0.0.1:9', api_key: key-a, proxy: '{proxy}'}}
  - {{name: b, protocol: anthropic, base_url: '{mock_b.base_url}', api_key: key-b}}
routes: {{claude: [a, b]}}
""")
    try:
        job, sink, _ = await run(rules)
    finally:
        for writer in held:
            writer.close()
        server.close()
    assert sink.status == 200 and job.upstream == "b"
    assert job.attempts[0].error == (
        f"TLS handshake timeout (through proxy {proxy}, which had opened the tunnel)" if scheme == "https"
        else f"first_byte timeout (via proxy {proxy})")


async def test_a_tunnel_the_proxy_closes_names_the_proxy(mock_b):
    # "connection closed" alone: a user behind a proxy could not tell the proxy's doing from the upstream's
    async def closing(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    proxy = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    rules = parse_rules(f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: key-a, proxy: '{proxy}'}}
  - {{name: b, protocol: anthropic, base_url: '{mock_b.base_url}', api_key: key-b}}
routes: {{claude: [a, b]}}
""")
    try:
        job, sink, _ = await run(rules)
    finally:
        server.close()
    assert sink.status == 200 and job.upstream == "b"
    assert job.attempts[0].error in (f"connection closed (via proxy {proxy})", f"connection reset (via proxy {proxy})")
