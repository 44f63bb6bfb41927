"""A stored Responses answer is continued where it was issued: the official `openai` SDK's
`previous_response_id` through the real proxy, on a route that spreads requests over two
upstreams (each knows only the responses it issued)."""

import openai
import pytest

from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, status
from tests.support.proxy_process import Proxy

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
