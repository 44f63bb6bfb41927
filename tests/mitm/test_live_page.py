"""The live page addon: which flows it answers, who may see it, and that its flows are never
routed, forwarded or recorded."""

import json
import re
from datetime import UTC, datetime

import pytest
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons, tflow, tutils

from ccswitch.dial.job import Attempt
from ccswitch.ledger.rows import own_answer_row
from ccswitch.mitm import make_addons
from ccswitch.mitm.live_page import LivePage
from ccswitch.mitm.router import Router
from ccswitch.mitm.safety import ClientKeyGate
from ccswitch.report.ledger_rows import Pricer
from ccswitch.report.metrics import CONTENT_TYPE
from ccswitch.wire.usage import Usage
from tests.support.helpers import CLIENT_KEY, KEY_A
from tests.support.live_rows import finished

RULES = f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
"""
REVERSE = "reverse:http://127.0.0.1:19001"
LOCAL = ("127.0.0.1", 5000)
REMOTE = ("192.0.2.7", 40000)   # TEST-NET-1: only ever a simulated peer address


def without_keys(gateway):
    gateway.rules_file.rules = gateway.rules.model_copy(update={"client_keys": ()})


def flow_on(mode=REVERSE, path="/_ccswitch/", *, headers=(), method="GET", host="127.0.0.1", peer=LOCAL):
    req = tutils.treq(method=method.encode(), scheme=b"http", host=host, port=19001, path=path.encode(),
                      headers=tuple((k.encode(), v.encode()) for k, v in headers), content=b"")
    flow = tflow.tflow(req=req)
    flow.client_conn.peername = peer
    flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse(mode)
    return flow


@pytest.fixture
def chain(gateway):
    """The live page, the router and the gate in make_addons' order."""
    page, router, gate = LivePage(gateway), Router(gateway), ClientKeyGate(gateway)
    router.relay = object()   # set: the router would route; it must never get the chance
    router.started.set()
    with taddons.context(page, router, gate) as tctx:
        tctx.configure(page, listen_host="127.0.0.1")
        yield page, router, gate


async def through(chain, flow):
    page, router, gate = chain
    page.request(flow)
    await router.request(flow)
    gate.request(flow)
    return flow


def test_make_addons_puts_the_page_before_the_router_and_the_gate():
    kinds = [type(a) for a in make_addons()]
    assert kinds.index(LivePage) < kinds.index(Router) < kinds.index(ClientKeyGate)


@pytest.mark.parametrize("headers,path", [
    ([("x-api-key", CLIENT_KEY)], "/_ccswitch/"),
    ([("authorization", f"Bearer {CLIENT_KEY}")], "/_ccswitch/"),
    ([], f"/_ccswitch/?key={CLIENT_KEY}"),
    ([], f"/_ccswitch?key={CLIENT_KEY}&x=1"),
])
async def test_with_client_keys_the_page_needs_one_and_keeps_no_key_text(chain, headers, path):
    flow = await through(chain, flow_on(path=path, headers=headers))
    assert flow.response.status_code == 200
    assert flow.response.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'sha256-" in flow.response.headers["content-security-policy"]
    assert flow.response.headers["cache-control"] == "no-store"
    assert b'id="upstreams"' in flow.response.content
    everything = flow.request.url + str(flow.request.headers) + flow.response.text + str(flow.response.headers)
    assert CLIENT_KEY not in everything and KEY_A not in everything
    assert flow.request.host == "127.0.0.1" and flow.request.port == 19001   # not pointed anywhere


@pytest.mark.parametrize("headers,path", [
    ([], "/_ccswitch/"), ([("x-api-key", "sk-wrong")], "/_ccswitch/status.json"),
    ([], "/_ccswitch/metrics?key=sk-wrong"), ([("authorization", "Bearer sk-wrong")], "/_ccswitch/nope"),
])
async def test_without_the_right_key_it_is_401_saying_how_and_nothing_passes_on(chain, gateway, headers, path):
    flow = await through(chain, flow_on(path=path, headers=headers))
    assert flow.response.status_code == 401 and "?key=" in flow.response.text
    assert flow.comment == "ccswitch: answered 401 itself: missing or invalid ccswitch client key"   # mitmweb says why
    assert "sk-wrong" not in flow.request.url and "sk-wrong" not in str(flow.request.headers)
    assert "ccswitch" not in flow.metadata and gateway.live.requests == {}


