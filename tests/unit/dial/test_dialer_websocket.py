"""Bridged Codex turns through the dialer to `websocket: true` upstreams (mock upstreams'
Responses WebSockets) and HTTPS ones: incremental turns on the socket that issued the previous
response, full input after a failover either way, failures before the first event failed over and
counted, a break after it ending the turn with an in-band error."""

import json

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.dial.dialer import Dialer
from ccswitch.dial.job import Job
from ccswitch.dial.ws_bridge import WsSink
from ccswitch.dial.ws_upstream import UpstreamSockets
from ccswitch.routing.health import HealthBoard
from ccswitch.vocab import Endpoint, Protocol, Route
from ccswitch.wire.exchange import ClientRequest
from ccswitch.wire.ws_chain import Chain, for_upstream
from tests.support.helpers import KEY_A, KEY_B, MemorySink
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import cut_after, error_event_after, hang_before_headers, ok, status

TOOL = ("shell", {"command": ["echo", "hello"]})


def rules_for(a, b, a_ws=True, b_ws=False, hold_back="2s"):
    return parse_rules(f"""
timeouts: {{connect: 2s, first_byte: 2s, total: 5s, idle: 2s}}
failover: {{retry_backoff: 10ms, hold_back: {hold_back}}}
upstreams:
  - {{name: a, protocol: openai-responses, base_url: '{a.base_url}/v1', api_key: '{KEY_A}', websocket: {a_ws}}}
  - {{name: b, protocol: openai-responses, base_url: '{b.base_url}/v1', api_key: '{KEY_B}', websocket: {b_ws}}}
routes: {{codex: [a, b]}}
""")


def user(text):
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


class Conversation:
    """One client socket's turns, as the bridge serves them (chain, upstream sockets, WsSink)."""

    def __init__(self, rules, allow_url=loopback_url):
        self.rules, self.chain, self.sockets = rules, Chain(), UpstreamSockets()
        self.health = HealthBoard()
        self.dialer = Dialer(self.health, allow_url=allow_url)
        self.last_id = None

    async def turn(self, *items, full=False):
        frame = {"type": "response.create", "model": "gpt-5-codex", "instructions": "be brief",
                 "input": list(items), "store": False, "stream": True}
        if self.last_id and not full:
            frame["previous_response_id"] = self.last_id
        turn = self.chain.prepare(frame)
        request = ClientRequest(route=Route.CODEX, endpoint=Endpoint.WEBSOCKET, method="POST",
                                url="https://api.openai.com/v1/responses",
                                headers=[("authorization", "Bearer client"),
                                         ("openai-beta", "responses_websockets=2026-02-06")],
                                body=json.dumps(turn.body).encode(), json=turn.body, model="gpt-5-codex",
                                stream=True, client_protocol=Protocol.RESPONSES)
        candidates = [self.rules.upstream(name) for name in self.rules.routes.for_route(Route.CODEX)]
        job = Job(request=request, rules=self.rules, candidates=candidates, upstream_sockets=self.sockets, turn=turn)
        for upstream in candidates:
            if (shaped := for_upstream(turn, upstream.name)) is not turn.body:
                job.converted[upstream.name] = shaped
        sent = []

        async def send(text):
            sent.append(json.loads(text))

        await self.dialer.run(job, WsSink(send, self.chain, job))
        self.last_id = self.chain.last_id
        return job, sent

    async def close(self):
        self.sockets.close()
        await self.dialer.aclose()


def sent_upstream(mock):
    """What each turn sent `mock`: frames over its socket and POST bodies, in order."""
    return [r.json for r in mock.requests if r.protocol]


