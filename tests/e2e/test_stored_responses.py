"""A stored Responses answer is continued where it was issued: the official `openai` SDK's
`previous_response_id` through the real proxy, on a route that spreads requests over two
upstreams (each knows only the responses it issued), through one instance or two sharing Redis."""

import openai
import pytest
import redis

from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, status
from tests.support.proxy_process import Proxy
from tests.support.scale_out import instances, wait_for

RULES = """
upstreams:
  - {{name: resp-a, protocol: openai-responses, base_url: '{a}/v1', api_key: '{key_a}'}}
  - {{name: resp-b, protocol: openai-responses, base_url: '{b}/v1', api_key: '{key_b}'}}
routes:
  codex: {{upstreams: [resp-a, resp-b], strategy: weighted, sticky: 0}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stored")
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp / "rules.yaml"
        rules.write_text(RULES.format(a=a.base_url, b=b.base_url, key_a=KEY_A, key_b=KEY_B))
        with Proxy(rules, tmp) as proxy:
            yield proxy, a, b


def client(proxy) -> openai.OpenAI:
    return openai.OpenAI(api_key=CLIENT_KEY, base_url=proxy.reverse_url + "/v1", max_retries=0)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_each_follow_up_goes_to_the_upstream_that_issued_the_response_it_continues(world, stream):
    # weighted, no affinity: half the follow-ups went to the other upstream, which answered 400
    # "Previous response with id … not found"
    proxy, a, b = world
    sdk = client(proxy)
    for _ in range(12):
        a.clear(), b.clear()
        if stream:
            events = list(sdk.responses.create(model="gpt-x", input="hi", stream=True))
            first_id = events[-1].response.id
        else:
            first_id = sdk.responses.create(model="gpt-x", input="hi").id
        issuer = a if a.requests else b
        issuer.clear()
        follow_up = sdk.responses.create(model="gpt-x", input="and then?", previous_response_id=first_id)
        assert follow_up.output_text and len(issuer.requests) == 1
        assert issuer.last().json["previous_response_id"] == first_id


def test_a_follow_up_whose_issuer_fails_gets_its_error_not_another_upstream_s_400(world):
    proxy, a, b = world
    sdk = client(proxy)
    while True:                       # a response issued by resp-a
        a.clear(), b.clear()
        first_id = sdk.responses.create(model="gpt-x", input="hi").id
        if a.requests:
            break
    a.script(status(500))
    with pytest.raises(openai.InternalServerError):
        sdk.responses.create(model="gpt-x", input="and then?", previous_response_id=first_id)
    assert not b.requests


def test_a_follow_up_through_another_instance_goes_to_the_issuer(tmp_path, redis_url):
    # two instances behind a load balancer: the one a follow-up reaches learned the issuer from
    # the one that served the first request (before: it chose by its strategy, half went astray)
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    with MockUpstream("A") as a, MockUpstream("B") as b:
        a.stores_responses = b.stores_responses = True    # the other answers previous_response_not_found
        rules = f"state: {redis_url}\n" + RULES.format(a=a.base_url, b=b.base_url, key_a=KEY_A, key_b=KEY_B)
        with instances(rules, tmp_path) as (one, two):
            first_sdk, second_sdk = client(one), client(two)
            for _ in range(8):
                a.clear(), b.clear()
                before = set(store.scan_iter("ccswitch:r:*"))
                first_id = first_sdk.responses.create(model="gpt-x", input="hi").id
                issuer = a if a.requests else b
                wait_for(lambda known=before: set(store.scan_iter("ccswitch:r:*")) - known, timeout=2.0, pause=0.01)
                issuer.clear()
                follow_up = second_sdk.responses.create(model="gpt-x", input="and then?", previous_response_id=first_id)
                assert follow_up.output_text and len(issuer.requests) == 1
                assert issuer.last().json["previous_response_id"] == first_id
            # the last follow-up's issuer is handed to Redis a moment after its answer
            wait_for(lambda: len(list(store.scan_iter("ccswitch:r:*"))) >= 16, timeout=2.0, pause=0.01)
            kept = [store.pttl(key) for key in store.scan_iter("ccswitch:r:*")]
            assert len(kept) == 16 and all(86_000_000 < ttl <= 86_400_000 for ttl in kept)   # a day each, follow-ups too
            assert not any(first_id in key or KEY_A in value or KEY_B in value
                           for key in store.scan_iter("ccswitch:r:*") for value in [store.get(key)])
    store.close()


NOT_FOUND = {"error": {"message": "Previous response with id 'resp_elsewhere' not found.",
                       "type": "invalid_request_error", "param": "previous_response_id",
                       "code": "previous_response_not_found"}}


def test_a_follow_up_whose_issuer_ccswitch_does_not_know_goes_on_until_one_has_it(world):
    """Issued before a restart, or a moment ago through another instance whose word has not come
    yet: the upstream tried first answered `previous_response_not_found`, and the client got it."""
    proxy, a, b = world
    sdk = client(proxy)
    for _ in range(30):
        a.clear(), b.clear()
        a.script(status(400, body=NOT_FOUND))
        follow_up = sdk.responses.create(model="gpt-x", input="and then?", previous_response_id="resp_elsewhere")
        assert follow_up.output_text and len(b.requests) == 1
        if a.requests:          # resp-a was tried first, and said it has no such response
            break
    else:
        pytest.fail("resp-a was never tried first")
    a.clear(), b.clear()
    a.script(status(400, body=NOT_FOUND))
    b.script(status(400, body=NOT_FOUND))
    with pytest.raises(openai.BadRequestError) as raised:       # issued by neither: the last word
        sdk.responses.create(model="gpt-x", input="and then?", previous_response_id="resp_elsewhere")
    assert raised.value.code == "previous_response_not_found" and len(a.requests) == len(b.requests) == 1