@pytest.mark.parametrize("headers,path", [
    ([], f"/_ccswitch/?token={CLIENT_KEY}"), ([], f"/_ccswitch/key={CLIENT_KEY}"),
    ([], f"/_ccswitch/status.json;key={CLIENT_KEY}"), ([("x-custom-ck", CLIENT_KEY)], "/_ccswitch/status.json"),
    ([], "/_ccswitch/" + CLIENT_KEY.replace("-", "%2D")),
])
async def test_a_client_key_in_an_unexpected_place_of_a_refused_page_request_stays_off_the_flow(chain, headers, path):
    # answered 401, the flow kept it in clear for mitmweb and `-w` files
    flow = await through(chain, flow_on(path=path, headers=headers))
    assert flow.response.status_code == 401
    shown = flow.request.path + str(flow.request.headers)
    assert CLIENT_KEY not in shown and CLIENT_KEY.replace("-", "%2D") not in shown


async def test_status_json_and_metrics(chain, gateway):
    key = [("x-api-key", CLIENT_KEY)]
    gateway.record_job(finished(gateway.rules, Attempt("a", 200, None, 40, Usage(input_tokens=12, output_tokens=3))))
    status = await through(chain, flow_on(path="/_ccswitch/status.json", headers=key))
    assert status.response.headers["content-type"] == "application/json"
    data = json.loads(status.response.content)
    assert [u["name"] for u in data["upstreams"]] == ["a"] and data["upstreams"][0]["state"] == "available"
    assert data["recent"][0]["tokens"]["input"] == 12 and data["today"]["requests"] == 1
    metrics = await through(chain, flow_on(path="/_ccswitch/metrics", headers=key))
    assert metrics.response.headers["content-type"] == CONTENT_TYPE
    assert 'ccswitch_requests_total{route="claude",upstream="a",status="200"} 1' in metrics.response.text
    assert 'ccswitch_upstream_up{upstream="a"} 1' in metrics.response.text


async def test_status_json_shows_a_failed_activation_probe_s_retry(chain, gateway):
    from datetime import timedelta

    from ccswitch.activation.probe import Slot
    from ccswitch.config.schedule import weekday_time
    from ccswitch.mitm.activator import Activator
    gateway.rules_file.rules = gateway.rules.model_copy(update={"upstreams": tuple(
        u.model_copy(update={"activate_at": ("06:00",)}) for u in gateway.rules.upstreams)})
    now = datetime.now(gateway.rules.tz)
    slot = Slot("a", now.date(), "06:00")
    schedule = Activator(gateway).schedule
    schedule.started(slot)
    schedule.finished(slot, False, now, 1)
    status = await through(chain, flow_on(path="/_ccswitch/status.json", headers=[("x-api-key", CLIENT_KEY)]))
    [upstream] = json.loads(status.response.content)["upstreams"]
    assert upstream["activation"] == f"retry {weekday_time(now + timedelta(seconds=1), seconds=True)}"


async def test_status_json_and_metrics_say_how_this_instance_s_ledger_and_shared_state_are_doing(
        chain, gateway, monkeypatch):
    # behind a load balancer an operator reads which instance answered, how many rows wait or were
    # lost and why none are written, and whether Redis is reachable: each as the ledger and the state say it
    from types import SimpleNamespace
    ledger = SimpleNamespace(backend=SimpleNamespace(label="postgresql://ccswitch:***@db/ledger"), pending=12,
                             dropped=3, trouble="could not connect\nis the server running?")
    monkeypatch.setattr(gateway, "ledger", ledger)
    monkeypatch.setattr(gateway, "state", SimpleNamespace(where="Redis at redis://db:6379/0", shared=True, up=False))
    key = [("x-api-key", CLIENT_KEY)]
    status = await through(chain, flow_on(path="/_ccswitch/status.json", headers=key))
    instance = json.loads(status.response.content)["instance"]
    assert instance["ledger"] == {"db": "postgresql://ccswitch:***@db/ledger", "waiting": 12, "dropped": 3,
                                  "trouble": "could not connect\\nis the server running?"}   # one line on the page
    assert instance["state"] == {"at": "Redis at redis://db:6379/0", "shared": True, "up": False}
    metrics = (await through(chain, flow_on(path="/_ccswitch/metrics", headers=key))).response.text
    assert "\nccswitch_ledger_ok 0\n" in metrics and "\nccswitch_ledger_rows_waiting 12\n" in metrics
    assert "\nccswitch_ledger_rows_dropped_total 3\n" in metrics and "\nccswitch_shared_state_up 0\n" in metrics


