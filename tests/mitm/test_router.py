"""The mitmproxy glue, driven with mitmproxy's own test helpers (no sockets)."""

import asyncio
import json
import logging
import threading

import pytest
from mitmproxy import exceptions, http
from mitmproxy.addons import dumper, proxyauth, proxyserver, save
from mitmproxy.flow import Error
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons, tflow, tutils

from ccswitch.config.models import Routes
from ccswitch.dial.relay import JOB_HEADER, Relay
from ccswitch.mitm.flows import StreamCopy
from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.router import Router
from ccswitch.mitm.rules_watcher import RulesWatcher
from ccswitch.mitm.safety import InterceptScope, ListenSafety
from ccswitch.report.spend import LedgerSpend
from tests.mitm.conftest import open_gateway
from tests.support.helpers import CLIENT_KEY, KEY_A, hours_closed_now, reload_settled

# `late` is closed for hours whenever the tests run: a 503 with a long retry-after
RULES = f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: late, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}', hours: ["{hours_closed_now()}"]}}
routes: {{claude: [a], codex: []}}
"""


def router_with_routes(gateway, **routes) -> Router:
    """A router over the fixture's rules with some routes replaced."""
    gateway.rules_file.rules = gateway.rules.model_copy(
        update={"routes": Routes(**{**gateway.rules.routes.model_dump(), **routes})})
    r = Router(gateway)
    r.relay = Relay(None)
    r.started.set()
    return r


