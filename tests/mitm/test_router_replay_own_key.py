"""A replay of a routed flow carries no client's key (the flow shows `<redacted>`, and ccswitch
keeps none): an `auth: client` upstream, which would be sent the placeholder as the client's own
key, is left out, with a reason a person can act on; the key put back in the flow replays there."""

import json

from tests.mitm import test_router_replay
from tests.mitm.test_router import answer_sent, messages_flow, router_with_routes
from tests.mitm.test_router_replay import replay, routed_once
from tests.support.helpers import KEY_A

served = test_router_replay.served     # the fixture: a router whose dialer answers every job from `a`

OWN_KEY = "sk-test-the-clients-own-key-0042"

RULES = f"""
upstreams:
  - {{name: own, protocol: anthropic, base_url: 'http://127.0.0.1:9', auth: client}}
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{claude: [own, a]}}
"""


async def test_a_replay_without_the_clients_key_skips_the_upstream_that_takes_the_clients_own(served):
    router, dialer, recorded = served
    flow = await routed_once(router, key=OWN_KEY)
    first = dialer.jobs[0]
    assert [u.name for u in first.candidates] == ["own", "a"]
    assert ("x-api-key", OWN_KEY) in first.request.headers      # the first time: the client's own key
    await replay(router, flow)
    again = dialer.jobs[1]
    assert [u.name for u in again.candidates] == ["a"]
    [(name, why)] = again.skipped
    assert name == "own" and "x-api-key shows as <redacted>" in why and "auth: client" in why
    assert len(recorded) == 2


async def test_the_key_put_back_in_the_flow_replays_to_that_upstream(served):
    router, dialer, _ = served
    flow = await routed_once(router, key=OWN_KEY)
    flow.request.headers["x-api-key"] = OWN_KEY        # edited in mitmweb before the replay
    await replay(router, flow)
    assert [u.name for u in dialer.jobs[1].candidates] == ["own", "a"]


async def test_a_replay_that_only_such_an_upstream_could_take_is_refused_with_why(served, gateway):
    router, dialer, _ = served
    router_with_routes(gateway, claude=["own"])
    flow = await routed_once(router, key=OWN_KEY)
    await replay(router, flow)
    assert len(dialer.jobs) == 1        # nothing went upstream with the placeholder for a key
    assert flow.response.status_code == 401
    message = json.loads(flow.response.content)["error"]["message"]
    assert "shows as <redacted>" in message and "put the key back in the flow" in message


async def test_a_key_in_the_query_shown_redacted_counts_too(served):
    router, dialer, _ = served
    flow = messages_flow({"model": "m", "messages": []}, key=None, path="/v1/messages?key=" + OWN_KEY)
    await router.request(flow)
    router.response(flow)
    await answer_sent()
    flow.live = False
    await replay(router, flow)
    again = dialer.jobs[1]
    assert [u.name for u in again.candidates] == ["a"] and "?key shows as <redacted>" in again.skipped[0][1]


async def test_the_key_put_back_in_one_header_replays_there_though_another_still_shows_the_placeholder(served):
    router, dialer, _ = served
    flow = await routed_once(router, key=OWN_KEY)
    flow.request.headers["x-api-key"] = OWN_KEY
    flow.request.headers["authorization"] = "<redacted>"     # shown so from the first request on
    await replay(router, flow)
    again = dialer.jobs[1]
    assert [u.name for u in again.candidates] == ["own", "a"]


async def test_a_bearer_key_shown_redacted_counts_too_whatever_the_case_of_its_header(served):
    # a client sending `Authorization: Bearer …` (a header's case is kept on the flow)
    router, dialer, _ = served
    flow = messages_flow({"model": "m", "messages": []}, key=None)
    flow.request.headers["Authorization"] = f"Bearer {OWN_KEY}"
    await router.request(flow)
    router.response(flow)
    await answer_sent()
    flow.live = False
    assert ("Authorization", f"Bearer {OWN_KEY}") in dialer.jobs[0].request.headers
    await replay(router, flow)
    again = dialer.jobs[1]
    assert [u.name for u in again.candidates] == ["a"] and "Authorization shows as <redacted>" in again.skipped[0][1]