def rows_dropped_total(page: LivePage) -> int:
    return int(re.search(r"^ccswitch_ledger_rows_dropped_total (\d+)$", page._metrics(), re.M).group(1))


async def test_the_rows_dropped_counter_goes_on_when_the_ledger_is_reopened(tmp_path):
    # a new ledger counted from 0: the counter went down with no restart (`rate()` read a reset)
    from tests.mitm.conftest import open_gateway
    gateway = open_gateway(tmp_path, RULES + "usage_db: usage.db\n")
    page = LivePage(gateway)
    gateway.open_ledger(True)
    try:
        gateway.ledger.dropped = 3                  # rows lost in an outage
        gateway.open_ledger(False)                  # `--set ccswitch_ledger=false` in mitmweb's options...
        gateway.open_ledger(True)                   # ... and on again
        assert rows_dropped_total(page) == 3
        gateway.ledger.dropped = 2
        gateway.rules_file.rules = gateway.rules.model_copy(update={"usage_db": tmp_path / "other.db"})
        gateway.open_ledger(True)                   # a reload naming another usage_db
        assert rows_dropped_total(page) == 5 == page._status()["instance"]["ledger"]["dropped"]
    finally:
        gateway.close()
    assert gateway.ledger_rows_dropped == 5         # the closed ledgers' rows stay counted


async def test_the_pages_own_requests_are_never_counted(chain, gateway):
    for path in ("/_ccswitch/", "/_ccswitch/status.json", "/_ccswitch/metrics", "/_ccswitch/x"):
        await through(chain, flow_on(path=path, headers=[("x-api-key", CLIENT_KEY)]))
    assert gateway.live.requests == {} and not gateway.live.recent


async def test_an_own_answer_is_counted_through_the_gateway(gateway):
    gateway.record_own_answer(own_answer_row(
        request_id="f", started_at=datetime.now(UTC), route="claude", endpoint="messages", model="m",
        stream=False, status=503, error="no upstream available", latency_ms=1))
    assert gateway.live.requests == {("claude", "", "503"): 1}


@pytest.mark.parametrize("path", ["/_ccswitch/unknown", "/_ccswitch/../v1/messages", "/%5Fccswitch/metrics/x",
                                  "/_ccswitch/status.json/"])
async def test_every_path_under_the_prefix_is_answered_on_a_reverse_listener_never_forwarded(chain, path):
    flow = await through(chain, flow_on(path=path, headers=[("x-api-key", CLIENT_KEY)], method="GET"))
    assert flow.response.status_code == 404 and "try /_ccswitch/" in flow.response.text
    assert (flow.request.host, flow.request.port) == ("127.0.0.1", 19001) and "ccswitch" not in flow.metadata


async def test_a_post_to_the_page_is_405_not_routed(chain):
    flow = await through(chain, flow_on(path="/_ccswitch/status.json", method="POST",
                                        headers=[("x-api-key", CLIENT_KEY)]))
    assert flow.response.status_code == 405 and flow.response.headers["allow"] == "GET, HEAD"


async def test_other_paths_of_a_reverse_listener_are_not_the_pages(chain):
    page, _, _ = chain
    for path in ("/v1/messages", "/_ccswitchx", "/x/_ccswitch/"):
        flow = flow_on(path=path)
        page.request(flow)
        assert flow.response is None


@pytest.mark.parametrize("path", ["/", "/_ccswitch/", "/_ccswitch/metrics", "/anything"])
async def test_the_host_ccswitch_through_the_regular_proxy_is_answered_whatever_the_path(chain, path):
    flow = await through(chain, flow_on("regular", path=path, host="ccswitch",
                                        headers=[("x-api-key", CLIENT_KEY)]))
    assert flow.response.status_code == (404 if path == "/anything" else 200)
    assert flow.request.host == "ccswitch"