async def test_turns_continue_on_the_socket_that_issued_the_previous_response(mock_a, mock_b):
    mock_a.script(ok(tool=TOOL), ok())
    talk = Conversation(rules_for(mock_a, mock_b))
    try:
        job, sent = await talk.turn(user("run echo hello"))
        assert job.upstream == "a" and job.status == 200 and sent[-1]["type"] == "response.completed"
        first_id = sent[-1]["response"]["id"]
        call = next(e["item"] for e in sent if e["type"] == "response.output_item.done")
        assert call["type"] == "function_call"
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "hello"}
        job, sent = await talk.turn(output)
        assert job.upstream == "a" and sent[-1]["type"] == "response.completed"
        first, second = mock_a.frames()
        assert first.socket == second.socket == 1
        assert "previous_response_id" not in first.json and first.json["input"] == [user("run echo hello")]
        assert second.json["previous_response_id"] == first_id and second.json["input"] == [output]
        assert first.json["model"] == "gpt-5-codex" and first.json["type"] == "response.create"
        assert first.headers["authorization"] == f"Bearer {KEY_A}" and "Bearer client" not in json.dumps(first.headers)
        assert first.headers["openai-beta"] == "responses_websockets=2026-02-06"
        assert job.attempts[0].usage is not None and job.attempts[0].usage.input_tokens == 25
        assert mock_b.requests == []
    finally:
        await talk.close()


async def test_a_failover_from_a_websocket_upstream_sends_the_full_input_over_https_and_back(mock_a, mock_b):
    mock_a.script(ok(), status(503))          # turn 2: a's socket answers an in-band 503
    talk = Conversation(rules_for(mock_a, mock_b))
    try:
        await talk.turn(user("one"))
        job, sent = await talk.turn(user("two"))
        assert job.upstream == "b" and [a.status for a in job.attempts] == [503, 200]
        assert talk.health.get("a").failures == 1 and talk.health.get("a").last_error == "HTTP 503"
        assert sent[-1]["type"] == "response.completed" and not any(e["type"] == "error" for e in sent)
        over_https = mock_b.last()
        assert over_https.method == "POST" and over_https.socket is None
        assert "previous_response_id" not in over_https.json and "type" not in over_https.json
        users = [item["content"][0]["text"] for item in over_https.json["input"] if item.get("role") == "user"]
        assert users == ["one", "two"] and len(over_https.json["input"]) == 3     # with turn 1's answer
        # turn 3 is back on a (first in the route): its socket did not issue b's response, so in full
        await talk.turn(user("three"))
        third = mock_a.frames()[-1]
        assert third.socket == 1 and "previous_response_id" not in third.json and len(third.json["input"]) == 5
    finally:
        await talk.close()


async def test_a_failover_from_https_onto_a_websocket_upstream_starts_it_with_the_full_input(mock_a, mock_b):
    mock_a.script(ok(), status(503), status(503))     # a is HTTPS here, b the websocket one
    talk = Conversation(rules_for(mock_a, mock_b, a_ws=False, b_ws=True))
    try:
        await talk.turn(user("one"))
        job, sent = await talk.turn(user("two"))
        assert job.upstream == "b"
        from_b = sent[-1]["response"]["id"]
        job, _ = await talk.turn(user("three"))     # a fails again: b's socket issued the last response
        assert job.upstream == "b"
        second, third = mock_b.frames()
        assert second.socket == third.socket == 1
        assert "previous_response_id" not in second.json and len(second.json["input"]) == 3
        assert third.json["previous_response_id"] == from_b and third.json["input"] == [user("three")]
        assert all("previous_response_id" not in body for body in sent_upstream(mock_a))
    finally:
        await talk.close()


async def test_a_refused_handshake_fails_over_and_counts(mock_a, mock_b):
    mock_a.refuse_websocket = 503
    talk = Conversation(rules_for(mock_a, mock_b))
    try:
        job, sent = await talk.turn(user("one"))
        assert job.upstream == "b" and sent[-1]["type"] == "response.completed"
        assert job.attempts[0].error == "WebSocket handshake refused with HTTP 503"
        assert talk.health.get("a").failures == 1 and len(talk.sockets) == 0
    finally:
        await talk.close()