async def answer_sent() -> None:
    """The loop turns after a response hook in which mitmproxy sends a hook's answer (the
    turn it gets the connection's event lock back) and then ccswitch records its row."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def messages_flow(body=None, key=CLIENT_KEY, host="api.anthropic.com", path="/v1/messages", method="POST",
                  mode="regular"):
    content = json.dumps(body if body is not None else {"model": "m", "stream": True, "messages": []}).encode()
    headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json"),
               (b"cookie", b"session=secret")] if key else [(b"content-type", b"application/json")]
    req = tutils.treq(method=method.encode(), scheme=b"https", host=host, port=443, path=path.encode(),
                      headers=tuple(headers), content=content)
    flow = tflow.tflow(req=req)
    flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse(mode)
    flow.client_conn.timestamp_end = None     # its client is still there (tflow's has gone)
    return flow


async def test_an_intercept_host_with_the_root_s_trailing_dot_is_routed(router, gateway):
    # its TLS was decrypted (the SNI has no dot), then its request passed on unrouted, key and all
    flow = messages_flow(host="API.anthropic.com.")
    await router.request(flow)
    assert flow.request.port == 4242 and flow.id in router.jobs


def test_the_intercept_scope_takes_a_host_named_with_the_root_s_trailing_dot(gateway):
    from types import SimpleNamespace
    conn = tflow.tclient_conn()
    conn.proxy_mode = mode_specs.ProxyMode.parse("regular")
    data = SimpleNamespace(client_hello=SimpleNamespace(sni=None), ignore_connection=False,
                           context=SimpleNamespace(client=conn, server=SimpleNamespace(address=("api.openai.com.", 443))))
    InterceptScope(gateway).tls_clienthello(data)
    assert not data.ignore_connection


async def test_an_unrouted_path_a_base_url_explains_is_logged_once_with_the_hint(gateway, caplog):
    # an OpenAI SDK whose base URL lacks /v1 posts to /chat/completions: it went on to the
    # listener's target and the log said nothing of why
    caplog.set_level(logging.WARNING, logger="ccswitch")
    router = router_with_routes(gateway, chat=["a"])
    with taddons.context(router):
        for query in ("", "?a=1"):
            flow = messages_flow(path="/chat/completions" + query, body={"model": "m", "messages": []})
            await router.request(flow)
            assert flow.response is None and flow.id not in router.jobs        # passed on, as the contract says
    assert caplog.text.count("was not routed") == 1
    assert ("POST /chat/completions was not routed and went on to api.anthropic.com (ccswitch routes "
            "/v1/chat/completions, not /chat/completions: the client's base URL likely lacks its /v1)") in caplog.text
    assert "the client's base URL likely lacks its /v1" in flow.comment


async def test_routed_flow_goes_to_the_relay_with_credentials_redacted(router):
    flow = messages_flow()
    await router.request(flow)
    assert flow.response is None
    assert (flow.request.scheme, flow.request.host, flow.request.port) == ("http", "127.0.0.1", 4242)
    assert flow.request.headers["x-api-key"] == "<redacted>" and flow.request.headers["cookie"] == "<redacted>"
    job = router.jobs[flow.id]
    assert flow.request.headers[JOB_HEADER] == job.token
    assert CLIENT_KEY not in repr(job.request.headers)        # a client key goes no further than ccswitch
    assert [u.name for u in job.candidates] == ["a"]


async def test_an_api_requests_keys_show_redacted_from_its_head_on_and_are_back_for_its_routing(router):
    from ccswitch.mitm.key_shield import KeyShield
    shield = KeyShield()
    flow, gone = messages_flow(path=f"/v1/messages?key={CLIENT_KEY}"), messages_flow()
    for f in (flow, gone):
        shield.requestheaders(f)       # mitmweb's flow list is sent the flow right after this hook
        assert CLIENT_KEY not in repr(f.request.headers.fields) + f.request.path
        assert f.request.headers["cookie"] == "<redacted>"
    flow.request.headers["anthropic-beta"] = "x"     # another addon's change meanwhile stays
    shield.request(flow)
    await router.request(flow)
    job = router.jobs[flow.id]         # the client key was back for its check: routed, not refused 401
    assert job.client is not None and dict(job.request.headers)["anthropic-beta"] == "x"
    assert CLIENT_KEY not in repr(flow.request.headers.fields) + flow.request.path
    gone.error = Error("Client disconnected.")    # mid-body: no request hook, saved as it is
    shield.error(gone)
    assert CLIENT_KEY not in repr(gone.request.headers.fields) and shield.hidden == {}


async def test_a_client_key_goes_no_further_wherever_else_the_client_put_it(router):
    import base64
    encoded = CLIENT_KEY.replace("-", "%2D")
    flow = messages_flow(path=f"/v1/messages?beta=true&token={CLIENT_KEY}&x=1;key={CLIENT_KEY}&q={encoded}")
    basic = base64.b64encode(f"{CLIENT_KEY}:".encode()).decode()
    flow.request.headers.update({"x_api_key": CLIENT_KEY, "authorization": f"Bearer\t{CLIENT_KEY}",
                                 "proxy-token": f"Basic {basic}", "x-trace": "keep-me"})
    await router.request(flow)
    job = router.jobs[flow.id]
    assert CLIENT_KEY not in repr(job.request.headers) and CLIENT_KEY not in job.request.url
    assert basic not in repr(job.request.headers) and "%2D" not in job.request.url
    assert ("x-trace", "keep-me") in job.request.headers and "beta=true" in job.request.url
    assert CLIENT_KEY not in flow.request.path and CLIENT_KEY not in repr(flow.request.headers.fields)
    assert flow.request.headers["x_api_key"] == "<redacted>"


async def test_wrong_client_key_is_401_in_client_format_and_nothing_forwarded(router):
    flow = messages_flow(key="sk-wrong")
    await router.request(flow)
    assert flow.response.status_code == 401
    assert json.loads(flow.response.content)["error"]["type"] == "authentication_error"
    assert flow.id not in router.jobs and flow.request.host == "api.anthropic.com"
    assert flow.request.headers["x-api-key"] == "<redacted>"


async def test_a_request_refused_for_its_client_key_has_its_body_dropped_unread(router, monkeypatch):
    # anyone may send one: a small gzip body inflating to the limit held the event loop for seconds
    import gzip

    from ccswitch.mitm import quoted
    monkeypatch.setattr(quoted, "decoded_body", lambda *_: pytest.fail("inflated"))
    flow = messages_flow(key="sk-wrong")
    flow.request.headers["content-encoding"] = "gzip"
    flow.request.raw_content = gzip.compress(b'{"model": "m", "p": "' + b"\\\\" * 100_000 + b'"}')
    await router.request(flow)
    assert flow.response.status_code == 401 and flow.request.raw_content == b""


@pytest.mark.parametrize("upgrade", [False, True])
async def test_a_client_key_put_where_it_is_not_read_is_off_the_refused_flow_too(gateway, upgrade):
    """A key sent the wrong way is refused (401), and mitmweb and -w do not keep it either."""
    router = router_with_routes(gateway, codex=("a",))
    flow = messages_flow(key=None, path=f"/v1/responses?foo=TAG2-{CLIENT_KEY}" if upgrade
                         else f"/v1/messages?foo=TAG2-{CLIENT_KEY}")
    flow.request.headers["x-foo"] = f"TAG1-{CLIENT_KEY}"
    if upgrade:
        flow.request.method = "GET"
        flow.request.headers.update({"upgrade": "websocket", "connection": "Upgrade",
                                     "sec-websocket-protocol": CLIENT_KEY})
    with taddons.context(router):
        await router.request(flow)
    assert flow.response.status_code == 401 and flow.id not in router.jobs
    assert CLIENT_KEY not in flow.request.path and CLIENT_KEY not in repr(flow.request.headers.fields)
    assert flow.request.headers["x-foo"] == "<redacted>"


async def test_missing_client_key_on_chat_path_is_openai_format(gateway):
    r = router_with_routes(gateway, chat=("a",))
    with taddons.context(r):
        flow = messages_flow(key=None, path="/v1/chat/completions")
        await r.request(flow)
    body = json.loads(flow.response.content)
    assert flow.response.status_code == 401 and "type" not in body          # OpenAI's shape, not Anthropic's
    assert "client key" in body["error"]["message"] and body["error"]["type"]


async def test_a_route_with_no_upstreams_is_not_ours(router):
    flow = messages_flow(key=None, path="/v1/chat/completions")
    await router.request(flow)  # the chat route has no upstreams here: untouched
    assert flow.response is None and flow.request.host == "api.anthropic.com"


@pytest.mark.parametrize("body,message", [
    (b"{nope", "not valid JSON"), (b"[1,2]", "JSON object"), (b"", "no body"),
    (b'{"messages": []}', "names no model"), ('{"model": "caf\xe9"}'.encode("latin-1"), "not UTF-8 JSON"),
    ('{"model": "m"}'.encode("utf-16"), "not UTF-8 JSON"),      # json.loads reads it, and it went upstream so
    (b'{"model": "m", "temperature": NaN}', "not valid JSON (NaN is not a JSON value)"),
    (b'{"model": "m", "metadata": {"n": 1e400}}', "not valid JSON (the number 1e400 is out of range)"),
])
async def test_bad_bodies_are_400_in_client_format(router, body, message):
    flow = messages_flow()
    flow.request.content = body
    await router.request(flow)
    assert flow.response.status_code == 400
    error = json.loads(flow.response.content)
    assert error["type"] == "error" and message in error["error"]["message"]


@pytest.mark.parametrize("encoding,body,message", [
    ("br", b"notbrotli", "does not decode as br (its content-encoding)"),
    ("gzip", b"\x1f\x8b broken", "does not decode as gzip"),
    ("compress", b"LZW...", "content-encoding 'compress' is not supported"),
    ("identity", b"{nope", "not valid JSON"),
    ("gzip", b'{"messages": []}', "names no model"),     # labelled gzip, sent plain: read as it is
])
async def test_a_body_that_does_not_decode_is_said_to_not_decode(router, encoding, body, message):
    flow = messages_flow()
    flow.request.raw_content = body
    flow.request.headers["content-encoding"] = encoding
    await router.request(flow)
    assert flow.response.status_code == 400
    assert message in json.loads(flow.response.content)["error"]["message"]


async def test_a_bug_on_the_way_is_a_500_with_its_row_never_a_pass_through(router, monkeypatch):
    # mitmproxy would log an exception, skip ccswitch's later hooks (the client-key gate) and send
    # the request on to the host the client named, with the client's key
    def broken(*args):
        raise IndexError("list index out of range")
    monkeypatch.setattr("ccswitch.mitm.planner.convert_for_candidates", broken)
    rows = []
    monkeypatch.setattr(router.gateway, "record_own_answer", rows.append)
    flow = messages_flow({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    await router.request(flow)
    assert flow.response.status_code == 500
    error = json.loads(flow.response.content)
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "internal error" in error["error"]["message"]
    assert flow.request.headers["x-api-key"] == "<redacted>" and flow.request.host == "api.anthropic.com"
    assert flow.id not in router.jobs and flow.marked
    [row] = rows
    assert (row["status"], row["model"], row["stream"], row["upstream"]) == (500, "m", 1, None)


async def test_deeply_nested_json_is_400_not_a_crash(router):
    flow = messages_flow()
    flow.request.content = b'{"model":"m","x":' + b"[" * 100000 + b"]" * 100000 + b"}"
    await router.request(flow)
    assert flow.response.status_code == 400


async def test_no_available_upstream_is_503_naming_why(gateway):
    r = router_with_routes(gateway, claude=("late",))
    with taddons.context(r):
        flow = messages_flow()
        await r.request(flow)
    assert flow.response.status_code == 503 and flow.response.headers["retry-after"]
    message = json.loads(flow.response.content)["error"]["message"]
    assert "late" in message and "hours" in message


async def test_codex_known_by_its_originator_gets_its_closed_route_without_the_hours_long_retry_after(gateway):
    """Codex would wait out a retry-after of hours; other clients get it (the test above)."""
    r = router_with_routes(gateway, claude=("late",))
    with taddons.context(r):
        flow = messages_flow()
        flow.request.headers["originator"] = "codex_exec"
        await r.request(flow)
    assert flow.response.status_code == 503 and flow.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in flow.response.headers
    assert "late" in json.loads(flow.response.content)["error"]["message"]


async def test_unrouted_paths_methods_and_hosts_pass_untouched(router):
    # an API host's flow says so for whoever looks in mitmweb; another host's is left as it is
    why = "ccswitch: not routed ({}): passed on as it came"
    for flow, comment in ((messages_flow(path="/v1/models", method="GET"), why.format("no route takes GET /v1/models")),
                          (messages_flow(method="GET"), why.format("no route takes GET /v1/messages")),
                          (messages_flow(host="example.com"), ""),
                          (messages_flow(path="/v1/responses"), why.format("the codex route lists no upstreams"))):
        await router.request(flow)
        assert flow.response is None and flow.request.port == 443 and flow.id not in router.jobs
        assert flow.comment == comment


async def test_reverse_mode_routes_any_host(router):
    flow = messages_flow(host="example.com", mode="reverse:https://example.com")
    await router.request(flow)
    assert flow.id in router.jobs


async def codex_upgrade(gateway, comment: str = ""):
    """Codex's WebSocket upgrade through a router whose codex route lists `a` (and refuses sockets)."""
    r = router_with_routes(gateway, codex=("a",))
    with taddons.context(r):
        flow = messages_flow(path="/v1/responses", method="GET", host="api.openai.com")
        flow.request.headers["upgrade"] = "websocket"
        flow.request.headers["connection"] = "Upgrade"
        flow.comment = comment
        await r.request(flow)
    return flow


