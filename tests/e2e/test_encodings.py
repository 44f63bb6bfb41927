"""Compressed bodies through the real proxy: an upstream that answers br or zstd (streamed or
whole) is decoded for the client and counts as a success; one it cannot decode is named as
such; a client body sent br or zstd is decoded like gzip."""

import json

import httpx
import pytest

from tests.e2e.test_failover import ledger, wait_rows
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, StreamPacker, encoded, ok
from tests.support.proxy_process import Proxy

BODY = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"x-api-key": CLIENT_KEY}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("encodings")
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp / "rules.yaml"
        # one failure puts `a` in cooldown: a success that was counted as a failure would show
        rules.write_text(f"""
failover: {{threshold: 1, cooldown: 10m}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}'}}
  - {{name: b, protocol: anthropic, base_url: '{b.base_url}', api_key: '{KEY_B}'}}
routes: {{claude: [a, b]}}
""")
        with Proxy(rules, tmp) as proxy:
            yield proxy, a, b


def streamed_text(proxy: Proxy) -> tuple[httpx.Response, str]:
    text = []
    with httpx.stream("POST", proxy.reverse_url + "/v1/messages", json={**BODY, "stream": True},
                      headers=HEADERS, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and '"text_delta"' in line:
                text.append(json.loads(line[5:])["delta"]["text"])
    return r, "".join(text)


def whole_text(proxy: Proxy) -> tuple[httpx.Response, str]:
    r = httpx.post(proxy.reverse_url + "/v1/messages", json=BODY, headers=HEADERS, timeout=30)
    return r, "".join(block["text"] for block in r.json().get("content", []))


@pytest.mark.parametrize("encoding", ["br", "zstd"])
@pytest.mark.parametrize("ask", [streamed_text, whole_text], ids=["streamed", "whole"])
def test_a_br_or_zstd_answer_reaches_the_client_decoded_and_counts_as_a_success(world, encoding, ask):
    proxy, a, b = world
    a.script(encoded(encoding, text="squeezed answer"))
    r, text = ask(proxy)
    assert r.status_code == 200 and text == "squeezed answer"
    assert r.headers["x-ccswitch-upstream"] == "a" and r.headers["x-ccswitch-attempts"] == "1"
    assert "content-encoding" not in r.headers
    r, text = whole_text(proxy)               # not cooling down: no failure was counted
    assert r.headers["x-ccswitch-upstream"] == "a" and text == "Hello from mock A"


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_a_client_body_in_br_or_zstd_is_decoded_before_it_is_sent_on(world, encoding):
    proxy, a, b = world
    packed = StreamPacker(encoding).whole(json.dumps(BODY).encode())
    r = httpx.post(proxy.reverse_url + "/v1/messages", content=packed, timeout=30,
                   headers={**HEADERS, "content-type": "application/json", "content-encoding": encoding})
    assert r.status_code == 200, r.text
    assert a.last().json["messages"] == BODY["messages"] and "content-encoding" not in a.last().headers


def test_zz_an_encoding_the_proxy_cannot_decode_is_named_in_the_ledger(world):
    """Runs last: it puts `a` in cooldown."""
    proxy, a, b = world
    a.script(ok(headers={"content-encoding": "compress"}))
    r, text = whole_text(proxy)
    assert r.status_code == 200 and r.headers["x-ccswitch-upstream"] == "b"
    wait_rows(proxy, 1, "SELECT count(*) FROM attempts WHERE upstream = 'a' AND error IS NOT NULL")
    errors = ledger(proxy, "SELECT error FROM attempts WHERE upstream = 'a' AND error IS NOT NULL")
    assert errors == [("unsupported content-encoding 'compress' (asked for gzip, deflate)",)]