@pytest.mark.parametrize("refusal", [404, 405])
async def test_an_upstream_without_a_websocket_gets_the_turn_over_https_and_no_failure(mock_a, mock_b, refusal):
    # an HTTPS-only relay marked `websocket: true`: each turn was a failure of it (7 s of Codex's
    # reconnecting when it was the only upstream, and a cooldown in the end), though its HTTPS
    # would have served
    mock_a.refuse_websocket = refusal
    talk = Conversation(rules_for(mock_a, mock_b))
    try:
        job, sent = await talk.turn(user("one"))
        assert job.upstream == "a" and sent[-1]["type"] == "response.completed" and len(job.attempts) == 1
        job, sent = await talk.turn(user("two"))
        assert job.upstream == "a" and sent[-1]["type"] == "response.completed"
    finally:
        await talk.close()
    assert talk.health.get("a").failures == 0 and not mock_b.requests
    posts = [r for r in mock_a.requests if r.method == "POST"]
    assert len(posts) == 2 and all("responses_websockets" not in r.headers.get("openai-beta", "") for r in posts)
    assert mock_a.upgrades_refused == 1                                     # asked once, then known


async def test_a_socket_closed_before_the_first_event_fails_over(mock_a, mock_b):
    mock_a.script(cut_after(0))
    talk = Conversation(rules_for(mock_a, mock_b))
    try:
        job, sent = await talk.turn(user("one"))
        assert job.upstream == "b" and job.attempts[0].error == "connection closed"
        assert talk.health.get("a").failures == 1 and sent[-1]["type"] == "response.completed"
    finally:
        await talk.close()


async def test_a_websocket_upstream_silent_past_first_byte_fails_over_and_counts(mock_a, mock_b):
    # its own socket is under no max_connections: the wait was the upstream's, not ccswitch's queue,
    # yet it read as "no free connection" and never counted against the upstream
    mock_a.script(hang_before_headers(2))
    rules = parse_rules(f"""
timeouts: {{connect: 2s, first_byte: 300ms, total: 5s, idle: 2s}}
failover: {{retry_backoff: 10ms}}
upstreams:
  - {{name: a, protocol: openai-responses, base_url: '{mock_a.base_url}/v1', api_key: '{KEY_A}', websocket: true}}
  - {{name: b, protocol: openai-responses, base_url: '{mock_b.base_url}/v1', api_key: '{KEY_B}'}}
routes: {{codex: [a, b]}}
""")
    talk = Conversation(rules)
    try:
        job, sent = await talk.turn(user("one"))
        assert job.upstream == "b" and sent[-1]["type"] == "response.completed"
        assert "no free connection" not in job.attempts[0].error
        assert talk.health.get("a").failures == 1
    finally:
        await talk.close()


async def test_a_break_after_the_first_event_ends_the_turn_in_band_and_the_next_goes_in_full(mock_a, mock_b):
    mock_a.script(ok(), cut_after(5))
    talk = Conversation(rules_for(mock_a, mock_b, hold_back="0s"))     # the first event commits the turn
    try:
        await talk.turn(user("one"))
        job, sent = await talk.turn(user("two"))
        assert job.upstream == "a" and len(job.attempts) == 1 and mock_b.requests == []
        # the response it began, failed: Codex shows its message (it passes over an `error` event)
        assert sent[0]["type"] == "response.created" and sent[-1]["type"] == "response.failed"
        assert sent[-1]["response"]["id"] == sent[0]["response"]["id"]
        assert sent[-1]["response"]["error"]["message"].startswith("upstream a: ")
        assert talk.chain.last_id is None                      # dropped: Codex resends in full
        job, _ = await talk.turn(user("one"), user("two"), user("again"), full=True)
        last = mock_a.frames()[-1]
        assert last.socket == 2 and "previous_response_id" not in last.json and len(last.json["input"]) == 3
    finally:
        await talk.close()