async def test_codex_websocket_upgrade_is_answered_at_once(gateway):
    flow = await codex_upgrade(gateway)
    assert flow.response.status_code == 426 and "not WebSocket" in flow.response.text


async def test_without_client_keys_a_web_page_of_another_site_is_refused_posts_and_websockets_alike(
        gateway, monkeypatch):
    gateway.rules_file.rules = gateway.rules.model_copy(update={"client_keys": ()})
    rows = []
    monkeypatch.setattr(gateway, "record_own_answer", rows.append)
    r = router_with_routes(gateway, codex=("a",))
    with taddons.context(r):
        page = messages_flow(key="")
        page.request.headers["origin"] = "https://evil.example"
        await r.request(page)
        socket = messages_flow(key="", path="/v1/responses", method="GET", host="api.openai.com")
        socket.request.headers.update({"upgrade": "websocket", "connection": "Upgrade", "origin": "null"})
        await r.request(socket)
        local = messages_flow(key="")
        local.request.headers["origin"] = "http://localhost:5173"
        await r.request(local)
        named = messages_flow(key="")      # the live page's own name: it posts nothing to the APIs
        named.request.headers["origin"] = "http://ccswitch"
        await r.request(named)
    for refused in (page, socket, named):
        assert refused.response.status_code == 403 and "Origin" in refused.response.text
        assert refused.id not in r.jobs
    assert [row["status"] for row in rows] == [403, 403, 403]
    assert local.response is None and local.id in r.jobs      # a page on this machine is the user's own


async def test_with_client_keys_a_browser_client_gets_in_with_a_key(router):
    flow = messages_flow()
    flow.request.headers["origin"] = "https://my-chat-ui.example"
    await router.request(flow)
    assert flow.response is None and flow.id in router.jobs


@pytest.mark.parametrize("framing", [[("content-length", "N")], [("transfer-encoding", "chunked")], []],
                         ids=["length", "chunked", "none (HTTP/2)"])
async def test_a_streamed_requests_body_stays_off_the_relay_hop_and_is_back_on_the_flow_at_its_end(
        router, framing):
    flow = messages_flow()
    sent = flow.request.raw_content
    for name in ("content-length", "transfer-encoding"):
        flow.request.headers.pop(name, None)
    for name, value in framing:
        flow.request.headers[name] = str(len(sent)) if value == "N" else value
    await router.request(flow)
    assert router.jobs[flow.id].request.body == sent              # the job has it
    assert flow.request.raw_content == b"" and flow.request.headers["content-length"] == "0"
    assert "transfer-encoding" not in flow.request.headers
    flow.response = tutils.tresp()
    router.response(flow)
    assert flow.request.raw_content == sent and not router.held_bodies
    assert [(k, v) for k, v in flow.request.headers.items() if k in ("content-length", "transfer-encoding")] == [
        (name, str(len(sent)) if value == "N" else value) for name, value in framing]


@pytest.mark.parametrize("budgets", [True, False], ids=["budgets", "no-budget"])
async def test_requests_that_come_before_the_router_runs_wait_for_the_spend_and_the_relay(tmp_path, monkeypatch,
                                                                                          budgets):
    """mitmproxy opens its listeners before the addons' `running`: a request that comes first is
    neither passed on unrouted, nor let past budgets while the ledger's spend is read, nor sent
    to the relay before it listens.  Without a budget, a ledger slow to answer holds up nothing."""
    gateway = open_gateway(tmp_path, RULES.replace("api_key: '", "budget: {daily: 5}, api_key: '") if budgets else RULES)
    assert gateway.rules.budgets_set() is budgets
    reading = threading.Event()
    monkeypatch.setattr(gateway, "_spend_rows", lambda until: reading.wait(5) and LedgerSpend())
    router = Router(gateway)
    with taddons.context(router):
        before = messages_flow()
        early = asyncio.ensure_future(router.request(before))
        await asyncio.sleep(0.02)
        router.running()
        running = router.starting
        during = messages_flow()
        meanwhile = asyncio.ensure_future(router.request(during))
        if budgets:
            await asyncio.sleep(0.05)
            assert not early.done() and not meanwhile.done()       # the spend is still being read
        else:   # routed once the relay listens, however slow the machine, while the read still hangs (5 s)
            await asyncio.wait_for(asyncio.gather(early, meanwhile), 3)
        reading.set()
        await asyncio.wait_for(asyncio.gather(early, meanwhile, running), 5)
        try:
            for flow in (before, during):
                assert flow.id in router.jobs and flow.request.headers[JOB_HEADER]
                assert (flow.request.host, flow.request.port) == ("127.0.0.1", router.relay.port) and router.relay.port
        finally:
            await router.sockets.stop()
            await router.relay.stop()
            await router.dialer.aclose()


