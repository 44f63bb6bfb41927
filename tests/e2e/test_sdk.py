"""End to end: the official SDKs -> real mitmdump + ccswitch -> loopback mocks."""

import json
import ssl

import anthropic
import httpx
import openai
import pytest

from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, status, unnamed_events
from tests.support.proxy_process import Proxy

RULES = """
upstreams:
  - {{name: claude-a, protocol: anthropic, base_url: '{a}/api', api_key: '{key_a}',
     models: {{"claude-client": "claude-upstream"}}}}
  - {{name: claude-b, protocol: anthropic, base_url: '{b}', api_key: '{key_b}'}}
  - {{name: resp-a, protocol: openai-responses, base_url: '{a}/openai/v1', api_key: '{key_a}'}}
  - {{name: chat-b, protocol: openai-chat, base_url: '{b}/v1', api_key: '{key_b}'}}
routes:
  claude: [claude-a, claude-b]
  codex: [resp-a]
  chat: [chat-b]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp / "rules.yaml"
        rules.write_text(RULES.format(a=a.base_url, b=b.base_url, key_a=KEY_A, key_b=KEY_B))
        with Proxy(rules, tmp) as proxy:
            yield proxy, a, b
            assert KEY_A not in proxy.log() and KEY_B not in proxy.log() and CLIENT_KEY not in proxy.log()


@pytest.fixture(autouse=True)
def clean(world):
    _, a, b = world
    a.clear(), b.clear()


def trust(proxy):
    return ssl.create_default_context(cafile=str(proxy.ca_cert))


def anthropic_client(proxy, reverse):
    if reverse:
        return anthropic.Anthropic(api_key=CLIENT_KEY, base_url=proxy.reverse_url, max_retries=0)
    http = anthropic.DefaultHttpxClient(proxy=proxy.proxy_url, verify=trust(proxy))
    return anthropic.Anthropic(api_key=CLIENT_KEY, http_client=http, max_retries=0)


def openai_client(proxy, reverse):
    if reverse:
        return openai.OpenAI(api_key=CLIENT_KEY, base_url=proxy.reverse_url + "/v1", max_retries=0)
    http = openai.DefaultHttpxClient(proxy=proxy.proxy_url, verify=trust(proxy))
    return openai.OpenAI(api_key=CLIENT_KEY, http_client=http, max_retries=0)


def assert_key_swapped(mock, key):
    seen = mock.last()
    assert seen.headers.get("x-api-key") == key or seen.headers.get("authorization") == f"Bearer {key}"
    assert CLIENT_KEY not in json.dumps(seen.headers)


@pytest.mark.parametrize("reverse", [False, True], ids=["https_proxy", "reverse"])
def test_anthropic_sdk_stream(world, reverse):
    proxy, a, _ = world
    client = anthropic_client(proxy, reverse)
    with client.messages.stream(model="claude-client", max_tokens=20,
                                messages=[{"role": "user", "content": "hi"}],
                                extra_headers={"anthropic-beta": "test-beta-1"}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from mock A"
    assert final.usage.cache_read_input_tokens == 100
    seen = a.last()
    assert seen.path == "/api/v1/messages" and seen.json["model"] == "claude-upstream"
    assert seen.headers["anthropic-beta"] == "test-beta-1"
    assert_key_swapped(a, KEY_A)


def test_a_relay_leaving_out_the_event_lines_streams_as_the_anthropic_sdk_reads_it(world):
    # the SDK goes by each event's name: such a stream was passed on and failed in the SDK
    proxy, a, _ = world
    a.script(unnamed_events())
    with anthropic_client(proxy, True).messages.stream(model="claude-client", max_tokens=20,
                                                       messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from mock A" and final.usage.cache_read_input_tokens == 100
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize("reverse", [False, True], ids=["https_proxy", "reverse"])
def test_anthropic_sdk_non_stream_and_headers(world, reverse):
    proxy, a, _ = world
    client = anthropic_client(proxy, reverse)
    raw = client.messages.with_raw_response.create(model="claude-client", max_tokens=20,
                                                   messages=[{"role": "user", "content": "hi"}])
    message = raw.parse()
    assert message.content[0].text == "Hello from mock A"
    assert raw.headers["x-ccswitch-upstream"] == "claude-a" and raw.headers["x-ccswitch-attempts"] == "1"
    assert_key_swapped(a, KEY_A)


def test_anthropic_failover_to_second_upstream(world):
    proxy, a, b = world
    a.script(status(529))
    client = anthropic_client(proxy, reverse=True)
    with client.messages.stream(model="claude-client", max_tokens=20,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        assert "".join(stream.text_stream) == "Hello from mock B"
    assert_key_swapped(b, KEY_B)


@pytest.mark.parametrize("reverse", [False, True], ids=["https_proxy", "reverse"])
def test_openai_responses_stream_and_non_stream(world, reverse):
    proxy, a, _ = world
    client = openai_client(proxy, reverse)
    response = client.responses.create(model="gpt-x", input="hi")
    assert response.output_text == "Hello from mock A"
    assert a.last().path == "/openai/v1/responses"
    assert_key_swapped(a, KEY_A)
    events = list(client.responses.create(model="gpt-x", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello from mock A"


@pytest.mark.parametrize("reverse", [False, True], ids=["https_proxy", "reverse"])
def test_openai_chat_passthrough(world, reverse):
    proxy, _, b = world
    client = openai_client(proxy, reverse)
    chunks = list(client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from mock B"
    assert chunks[-1].usage is not None
    done = client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == "Hello from mock B"
    assert b.last().path == "/v1/chat/completions"
    assert_key_swapped(b, KEY_B)


def test_chat_passthrough_always_learns_usage_but_only_shows_it_when_asked(world):
    proxy, _, b = world
    client = openai_client(proxy, reverse=True)
    chunks = list(client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from mock B"
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert b.last().json["stream_options"] == {"include_usage": True}   # asked upstream regardless


def test_errors_in_client_format(world):
    proxy, a, _ = world
    client = anthropic_client(proxy, reverse=True)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.post("/v1/messages", content=b"{not json", cast_to=object,
                    options={"headers": {"content-type": "application/json"}})
    assert "not valid JSON" in str(err.value)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert "names no model" in str(err.value)
    assert a.requests == []


def test_other_paths_pass_untouched(world):
    proxy, a, _ = world
    # reverse mode to a loopback mock for an unrouted path: the request goes to the original target
    r = httpx.get(proxy.reverse_url + "/v1/models", headers={"x-api-key": CLIENT_KEY})
    # the reverse target is api.anthropic.com, which the loopback guard refuses: 502 from mitmproxy,
    # and nothing reached our upstreams
    assert r.status_code == 502 and a.requests == []


def test_ledger_has_a_row_for_every_routed_request(world):
    """Runs last in this module: every SDK request above left exactly one row."""
    import sqlite3
    import time
    proxy, a, b = world
    deadline = time.monotonic() + 10
    conn = sqlite3.connect(proxy.usage_db)
    routed = own = 0
    while time.monotonic() < deadline:
        routed = conn.execute("SELECT count(*) FROM requests WHERE upstream IS NOT NULL").fetchone()[0]
        own = conn.execute("SELECT count(*) FROM requests WHERE upstream IS NULL").fetchone()[0]
        if routed >= 1 and own >= 2:
            break
        time.sleep(0.1)
    by_route = dict(conn.execute("SELECT route, count(*) FROM requests WHERE upstream IS NOT NULL GROUP BY route"))
    assert set(by_route) == {"claude", "codex", "chat"}
    # Anthropic maps 1:1; OpenAI input is total minus cached (mock: 125 in, 100 cached)
    assert conn.execute("SELECT DISTINCT input_tokens, cache_read_tokens FROM requests "
                        "WHERE upstream IS NOT NULL").fetchall() == [(25, 100)]
    own_rows = conn.execute("SELECT status, attempts, error FROM requests WHERE upstream IS NULL").fetchall()
    assert {s for s, _, _ in own_rows} == {400} and all(n == 0 for _, n, _ in own_rows)
    assert routed >= 1
    for secret in (KEY_A, KEY_B, CLIENT_KEY):
        assert secret.encode() not in proxy.usage_db.read_bytes()