async def test_without_a_client_socket_a_websocket_upstream_is_reached_over_https(mock_a, mock_b):
    talk = Conversation(rules_for(mock_a, mock_b))
    try:
        frame = {"type": "response.create", "model": "gpt-5-codex", "input": [user("one")]}
        turn = talk.chain.prepare(frame)
        request = ClientRequest(route=Route.CODEX, endpoint=Endpoint.RESPONSES, method="POST",
                                url="https://api.openai.com/v1/responses", headers=[],
                                body=json.dumps(turn.body).encode(), json=turn.body, model="gpt-5-codex",
                                stream=True, client_protocol=Protocol.RESPONSES)
        # a POST /v1/responses: the job carries no upstream sockets
        job = Job(request=request, rules=talk.rules, candidates=[talk.rules.upstream("a")])
        sink = MemorySink()
        await talk.dialer.run(job, sink)
        assert sink.status == 200 and mock_a.last().method == "POST" and mock_a.frames() == []
    finally:
        await talk.close()


async def test_the_url_guard_is_asked_before_a_socket_is_opened(mock_a, mock_b):
    talk = Conversation(rules_for(mock_a, mock_b), allow_url=lambda url: url.startswith(mock_b.base_url))
    try:
        job, _ = await talk.turn(user("one"))
        assert job.upstream == "b" and job.attempts[0].error == "refused by the URL guard"
        assert mock_a.requests == [] and len(talk.sockets) == 0
    finally:
        await talk.close()


async def test_when_every_attempt_fails_before_content_codex_gets_the_error_event_with_its_status(mock_a, mock_b):
    mock_a.script(error_event_after(1))
    mock_b.script(error_event_after(1))
    talk = Conversation(rules_for(mock_a, mock_b, a_ws=False, b_ws=False))
    try:
        job, sent = await talk.turn(user("hi"))
    finally:
        await talk.close()
    assert len(job.attempts) == 2 and job.error.startswith("stream error: server_error")
    # not "status 200" with the held events as its message: Codex retries on what the status says
    assert sent == [{"type": "error", "status": 500, "error": {"type": "server_error",
        "code": "server_error", "message": "The server had an error processing your request."}}]


async def test_a_responses_error_event_before_content_reaches_codex_with_the_status_it_stands_for(mock_a, mock_b):
    # a Responses `error` event has its code and message at its top: it came as status 200 with the
    # held events as its message, and Codex waited for good
    def stream(code):
        return (b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
                b'"response":{"id":"resp_1","object":"response","status":"in_progress","output":[]}}\n\n'
                b'event: error\ndata: {"type":"error","sequence_number":1,"code":"' + code +
                b'","message":"Rate limit reached","param":null}\n\n')
    for mock in (mock_a, mock_b):
        mock.script(status(200, body=stream(b"rate_limit_exceeded"), headers={"content-type": "text/event-stream"}))
    talk = Conversation(rules_for(mock_a, mock_b, a_ws=False, b_ws=False))
    try:
        job, sent = await talk.turn(user("hi"))
    finally:
        await talk.close()
    assert len(job.attempts) == 2
    assert sent == [{"type": "error", "status": 429, "error": {"type": "rate_limit_error",
        "code": "rate_limit_exceeded", "message": "Rate limit reached", "param": None}}]


async def test_an_item_the_serving_upstream_refused_stays_out_of_the_chain_and_is_never_its_own(mock_a, mock_b):
    """Through the bridge's own sink: the chain keeps the turn at `response.completed`, during
    the stream, so it must know by then what the upstream was sent (not the refused item)."""
    from ccswitch.wire.reasoning import seal_of
    from tests.support.mock_upstream import ok, status
    from tests.unit.dial.test_dialer import FOREIGN_REASONING_400
    mock_a.script(status(400, body=FOREIGN_REASONING_400), ok(sealed="ENC-A-1"))
    talk = Conversation(rules_for(mock_a, mock_b, a_ws=False, b_ws=False))
    try:
        foreign = {"type": "reasoning", "summary": [], "encrypted_content": "ENC-X"}
        job, _ = await talk.turn(user("one"), foreign, user("two"), full=True)
        assert job.upstream == "a" and job.status == 200
        kept = [item.get("encrypted_content") for item in talk.chain.last_input if item["type"] == "reasoning"]
        assert kept == [] and seal_of(foreign) not in talk.chain.made_by
    finally:
        await talk.close()