@pytest.mark.parametrize("read_fails", [False, True], ids=["read", "read-fails"])
async def test_a_budget_a_reload_sets_while_the_spend_is_still_read_holds_requests_until_it_is(
        tmp_path, monkeypatch, read_fails):
    gateway = open_gateway(tmp_path, RULES)
    reading = threading.Event()

    def spend_rows(until):
        reading.wait(5)
        if read_fails:       # a row the reader cannot take: the request is routed all the same
            raise ValueError("Invalid isoformat string: 'yesterday'")
        return LedgerSpend()
    monkeypatch.setattr(gateway, "_spend_rows", spend_rows)
    router = Router(gateway)
    with taddons.context(router):
        router.running()
        await router.starting
        try:
            routed = messages_flow()
            await asyncio.wait_for(router.request(routed), 2)     # no budget: nothing waits
            budgeted = RULES.replace("api_key: '", "budget: {daily: 5}, api_key: '")
            (tmp_path / "reloaded").mkdir()
            gateway.rules_file.rules = open_gateway(tmp_path / "reloaded", budgeted).rules
            held = asyncio.ensure_future(router.request(messages_flow()))
            await asyncio.sleep(0.05)
            assert not held.done()
            reading.set()
            await asyncio.wait_for(held, 5)
            assert gateway.first_spend_read is None and held.exception() is None
        finally:
            await router.sockets.stop()
            await router.relay.stop()
            await router.dialer.aclose()


async def test_when_the_router_fails_to_start_api_requests_are_refused_never_passed_on_unrouted(
        gateway, monkeypatch, caplog):
    async def cannot_listen(self):
        raise OSError("no port for the relay")
    monkeypatch.setattr(Relay, "start", cannot_listen)
    rows = []
    monkeypatch.setattr(gateway, "record_own_answer", rows.append)
    router = Router(gateway)
    with taddons.context(router):
        with pytest.raises(OSError):
            router.running()
            await router.starting
        try:
            flow = messages_flow()
            await router.request(flow)
            assert flow.response.status_code == 503 and flow.request.host == "api.anthropic.com"
            assert "failed to start" in json.loads(flow.response.content)["error"]["message"]
            assert flow.request.headers["x-api-key"] == "<redacted>"
            assert [(row["status"], row["route"]) for row in rows] == [(503, "claude")]
            other = messages_flow(host="example.com", path="/elsewhere", method="GET")
            await router.request(other)
            assert other.response is None      # not an API flow: mitmproxy's as ever
            empty = messages_flow(path="/v1/chat/completions")     # its route has no upstreams
            await router.request(empty)
            assert empty.response is None and len(rows) == 1      # not ours, started or not
        finally:
            await router.dialer.aclose()


async def test_a_streamed_request_whose_client_left_gets_its_body_back_too(router):
    flow = messages_flow()
    sent = flow.request.raw_content
    flow.request.headers["content-length"] = str(len(sent))
    await router.request(flow)
    flow.error = tflow.terr()
    router.error(flow)
    assert flow.request.raw_content == sent and flow.request.headers["content-length"] == str(len(sent))


async def test_finish_writes_comment_display_url_and_forgets_the_job(router):
    flow = messages_flow()
    await router.request(flow)
    job = router.jobs[flow.id]
    from ccswitch.dial.job import Attempt
    job.attempts = [Attempt("a", 503, "HTTP 503", 12), Attempt("a", 200, None, 30)]
    job.upstream = "a"
    flow.response = tutils.tresp()
    router.response(flow)
    assert flow.id not in router.jobs and JOB_HEADER not in flow.request.headers
    assert flow.request.url == "http://127.0.0.1:9/v1/messages"
    assert "a: 503 (12 ms)" in flow.comment and flow.marked
    assert KEY_A not in json.dumps(flow.get_state(), default=str)


@pytest.mark.parametrize(("attempts", "error", "mine", "mark"), [
    ([("a", 200, None)], None, "", ""),                                   # served at once: no mark
    ([("a", 503, "HTTP 503"), ("a", 200, None)], None, "", ":warning:"),   # failed over
    ([("a", 200, None)], "stream ended before its terminal event", "", ":warning:"),   # broke after it began
    ([("a", 200, None)], "client_closed", "", ""),                        # its client left: nothing wrong upstream
    ([("a", 503, "HTTP 503"), ("a", 200, None)], None, ":red_circle:", ":red_circle:"),   # the user's own stays
])
def test_a_flow_is_marked_for_a_look_when_it_failed_over_or_failed_unless_marked_by_its_user(
        gateway, attempts, error, mine, mark):
    from ccswitch.dial.job import Attempt
    from ccswitch.mitm.flows import show_outcome
    from tests.support.helpers import make_job
    job = make_job(gateway.rules)
    job.attempts = [Attempt(name, status, why, 5) for name, status, why in attempts]
    job.upstream, job.status, job.error = "a", 200, error
    flow = messages_flow()
    flow.metadata["ccswitch"], flow.marked, flow.response = {}, mine, tutils.tresp()
    show_outcome(flow, job)
    assert flow.marked == mark


async def test_a_running_stream_that_failed_over_is_marked_from_its_first_bytes_on(router):
    from ccswitch.dial.job import Attempt
    flow = messages_flow()
    await router.request(flow)
    job = router.jobs[flow.id]
    job.attempts += [Attempt("a", 503, "HTTP 503", 3), Attempt("a", 200, None, 0)]
    job.upstream = "a"
    flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"))
    router.responseheaders(flow)
    assert flow.marked == ":warning:" and "a: 503" in flow.comment


@pytest.mark.parametrize("host,mode", [("api.anthropic.com", "regular"),
                                       ("relay.example", "reverse:https://relay.example")])
async def test_passthrough_flows_to_api_hosts_are_redacted_once_sent(router, host, mode):
    flow = messages_flow(path="/v1/models", method="GET", host=host, mode=mode)
    await router.request(flow)
    assert flow.request.headers["x-api-key"] == CLIENT_KEY   # still needed to reach the host
    flow.response = tutils.tresp()
    router.response(flow)
    assert flow.request.headers["x-api-key"] == "<redacted>"


async def test_passthrough_flows_to_other_hosts_are_left_as_they_are(router):
    flow = messages_flow(path="/", method="GET", host="example.com")
    await router.request(flow)
    flow.response = tutils.tresp()
    router.response(flow)
    assert flow.request.headers["x-api-key"] == CLIENT_KEY


def test_intercept_scope_ignores_other_hosts(gateway):
    scope = InterceptScope(gateway)

    class Hello:
        def __init__(self, sni):
            self.sni = sni

    class Data:
        def __init__(self, sni, mode="regular"):
            self.client_hello = Hello(sni)
            self.ignore_connection = False
            conn = tflow.tclient_conn()
            conn.proxy_mode = mode_specs.ProxyMode.parse(mode)
            self.context = type("C", (), {"client": conn, "server": tflow.tserver_conn()})()

    for sni, ignored in (("api.anthropic.com", False), ("github.com", True), ("API.OPENAI.COM", False)):
        data = Data(sni)
        scope.tls_clienthello(data)
        assert data.ignore_connection is ignored
    data = Data("github.com", mode="reverse:https://api.anthropic.com")
    scope.tls_clienthello(data)
    assert not data.ignore_connection