async def test_another_host_through_the_regular_proxy_keeps_its_own_paths(chain):
    page, _, _ = chain
    flow = flow_on("regular", path="/_ccswitch/", host="api.anthropic.com")
    page.request(flow)
    assert flow.response is None


async def test_without_client_keys_loopback_sees_the_page_and_a_remote_peer_on_a_reverse_listener_does_not(
        chain, gateway):
    without_keys(gateway)
    local = await through(chain, flow_on())
    assert local.response.status_code == 200
    remote = await through(chain, flow_on(peer=REMOTE))
    assert remote.response.status_code == 401
    exposed = await through(chain, flow_on(mode=REVERSE + "@0.0.0.0:8082"))
    assert exposed.response.status_code == 401
    # a regular listener beyond loopback is guarded by mitmproxy's proxyauth (safety refuses it otherwise)
    regular = await through(chain, flow_on("regular", host="ccswitch", peer=REMOTE))
    assert regular.response.status_code == 200


@pytest.mark.parametrize("origin,status", [("https://evil.example", 403), ("http://127.0.0.1:8080", 200),
                                           ("https://ccswitch", 200)])
async def test_without_client_keys_a_page_of_another_site_gets_nothing(chain, gateway, origin, status):
    without_keys(gateway)
    flow = await through(chain, flow_on(path="/_ccswitch/status.json", headers=[("origin", origin)]))
    assert flow.response.status_code == status


async def test_head_has_the_headers_and_no_body(chain):
    flow = await through(chain, flow_on(path="/_ccswitch/metrics", method="HEAD", headers=[("x-api-key", CLIENT_KEY)]))
    assert flow.response.status_code == 200 and flow.response.content == b""
    assert flow.response.headers["content-type"] == CONTENT_TYPE


@pytest.mark.parametrize("path", ["/_ccswitch/", "/_ccswitch/status.json", "/_ccswitch/metrics"])
async def test_head_tells_the_length_a_get_would_send(chain, path):
    """RFC 9110 §8.6: a HEAD answer's content-length is the GET body's, never 0."""
    key = [("x-api-key", CLIENT_KEY)]
    get = await through(chain, flow_on(path=path, headers=key))
    head = await through(chain, flow_on(path=path, method="HEAD", headers=key))
    assert head.response.raw_content == b"" and len(get.response.raw_content) > 0
    assert head.response.headers["content-length"] == str(len(get.response.raw_content))
    assert list(head.response.headers.keys()) == list(get.response.headers.keys())


def test_a_finished_request_is_priced_once_for_budgets_and_the_page_alike(gateway, monkeypatch):
    priced, spent = [], []
    cost = Pricer.cost
    monkeypatch.setattr(Pricer, "cost", lambda self, *args: priced.append(cost(self, *args)) or priced[-1])
    monkeypatch.setattr(gateway.spend, "add", lambda who, name, usd, at: spent.append((who, usd)))
    gateway.record_job(finished(gateway.rules, Attempt("a", 200, None, 40, Usage(input_tokens=1000, output_tokens=300))))
    assert len(priced) == 1 and priced[0] > 0
    assert spent == [("upstream", priced[0]), ("client", priced[0])] and gateway.live.cost["a"] == priced[0]


@pytest.mark.parametrize("typed", ["Ab+Cd/Ef==-0123456789", "Ab%2BCd%2FEf%3D%3D-0123456789"], ids=["raw", "encoded"])
async def test_a_key_holding_plus_works_in_the_url_as_pasted_or_encoded(tmp_path, typed):
    from tests.mitm.conftest import open_gateway
    gateway = open_gateway(tmp_path, RULES.replace(f'client_keys: ["{CLIENT_KEY}"]',
                                                   'client_keys: ["Ab+Cd/Ef==-0123456789"]'))
    page, router, gate = LivePage(gateway), Router(gateway), ClientKeyGate(gateway)
    router.relay = object()
    router.started.set()
    with taddons.context(page, router, gate) as tctx:
        tctx.configure(page, listen_host="127.0.0.1")
        flow = await through((page, router, gate), flow_on(path=f"/_ccswitch/?key={typed}"))
        spaced = await through((page, router, gate), flow_on(path="/_ccswitch/?key=Ab Cd/Ef==-0123456789"))
    assert flow.response.status_code == 200 and spaced.response.status_code == 401
