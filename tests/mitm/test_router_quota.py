"""The router's own 429 when every upstream is rate limited with a known reset, and what the
flow shows about the choice (addon tests, no sockets: nothing reaches an upstream)."""

import json
import time

from mitmproxy.test import taddons

from ccswitch.dial.relay import Relay
from ccswitch.mitm.router import Router
from ccswitch.routing.changes import QuotaForget
from tests.mitm.test_router import messages_flow
from tests.support.helpers import CLIENT_KEY, KEY_A

RULES = f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: b, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: c, protocol: openai-chat, base_url: 'http://127.0.0.1:9/v1', api_key: '{KEY_A}'}}
routes: {{claude: [a, b], chat: [c]}}
"""


def full(gateway, name, reset_in):
    gateway.quota.record(name, [("anthropic-ratelimit-unified-status", "rejected"),
                                ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
                                ("anthropic-ratelimit-unified-5h-reset", str(int(time.time() + reset_in)))])


async def test_every_upstream_rate_limited_with_a_known_reset_is_ccswitchs_own_429(gateway):
    router = Router(gateway)
    router.relay = Relay(None)
    router.started.set()
    full(gateway, "a", 300)
    gateway.health.record_rate_limit("b", "HTTP 429", seconds=90.2, reset_known=True)
    recorded = []
    gateway.ledger = type("L", (), {"add": lambda self, table, row: recorded.append(row)})()
    with taddons.context(router):
        flow = messages_flow({"model": "m", "messages": []})
        await router.request(flow)
    assert flow.response.status_code == 429
    assert flow.response.headers["retry-after"] == "91"           # whole seconds until the soonest reset
    assert flow.response.headers["anthropic-ratelimit-unified-status"] == "rejected"
    reset = int(flow.response.headers["anthropic-ratelimit-unified-reset"])
    assert abs(reset - (time.time() + 91)) < 3
    body = json.loads(flow.response.content)
    assert body["type"] == "error" and "a is full until" in body["error"]["message"]
    # the comment says why, as the body does (mitmweb shows the comment in the flow list)
    assert flow.comment == f"ccswitch: answered 429 itself: {body['error']['message']}"
    assert recorded and recorded[0]["status"] == 429 and recorded[0]["attempts"] == 0 and recorded[0]["upstream"] is None


async def test_a_chat_client_gets_the_429_in_openai_format_without_anthropic_headers(gateway):
    router = Router(gateway)
    router.relay = Relay(None)
    router.started.set()
    full(gateway, "c", 60)
    with taddons.context(router):
        flow = messages_flow({"model": "m", "messages": []}, host="api.openai.com", path="/v1/chat/completions")
        await router.request(flow)
    assert flow.response.status_code == 429 and int(flow.response.headers["retry-after"]) in (59, 60)
    assert "anthropic-ratelimit-unified-status" not in flow.response.headers
    assert "type" not in json.loads(flow.response.content)


async def test_one_upstream_cooling_without_a_known_reset_keeps_the_route_open(gateway):
    router = Router(gateway)
    router.relay = Relay(None)
    router.started.set()
    router.relay.port = 4242
    full(gateway, "a", 300)
    gateway.health.record_rate_limit("b", "HTTP 429", seconds=600, reset_known=False)
    with taddons.context(router):
        flow = messages_flow({"model": "m", "stream": True, "messages": [],
                              "metadata": {"user_id": "user_1_session_2"}})
        await router.request(flow)
    assert flow.response is None                                  # handed to the relay: b is tried anyway
    job = router.jobs[flow.id]
    assert [u.name for u in job.candidates] == ["b"] and job.session == "user_1_session_2"
    assert job.why_first == "recovers first" and job.skipped[0][0] == "a" and "full until" in job.skipped[0][1]


async def test_a_session_named_with_a_key_of_the_rules_is_planned_and_bound_under_its_scrubbed_name(gateway):
    """The ledger stored it scrubbed, but the binding (and, with Redis, what every instance is
    told) kept the key in clear."""
    router = Router(gateway)
    router.relay = Relay(None)
    router.started.set()
    router.relay.port = 4242
    with taddons.context(router):
        flow = messages_flow({"model": "m", "stream": True, "messages": [],
                              "metadata": {"user_id": f"user_1_session_{KEY_A}"}})
        await router.request(flow)
    job = router.jobs[flow.id]
    assert KEY_A not in job.session and job.session.startswith("user_1_session_")


async def test_a_reload_with_another_key_forgets_the_old_accounts_full_windows(gateway, tmp_path):
    """A spent key swapped for a fresh one: the upstream is another account, not full any more;
    an upstream whose key stayed keeps what its answers said."""
    from tests.support.helpers import KEY_B, reload_settled
    gateway.sync_upstreams()   # as at start-up
    full(gateway, "a", 300)
    full(gateway, "b", 300)
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace(f"name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'",
                                  f"name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_B}'"))
    old_account = [change for change in gateway.boards.view() if getattr(change, "upstream", None) == "a"]
    told = []
    gateway.boards.listen(told.append)      # as a shared state listens
    assert reload_settled(gateway.rules_file)
    gateway.sync_upstreams()
    # not told to other instances: those still on the old key keep its windows, and a forget
    # would wipe what those already on the new key learnt of it
    assert not [change for change in told if isinstance(change, QuotaForget)]
    assert gateway.quota.full_until("a", 0.95) is None
    assert gateway.quota.full_until("b", 0.95) is not None
    # what another instance (or the shared store) still holds of the old key is not taken back
    assert old_account
    for change in old_account:
        gateway.boards.apply(change)
    assert gateway.quota.full_until("a", 0.95) is None