def test_listen_safety_forces_lazy_and_refuses_open_listener(gateway):
    safety = ListenSafety(gateway)
    gateway.rules_file.rules = gateway.rules.model_copy(update={"client_keys": ()})
    with taddons.context(proxyserver.Proxyserver(), proxyauth.ProxyAuth(), safety) as tctx:
        tctx.configure(safety, connection_strategy="eager", listen_host="")
        assert tctx.options.connection_strategy == "lazy"
        assert tctx.options.listen_host == "127.0.0.1"
        with pytest.raises(exceptions.OptionsError, match="beyond loopback"):
            tctx.configure(safety, listen_host="0.0.0.0")
        tctx.configure(safety, listen_host="0.0.0.0", proxyauth="user:pass")  # with proxy auth it may


def test_rules_watcher_rejects_invalid_rules_at_start(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("upstreams:\n  - {name: a, protocol: nope, base_url: 'http://x'}\n")
    watcher = RulesWatcher(Gateway())
    with taddons.context(watcher) as tctx:
        with pytest.raises(exceptions.OptionsError) as err:
            tctx.configure(watcher, ccswitch_rules=str(bad))
    assert "upstreams[a].protocol" in str(err.value) and str(bad) in str(err.value)


def test_hot_reload_keeps_last_good_rules(tmp_path, caplog):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    gw = Gateway()
    gw.rules_file.open(str(path))
    path.write_text(RULES.replace("routes: {claude: [a], codex: []}", "routes: {claude: [a, late]}"))
    assert reload_settled(gw.rules_file) and gw.rules.routes.for_route("claude") == ("a", "late")
    path.write_text("upstreams: [oops")
    assert not reload_settled(gw.rules_file)
    assert gw.rules.routes.for_route("claude") == ("a", "late") and "keeping the last good" in caplog.text
    assert KEY_A not in caplog.text


async def test_compressed_client_body_is_decoded_and_sent_plain(router):
    import gzip

    from ccswitch.dial.render import render
    flow = messages_flow()
    flow.request.headers["content-encoding"] = "gzip"
    flow.request.raw_content = gzip.compress(json.dumps({"model": "m", "stream": True, "messages": []}).encode())
    await router.request(flow)
    job = router.jobs[flow.id]
    assert job.request.json["model"] == "m"
    out = render(job.candidates[0], job.request)
    assert json.loads(out.body)["model"] == "m"
    assert "content-encoding" not in dict(out.headers)


def test_upstream_tls_follows_mitmproxys_options(gateway, tmp_path):
    import ssl

    from ccswitch.dial.dialer import Dialer
    from ccswitch.net.http1 import UpstreamClient
    router = Router(gateway)
    router.dialer = Dialer(gateway.health, client=UpstreamClient())
    with taddons.context(router) as tctx:
        tctx.configure(router, ssl_insecure=True)
        assert router.dialer.client.ssl_context.verify_mode == ssl.CERT_NONE
        tctx.configure(router, ssl_insecure=False)
        assert router.dialer.client.ssl_context.verify_mode == ssl.CERT_REQUIRED
        missing = str(tmp_path / "missing.pem")
        with pytest.raises(exceptions.OptionsError, match="upstream CA") as caught:
            tctx.configure(router, ssl_verify_upstream_trusted_ca=missing)
        assert f"ssl_verify_upstream_trusted_ca={missing}" in str(caught.value)     # which file, and why
        assert "No such file or directory" in str(caught.value)


async def test_a_gateway_bug_on_a_non_streamed_request_is_a_500_in_client_format_and_recorded(router, gateway):
    class Exploding:
        async def run(self, job, sink):
            raise KeyError("boom")
    recorded = []
    router.dialer = Exploding()
    gateway.record_job = recorded.append
    flow = messages_flow({"model": "m", "messages": []})
    await router.request(flow)
    assert flow.response.status_code == 500
    assert json.loads(flow.response.content)["error"]["message"] == "ccswitch internal error: KeyError"
    router.response(flow)
    assert recorded == []          # mitmproxy sends the answer after the response hook, a turn later
    await answer_sent()
    assert [job.error for job in recorded] == ["internal error: KeyError"] and recorded[0].status == 500


async def test_while_shutting_down_a_new_routed_request_is_a_503_with_retry_after_and_a_row(router, gateway):
    rows = []
    gateway.ledger = type("Rows", (), {"add": lambda self, table, row: rows.append((table, row))})()
    router.shutdown.draining = True
    flow = messages_flow({"model": "m", "stream": True, "messages": []})
    await router.request(flow)
    assert flow.response.status_code == 503
    assert (flow.response.headers["retry-after"], flow.response.headers["connection"]) == ("10", "close")
    assert json.loads(flow.response.content)["error"] == {"type": "api_error",
                                                          "message": "ccswitch is shutting down"}
    assert flow.id not in router.jobs and flow.request.host == "api.anthropic.com"   # not sent anywhere
    [(table, row)] = rows
    assert (table, row["model"], row["stream"], row["status"]) == ("requests", "m", 1, 503)


async def test_a_refusal_as_the_stop_closes_the_connections_is_recorded_by_whether_its_client_got_it(
        router, gateway, monkeypatch):
    # under load with keep-alive clients, a request whose hook refused it just before the stop
    # closed its client's connection got no answer ("Server disconnected without sending a
    # response"), and its row said 503
    from mitmproxy.connection import ConnectionState
    rows = []
    gateway.ledger = type("Rows", (), {"add": lambda self, table, row: rows.append(row)})()
    gateway.close = lambda: None
    monkeypatch.setattr("ccswitch.dial.shutdown.ENDING_WAIT", 0.05)
    flows = {name: messages_flow({"model": name, "messages": []}) for name in ("sent", "cut", "never handed on")}
    with taddons.context(router, proxyserver.Proxyserver()) as tctx:
        tctx.master.should_exit.set()                   # mitmproxy itself stopping
        tctx.configure(router, ccswitch_shutdown_grace=0)
        stop = asyncio.ensure_future(router.done())
        while not router.shutdown.draining:
            await asyncio.sleep(0)
        for flow in flows.values():
            await router.request(flow)
            assert flow.response.status_code == 503
        assert rows == []       # not before mitmproxy hands the answer on
        router.relay = None     # none to stop here
        flows["cut"].client_conn.state = ConnectionState.CLOSED     # the stop closed it first
        router.response(flows["sent"])
        router.response(flows["cut"])
        await stop
    assert {row["model"]: (row["status"], row["error"]) for row in rows} == {
        "sent": (503, "ccswitch is shutting down"), "cut": (None, "client_closed"),
        "never handed on": (None, "client_closed")}


async def test_a_non_streamed_request_cut_by_shutdown_is_a_503_in_client_format_and_recorded(router, gateway):
    import asyncio

    class Endless:
        async def run(self, job, sink):
            await asyncio.Event().wait()
    recorded = []
    router.dialer = Endless()
    gateway.record_job = recorded.append
    flow = messages_flow({"model": "m", "messages": []})
    hook = asyncio.ensure_future(router.request(flow))
    while not router.inline:
        await asyncio.sleep(0)
    router.shutdown.cutting = True   # the grace period is over
    router._cut()
    await asyncio.wait_for(hook, 2)
    assert flow.response.status_code == 503 and flow.response.headers["retry-after"] == "10"
    assert "ccswitch is shutting down" in json.loads(flow.response.content)["error"]["message"]
    router.response(flow)
    await answer_sent()
    assert [(job.status, job.error) for job in recorded] == [(503, "shutdown: not finished within the grace period")]


class AnsweringDialer:
    """A dialer that answers every request at once with a 200 `{}`."""

    async def run(self, job, sink):
        job.status = 200
        await sink.start(200, [("content-type", "application/json")], 2)
        await sink.write(b"{}")
        await sink.end()

    async def aclose(self):
        pass


async def test_a_non_streamed_answer_is_recorded_after_the_response_hook_or_at_shutdown(router, gateway, monkeypatch):
    recorded = []
    router.dialer = AnsweringDialer()
    gateway.record_job = recorded.append
    gateway.close = lambda: None
    sent, unsent, last = (messages_flow({"model": "m", "messages": []}) for _ in range(3))
    for flow in (sent, unsent, last):
        await router.request(flow)
        assert flow.response.status_code == 200
    await asyncio.sleep(0)
    assert recorded == []          # not before mitmproxy has the answer on its way
    router.response(sent)
    await asyncio.sleep(0)
    assert recorded == []          # nor in the loop turn where mitmproxy sends it
    await asyncio.sleep(0)
    assert [job.flow_id for job in recorded] == [sent.id]
    # mitmproxy ended the other flow without its response hook (a shutdown that ran out of
    # time): the answer was given, and its row is not lost
    monkeypatch.setattr("ccswitch.dial.shutdown.ENDING_WAIT", 0.05)
    router.relay = None
    router.response(last)       # sent as the shutdown begins: its row is still a loop turn away
    with taddons.context(router) as tctx:
        tctx.configure(router, ccswitch_shutdown_grace=0)
        await router.done()
        closed_with = list(recorded)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sorted(job.flow_id for job in closed_with) == sorted([sent.id, unsent.id, last.id])
    assert len(recorded) == 3       # each once


def client_closes(flow):
    flow.client_conn.timestamp_end = 1.0    # mitmproxy saw the client close


def user_kills(flow):
    flow.kill()                             # mitmweb's kill button: no hook tells an addon


@pytest.mark.parametrize(("end", "error"), [(client_closes, "client_closed"), (user_kills, "killed")])
async def test_a_non_streamed_request_whose_client_left_or_that_was_killed_is_cancelled_upstream_and_recorded(
        router, gateway, end, error):
    cancelled = asyncio.Event()
    killed_when_cut = []    # the dialer labels the attempt it cuts by it: `killed`, not `client_closed`

    class Hanging:
        async def run(self, job, sink):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                killed_when_cut.append(job.killed)
                cancelled.set()
                raise
    recorded = []
    router.dialer = Hanging()
    gateway.record_job = recorded.append
    flow = messages_flow({"model": "m", "messages": []})
    hook = asyncio.ensure_future(router.request(flow))
    while not router.inline:
        await asyncio.sleep(0)
    assert not hook.done()
    end(flow)
    await asyncio.wait_for(hook, 2)         # within a watch period, not never
    assert cancelled.is_set() and not hook.cancelled() and hook.cancelling() == 0
    assert flow.response.status_code == 499 and not router.inline
    router.response(flow)          # mitmproxy goes on with the flow once the hook returns
    await answer_sent()
    assert [job.error for job in recorded] == [error]
    assert killed_when_cut == [error == "killed"]


async def test_a_stream_killed_in_mitmproxy_is_stopped_at_the_relay(router, gateway):
    stopped = []
    router.relay.cancel = lambda job: stopped.append(job) or True
    router.killed_streams.every = 0.01
    flow, other = (messages_flow({"model": "m", "stream": True, "messages": []}) for _ in range(2))
    for f in (flow, other):
        await router.request(f)
    job = router.jobs[flow.id]
    flow.kill()
    for _ in range(100):
        if stopped:
            break
        await asyncio.sleep(0.01)
    assert stopped == [job] and job.killed and not router.jobs[other.id].killed
    assert flow.request.port == 4242     # on its way to the relay when killed: no upstream answered
    router.response(other)
    router.error(flow)
    assert router.killed_streams.flows == {}
    assert flow.request.url == "https://api.anthropic.com/v1/messages"    # the client's, not the relay's


class ViewAddon:
    name = "view"    # what mitmweb and the console call their flow list


@pytest.mark.parametrize(("extra_addons", "saved", "kept"), [
    ((), False, False),            # plain mitmdump: each flow is dropped once answered
    ((), True, True),              # -w
    ((ViewAddon(),), False, True),  # mitmweb, the console
])
async def test_a_streamed_body_is_copied_onto_the_flow_only_when_flows_are_shown_or_saved(
        gateway, tmp_path, extra_addons, saved, kept):
    options = {"save_stream_file": str(tmp_path / "flows.mitm")} if saved else {}
    r = Router(gateway)
    r.relay = Relay(None)
    r.started.set()
    r.relay.port = 4242
    with taddons.context(save.Save(), dumper.Dumper(), *extra_addons, r) as tctx:
        tctx.configure(r, flow_detail=1, **options)
        flow = messages_flow()
        sent = flow.request.raw_content
        await r.request(flow)
        # nor are the request's body and what went upstream kept for the stream's minutes
        assert r.jobs[flow.id].shown is kept and bool(r.held_bodies) is kept
        flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"))
        r.responseheaders(flow)
        assert isinstance(flow.response.stream, StreamCopy) is kept
        assert flow.response.stream   # streamed either way
        if not kept:
            tctx.configure(r, flow_detail=3)     # mitmdump printing bodies wants it too
            r.responseheaders(flow)
            assert isinstance(flow.response.stream, StreamCopy)
        r.response(flow)
        assert (flow.request.raw_content == sent) is kept and not r.held_bodies


async def test_a_stream_kept_as_nothing_says_so_where_flows_are_shown(gateway):
    # keep_stream 0: mitmweb showed "Content is missing" and its download failed, with no word why
    r = Router(gateway)
    r.relay = Relay(None)
    r.started.set()
    r.relay.port = 4242
    with taddons.context(ViewAddon(), r) as tctx:
        tctx.configure(r, ccswitch_keep_stream=0)
        flow = messages_flow()
        await r.request(flow)
        flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"))
        r.responseheaders(flow)
        assert flow.response.stream(b"data: 12345\n\n") == b"data: 12345\n\n"
        r.response(flow)
    assert flow.response.raw_content == b"" and flow.response.headers["x-ccswitch-kept"] == "first 0 of 13 bytes"


async def test_an_api_stream_passed_on_unrouted_keeps_its_copy_where_flows_are_shown(tmp_path):
    # a route with no upstreams passes Codex's stream on as it is: mitmweb showed "no content"
    # and the kept megabyte stayed in memory until the flow was dropped
    from tests.mitm.conftest import open_gateway
    r = Router(open_gateway(tmp_path, f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{claude: [a], codex: []}}
"""))
    r.relay = Relay(None)
    r.started.set()
    with taddons.context(ViewAddon(), r):
        flow = messages_flow(body={"model": "gpt-5", "stream": True, "input": []}, key=None,
                             host="api.openai.com", path="/v1/responses")
        await r.request(flow)
        assert flow.request.host == "api.openai.com" and flow.id not in r.jobs     # passed on unrouted
        flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"), content=None)
        r.responseheaders(flow)
        flow.response.stream(b"data: {}\n\n")
        r.response(flow)
    assert flow.response.raw_content == b"data: {}\n\n" and not flow.response.stream


async def test_mitmwebs_flow_list_is_never_sent_an_api_requests_key(gateway):
    """mitmweb adds its view after the scripts: at `requestheaders` it broadcasts each new flow."""
    from mitmproxy.addons.view import View
    from mitmproxy.proxy.layers.http import HttpRequestHeadersHook

    from ccswitch.mitm import make_addons
    view, sent = View(), []

    def broadcast(flow):        # what mitmweb sends its browsers (a signal holds its receivers weakly)
        sent.append(repr(flow.request.headers.fields))
    view.sig_view_add.connect(broadcast)
    with taddons.context(*make_addons(), view) as tctx:
        flow = messages_flow()
        await tctx.master.addons.handle_lifecycle(HttpRequestHeadersHook(flow))
    assert sent and CLIENT_KEY not in sent[0] and "<redacted>" in sent[0]


async def test_a_running_stream_shows_its_upstream_and_attempts_not_the_relay(router, gateway):
    from ccswitch.dial.job import Attempt
    flow = messages_flow()
    await router.request(flow)
    assert flow.request.port == 4242 and JOB_HEADER in flow.request.headers     # on its way to the relay
    job = router.jobs[flow.id]
    job.attempts.append(Attempt("a", 200, None, 0))          # the dialer committed to a
    job.upstream = "a"
    flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"))
    router.responseheaders(flow)       # the relay has the request: the flow may point elsewhere
    assert flow.request.url == "http://127.0.0.1:9/v1/messages"
    assert JOB_HEADER not in flow.request.headers and flow.comment.startswith("ccswitch: a: 200")
    assert CLIENT_KEY not in repr(flow.request.headers.fields)
    router.flows_shown = False          # plain mitmdump: no one looks, the end's outcome is enough
    unseen = messages_flow()
    await router.request(unseen)
    router.jobs[unseen.id].upstream = "a"
    unseen.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"))
    router.responseheaders(unseen)
    assert unseen.request.port == 4242 and JOB_HEADER not in unseen.request.headers


async def test_a_key_sent_as_the_model_is_in_no_refusal_comment_body_or_row(tmp_path):
    # the 503 names the model it cannot serve; a client may send anything as one, a key too
    gateway = open_gateway(tmp_path, RULES.replace("api_key: '" + KEY_A + "'}", "api_key: '" + KEY_A + "', "
                                                   "only_models: ['claude-*']}", 1))
    r = Router(gateway)
    r.relay = Relay(None)
    r.started.set()
    recorded = []

    class Ledger:
        def add(self, table, row):
            recorded.append(row)
    gateway.ledger = Ledger()
    with taddons.context(r):
        flow = messages_flow({"model": KEY_A, "messages": []})
        await r.request(flow)
    assert flow.response.status_code == 503 and "not serving model" in flow.response.text
    shown = flow.comment + flow.response.text + repr(recorded)
    assert KEY_A not in shown and "[redacted]" in flow.comment


async def test_a_routed_streams_flow_says_where_it_is_going_and_keeps_no_key_sent_as_the_model(router):
    flow = messages_flow({"model": KEY_A, "stream": True, "messages": []})
    await router.request(flow)
    assert flow.request.port == 4242           # to the relay, until the answer's first bytes
    assert flow.comment == "ccswitch: on its way through ccswitch's relay to a"
    assert flow.metadata["ccswitch"]["model"] == "[redacted]"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_model_with_a_lone_surrogate_leaves_its_flow_savable(router, stream):
    """JSON allows "\\ud800" alone; mitmproxy's -w file would leave out a flow whose comment or
    metadata held it (UTF-8 cannot)."""
    import io

    from mitmproxy import io as mitm_io
    flow = messages_flow(body={"model": "plain\ud800", "stream": stream, "max_tokens": 5, "messages": []})
    await router.request(flow)
    if flow.response is None:           # a stream: on its way to the relay, which never answers here
        flow.error = Error("Client disconnected.")
        router.error(flow)
    else:
        router.response(flow)
    assert flow.metadata["ccswitch"]["model"] == "plain\ufffd"
    mitm_io.FlowWriter(io.BytesIO()).add(flow)


@pytest.mark.parametrize("message", ["Client disconnected.", "client disconnected"])
async def test_a_stream_whose_client_left_before_the_relay_had_it_is_client_closed_with_its_session(
        router, gateway, message):
    from ccswitch.dial.job import CLIENT_CLOSED
    recorded = []
    gateway.record_job = recorded.append
    flow = messages_flow({"model": "m", "stream": True, "messages": []})
    flow.request.headers["x-ccswitch-session"] = "s-1"
    await router.request(flow)
    assert flow.response is None and flow.id in router.jobs      # on its way to the relay
    flow.error = Error(message)                                  # the client left at once
    router.error(flow)
    [job] = recorded
    assert job.error == CLIENT_CLOSED and job.session == "s-1"


async def test_a_refusal_before_the_body_is_read_keeps_the_header_s_session(router, gateway):
    rows = []
    gateway.ledger = type("Rows", (), {"add": lambda self, table, row: rows.append(row)})()
    flow = messages_flow({"model": "m", "messages": []})
    flow.request.headers["x-ccswitch-session"] = "s-2"
    flow.request.headers["content-type"] = "text/plain"
    await router.request(flow)
    assert flow.response.status_code == 415 and [row["session"] for row in rows] == ["s-2"]


async def test_an_unrouted_flow_keeps_a_comment_someone_else_wrote(router):
    # only an empty comment, or ccswitch's own "held" one, gives way to the not-routed one
    flow = messages_flow(path="/v1/models", method="GET")
    flow.comment = "looked at by me"
    await router.request(flow)
    assert flow.response is None and flow.comment == "looked at by me"


def test_why_unrouted_names_the_path_without_its_query_and_a_websocket_by_its_route():
    from ccswitch.mitm.scope import why_unrouted
    flow = messages_flow(path="/v1/models?key=sk-secret-in-the-query", method="GET")
    assert why_unrouted(flow, flow.request.path) == "no route takes GET /v1/models"
    flow = messages_flow(path="/v1/" + "x" * 500, method="GET")
    assert why_unrouted(flow, flow.request.path) == "no route takes GET /v1/" + "x" * 196
    # Codex's WebSocket is a GET with an upgrade: the codex route's, not "no route"
    socket = messages_flow(path="/v1/responses", method="GET")
    socket.request.headers["upgrade"] = "websocket"
    assert why_unrouted(socket, socket.request.path) == "the codex route lists no upstreams"


@pytest.mark.parametrize("path", ["/p/{key}/q", "/v1/models;key={key}/x", "/v1/v1/messages;key={key}",
                                  "/chat/completions/{key}"])
async def test_a_client_key_in_an_unrouted_path_is_in_no_comment_or_log_line(gateway, caplog, path):
    # the flow's comment (saved by -w, shown in mitmweb) held the key as the path carried it
    caplog.set_level(logging.INFO, logger="ccswitch")
    router = router_with_routes(gateway, chat=["a"])
    with taddons.context(router):
        flow = messages_flow(path=path.format(key=CLIENT_KEY), method="POST", key=None)
        await router.request(flow)
    assert flow.comment.startswith("ccswitch: not routed (") and "%3Credacted%3E" in flow.comment
    assert CLIENT_KEY not in flow.comment and CLIENT_KEY not in str(flow.metadata) and CLIENT_KEY not in caplog.text


async def test_a_count_tokens_body_saying_stream_is_answered_whole_from_the_hook(router):
    """count_tokens answers whole: a `stream: true` there (a client's, or an edited copy's) would
    judge every upstream's JSON count a failure, cooling the route down."""
    seen = []

    class Counting:
        async def run(self, job, sink):
            seen.append(job.request.stream)
            await sink.start(200, [("content-type", "application/json")], None)
            await sink.write(b'{"input_tokens": 3}')
            await sink.end()
    router.dialer = Counting()
    flow = messages_flow({"model": "m", "stream": True, "messages": []}, path="/v1/messages/count_tokens")
    await router.request(flow)
    assert seen == [False] and flow.response.status_code == 200 and flow.response.json() == {"input_tokens": 3}
    assert flow.request.port != router.relay.port


async def test_a_killed_stream_s_end_written_over_its_kill_reads_killed_again(router, gateway):
    """The relay's end of a killed stream comes to mitmproxy as the server's: it writes that over
    the kill, and would send the client its own 502 page; the kill is put back before the row."""
    recorded = []
    gateway.record_job = recorded.append
    flow, other = (messages_flow({"model": "m", "stream": True, "messages": []}) for _ in range(2))
    for f in (flow, other):
        await router.request(f)
    router.jobs[flow.id].killed = True          # as `_stop_killed` marks the one killed in mitmweb
    for f in (flow, other):
        f.error = Error("Server closed connection.")
        router.error(f)
    assert flow.error.msg == Error.KILLED_MESSAGE
    assert other.error.msg == "Server closed connection."      # a stream no one killed keeps its own end
    assert [job.error for job in recorded] == ["killed", "Server closed connection."]


async def test_a_streamed_flow_on_its_way_to_the_relay_keeps_the_user_s_note(router):
    flow = messages_flow()
    flow.comment = "mine\nccswitch: the first time's word"      # a replay of a flow the user wrote on
    await router.request(flow)
    assert flow.comment == "mine\nccswitch: on its way through ccswitch's relay to a"


async def test_a_declined_websocket_s_comment_keeps_the_user_s_note(gateway):
    flow = await codex_upgrade(gateway, "mine")
    assert flow.comment == "mine\nccswitch: WebSocket declined (426): Codex goes on over HTTPS"


def test_ccswitch_s_own_answer_keeps_the_user_s_note():
    from ccswitch.mitm.flows import answer, error_response
    flow = messages_flow()
    flow.comment = "mine\nccswitch: the first time's word"
    answer(flow, error_response("anthropic", 400, "bad"), "why")
    assert flow.comment == "mine\nccswitch: answered 400 itself: why"


async def test_a_running_stream_s_comments_keep_the_user_s_note(router):
    """A streamed replay of a flow the user wrote on: the relay's word, then the attempts', after the note."""
    from ccswitch.dial.job import Attempt
    flow = messages_flow()
    flow.comment = "mine\nccswitch: the first time's word"
    await router.request(flow)
    job = router.jobs[flow.id]
    job.attempts.append(Attempt("a", 200, None, 0))
    job.upstream = "a"
    flow.response = tutils.tresp(headers=http.Headers(content_type="text/event-stream"))
    router.responseheaders(flow)
    assert flow.comment.startswith("mine\nccswitch: a: 200") and flow.comment.count("ccswitch:") == 1


async def test_what_a_stop_waits_for_counts_the_relay_s_streams_and_probes_not_flows_whose_end_it_no_longer_sees(
        router, gateway):
    forever = asyncio.Event()
    streaming = asyncio.ensure_future(forever.wait())
    router.relay._track(streaming)                  # a stream the relay serves, its flow out of `jobs`
    assert (router._in_flight(), router._working()) == (1, 1)
    probe = asyncio.ensure_future(forever.wait())
    gateway.probes.add(probe)                       # an activation probe: its row goes to the ledger
    assert (router._in_flight(), router._working()) == (2, 2)
    router.jobs["ended-unseen"] = object()          # a flow whose end these addons no longer see
    assert (router._in_flight(), router._working()) == (2, 2)
    forever.set()
    await asyncio.gather(streaming, probe)
    gateway.probes.clear()
    assert (router._in_flight(), router._working()) == (1, 0)


async def test_a_reload_s_stop_does_not_wait_its_grace_for_a_job_whose_flow_ended_past_these_addons(router, gateway):
    # the new addons took the chain over: this flow's response hook never reaches this router
    router.dialer = AnsweringDialer()
    gateway.record_job = lambda job: None
    gateway.close = lambda: None
    flow = messages_flow({"model": "m", "messages": []})
    await router.request(flow)
    assert flow.response.status_code == 200 and flow.id in router.jobs
    router.relay = None
    with taddons.context(router) as tctx:
        tctx.configure(router, ccswitch_shutdown_grace=30)
        await asyncio.wait_for(router.done(), 5)    # nothing still runs: not 30 s
