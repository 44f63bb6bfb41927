"""A routed flow replayed (mitmweb's replay, `client_replay`) is routed afresh: a new job with
its own comment and ledger row.  The flow shows where and what the upstream was sent (a regular
proxy's flow then no longer names an `intercept` host) and the client key as `<redacted>`: the
replay is the client's request again, as the client it replays."""

import asyncio
import json

import pytest
from mitmproxy.addons.clientplayback import ClientPlayback
from mitmproxy.test import taddons

from ccswitch.dial.job import Attempt
from ccswitch.dial.relay import JOB_HEADER
from tests.mitm.test_router import RULES, answer_sent, messages_flow  # noqa: F401  (RULES: the gateway's)
from tests.support.helpers import CLIENT_KEY

UPSTREAM_URL = "http://127.0.0.1:9/v1/messages"     # upstream a's


class Answering:
    """A dialer that serves every job from upstream `a`, under the model name `a-model`."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.jobs = []

    async def run(self, job, sink):
        self.jobs.append(job)
        await asyncio.sleep(self.seconds)
        job.sent_body = json.dumps({**job.request.json, "model": "a-model"}).encode()
        job.attempts.append(Attempt("a", 200, None, 7))
        job.upstream, job.upstream_model, job.status = "a", "a-model", 200
        job.sent_protocol = "anthropic"       # upstream a's, as the dialer notes it
        await sink.start(200, [("content-type", "application/json")], 2)
        await sink.write(b"{}")
        await sink.end()


@pytest.fixture
def served(router, gateway):
    """(router, dialer, recorded jobs) with mitmproxy's client playback beside the router."""
    recorded, dialer = [], Answering()
    router.dialer = dialer
    gateway.record_job = recorded.append
    with taddons.context(ClientPlayback(), router):
        yield router, dialer, recorded


async def routed_once(router, body=None, **flow_args):
    flow = messages_flow(body or {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, **flow_args)
    await router.request(flow)
    router.response(flow)
    await answer_sent()
    flow.live = False       # mitmproxy's, once the flow is over
    return flow


async def replay(router, flow) -> None:
    """What mitmweb's replay does: mitmproxy's playback prepares the flow, and its request hooks run."""
    from mitmproxy import ctx
    ctx.master.addons.get("clientplayback").start_replay([flow])
    assert flow.is_replay == "request" and flow.response is None
    flow.live = True
    await router.request(flow)
    router.response(flow)
    await answer_sent()


@pytest.mark.parametrize("mode", ["regular", "reverse:https://api.anthropic.com"])
async def test_a_replayed_routed_flow_is_routed_afresh_as_the_client_sent_it(served, mode):
    router, dialer, recorded = served
    flow = await routed_once(router, mode=mode)
    assert flow.request.url == UPSTREAM_URL and flow.request.headers["x-api-key"] == "<redacted>"
    assert json.loads(flow.request.content)["model"] == "a-model"     # what the upstream got
    flow.comment = "ccswitch: stale"      # ccswitch's word of the first time (a note of the user's stays)
    await replay(router, flow)
    first, again = dialer.jobs
    assert again is not first and len(recorded) == 2 and recorded[1] is again   # a row of its own
    assert again.request.url == "https://api.anthropic.com/v1/messages"
    assert again.request.json == first.request.json and again.request.json["model"] == "m"
    assert again.client == first.client is not None      # the client key's name, its key being redacted
    assert flow.response.status_code == 200 and flow.comment.startswith("ccswitch: a: 200 (7 ms)")
    assert flow.request.url == UPSTREAM_URL and CLIENT_KEY not in json.dumps(flow.get_state(), default=str)


async def test_a_replay_routes_what_the_user_edited(served):
    router, dialer, _ = served
    flow = await routed_once(router)
    flow.request.content = json.dumps({"model": "edited", "messages": []}).encode()
    flow.request.path = "/v1/messages/count_tokens"
    await replay(router, flow)
    again = dialer.jobs[-1]
    assert again.request.json["model"] == "edited" and again.request.endpoint == "count_tokens"
    assert again.request.url == "http://127.0.0.1:9/v1/messages/count_tokens"


async def test_a_replay_edited_into_a_request_no_route_takes_says_so_and_sends_no_placeholder(served):
    """It kept the comment of the request it replays, and went with `x-api-key: <redacted>`."""
    from mitmproxy import ctx
    router, dialer, _ = served
    flow = await routed_once(router)
    flow.request.path, flow.request.method, flow.request.content = "/v1/models", "GET", b""
    flow.request.headers["cookie"] = "<redacted>"
    flow.request.headers["x-note"] = "mine"
    ctx.master.addons.get("clientplayback").start_replay([flow])
    flow.live = True
    await router.request(flow)
    assert len(dialer.jobs) == 1 and flow.response is None       # passed on, not routed
    assert flow.comment == "ccswitch: not routed (no route takes GET /v1/models): passed on as it came"
    assert "x-api-key" not in flow.request.headers and "cookie" not in flow.request.headers
    assert flow.request.headers["x-note"] == "mine"


async def test_a_replay_is_not_cut_for_a_client_that_left_long_ago(served):
    router, dialer, recorded = served
    flow = await routed_once(router)
    flow.client_conn.timestamp_end = 1.0      # the replayed flow's client: gone since
    dialer.seconds = 0.3                      # three watch periods
    await replay(router, flow)
    assert flow.response.status_code == 200 and recorded[-1].error is None


async def test_a_streamed_replay_goes_to_the_relay_with_a_job_of_its_own(served):
    router, _, _ = served
    flow = await routed_once(router)     # answered whole; its replay asks for a stream
    flow.request.content = json.dumps({"model": "m", "stream": True, "messages": []}).encode()
    from mitmproxy import ctx
    ctx.master.addons.get("clientplayback").start_replay([flow])
    flow.live = True
    await router.request(flow)
    job = router.jobs[flow.id]
    assert flow.request.headers[JOB_HEADER] == job.token and (flow.request.host, flow.request.port) == ("127.0.0.1", 4242)


async def test_a_refusal_replayed_gets_a_ledger_row_of_its_own(served, gateway, monkeypatch):
    """Each row's request_id is its own (the ledger keeps one row per request_id): a replay keeps
    its flow's id, and a refusal's row named only that would be taken for the first one's copy."""
    router, _, _ = served
    rows = []
    monkeypatch.setattr(gateway, "record_own_answer", rows.append)
    flow = messages_flow({"model": "m"})
    flow.request.content = b"{not json"
    await router.request(flow)
    assert flow.response.status_code == 400
    flow.live = False
    await replay(router, flow)
    assert flow.response.status_code in (400, 401)      # (its key shows `<redacted>` once answered)
    assert len(rows) == 2 and len({row["request_id"] for row in rows}) == 2
    assert rows[0]["request_id"] == flow.id


async def test_a_copy_without_its_body_says_why_a_copy_made_while_streaming_has_none(served):
    # a duplicate made in mitmweb while the flow streamed replayed as a bare "the request has no body"
    router, dialer, recorded = served
    flow = await routed_once(router)
    flow.request.content = b""
    await replay(router, flow)
    assert flow.response.status_code == 400
    assert json.loads(flow.response.content)["error"]["message"] == (
        "the request has no body (a copy of a flow made while it streamed has none: copy it once it has ended)")


async def test_an_edited_replay_of_a_renamed_body_asks_for_the_clients_model_again(served):
    """The request tab shows the upstream's model name: an edit that leaves it (here only
    `max_tokens`) is routed as the client's model, which every upstream knows by its own name."""
    router, dialer, _ = served
    flow = await routed_once(router)
    body = json.loads(flow.request.content)
    assert body["model"] == "a-model"
    flow.request.content = json.dumps({**body, "max_tokens": 77}).encode()
    await replay(router, flow)
    again = dialer.jobs[-1]
    assert again.request.json["model"] == "m" and again.request.json["max_tokens"] == 77


async def test_an_edited_replay_of_a_converted_body_is_refused_with_why(served, gateway):
    """On the chat route the request tab shows the Anthropic body: read as a Chat request, an
    edit of it would lose its system prompt without a word."""
    from tests.mitm.test_router import router_with_routes
    router, dialer, recorded = served
    router_with_routes(gateway, chat=["a"])
    rows = []
    gateway.record_own_answer = rows.append
    chat = {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    flow = await routed_once(router, path="/v1/chat/completions", body=chat)
    assert flow.metadata["ccswitch"]["shown_protocol"] == "anthropic"
    flow.request.content = json.dumps({**json.loads(flow.request.content), "max_tokens": 33}).encode()
    await replay(router, flow)
    assert len(dialer.jobs) == 1 and flow.response.status_code == 400
    message = json.loads(flow.response.content)["error"]["message"]
    assert "converted from the client's" in message and "replay the flow unedited" in message
    # the row names the client and the model of the request it replays, as any refusal's does
    assert rows and (rows[-1]["status"], rows[-1]["client"], rows[-1]["model"]) == (400, "key-1", "m")


async def test_an_unedited_replay_of_a_converted_body_is_the_clients_request(served, gateway):
    from tests.mitm.test_router import router_with_routes
    router, dialer, _ = served
    router_with_routes(gateway, chat=["a"])
    chat = {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    flow = await routed_once(router, path="/v1/chat/completions", body=chat)
    await replay(router, flow)
    assert len(dialer.jobs) == 2 and dialer.jobs[1].request.json == chat


async def test_an_edited_replay_with_a_lone_surrogate_or_deep_nesting_is_still_routed(served):
    """JSON allows `\\ud83d` alone (a cut emoji); putting the client's model back must not fail
    on it, nor on nesting too deep to parse: the replay would pass on unrouted."""
    router, dialer, _ = served
    flow = await routed_once(router)
    flow.request.content = b'{"model": "a-model", "max_tokens": 5, "messages": [], "metadata": {"x": "\\ud83d"}}'
    await replay(router, flow)
    assert dialer.jobs[-1].request.json["model"] == "m"
    flow = await routed_once(router)
    flow.request.content = b'{"model": "a-model", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    await replay(router, flow)
    assert flow.response is not None and flow.response.status_code in (200, 400)


def test_a_converted_body_is_marked_so_though_no_upstream_answered():
    """A chat stream the client left before any answer still shows the Anthropic body it was
    sent: its edited replay is no Chat request either."""
    from ccswitch.config.load import parse_rules
    from ccswitch.mitm.flows import show_outcome
    from tests.mitm.test_router import messages_flow
    from tests.support.helpers import make_job
    rules = parse_rules("upstreams: [{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-1}]\n"
                        "routes: {chat: [a]}\n")
    job = make_job(rules, path="/v1/chat/completions", body={"model": "m", "messages": []})
    job.sent_body, job.sent_protocol = b'{"model": "m", "max_tokens": 5, "messages": []}', "anthropic"
    flow = messages_flow({"model": "m", "messages": []}, path="/v1/chat/completions")
    flow.metadata["ccswitch"] = {}
    show_outcome(flow, job)
    assert job.upstream is None and flow.metadata["ccswitch"]["shown_protocol"] == "anthropic"


@pytest.mark.parametrize("whose", ["ccswitch's", "the user's"])
async def test_a_replay_of_a_flow_marked_for_its_failover_starts_unmarked_but_a_user_s_mark_stays(served, whose):
    # ccswitch's mark said the original failed over; the replay's own attempts say whether it does
    from ccswitch.mitm.flows import WARNING, mark_for_a_look
    router, dialer, _ = served
    flow = await routed_once(router)
    if whose == "ccswitch's":
        mark_for_a_look(flow)
    else:
        flow.marked = WARNING           # set in mitmweb: the same mark, the user's
    await replay(router, flow)
    assert len(dialer.jobs) == 2 and flow.marked == ("" if whose == "ccswitch's" else WARNING)


async def test_a_replay_keeps_the_user_s_own_note_and_replaces_only_ccswitch_s_word(served):
    router, _, _ = served
    flow = await routed_once(router)
    flow.comment = "my own note: important\n" + flow.comment    # written in mitmweb, above ccswitch's
    for _ in range(2):
        await replay(router, flow)
        flow.live = False
        note, own = flow.comment.split("\n")
        assert note == "my own note: important" and own.startswith("ccswitch: a: 200 (")
    flow.comment = "only mine"
    await replay(router, flow)
    assert flow.comment.split("\n")[0] == "only mine" and flow.comment.count("ccswitch:") == 1


async def test_a_note_written_below_ccswitch_s_word_stays_through_replays(served):
    # mitmweb's comment box takes a note at its end, under ccswitch's line
    router, _, _ = served
    flow = await routed_once(router)
    flow.comment += "\nMY NOTE BELOW: key rotated?\nccswitch: quoted by me"
    for _ in range(2):
        await replay(router, flow)
        flow.live = False
        own, *notes = flow.comment.split("\n")
        assert own.startswith("ccswitch: a: 200 (") and notes == ["MY NOTE BELOW: key rotated?", "ccswitch: quoted by me"]


@pytest.mark.parametrize(("comment", "said", "notes"), [
    ("", None, ("", "")), ("ccswitch: a: 200 (3 ms)", None, ("", "")), ("mine", None, ("mine", "")),
    ("mine\nccswitch: x", None, ("mine", "")), ("two\nlines\nccswitch: x\nmore of it", None, ("two\nlines", "")),
    ("not ccswitch: x", None, ("not ccswitch: x", "")),
    # what ccswitch said last, found whole: the notes around it are the user's
    ("ccswitch: x\nturn 2: y\nbelow", "ccswitch: x\nturn 2: y", ("", "below")),
    ("above\nccswitch: x\n\nbelow\nccswitch: mine", "ccswitch: x", ("above", "below\nccswitch: mine")),
    # edited by the user (or only part of a line): from its first `ccswitch:` line on, as before
    ("ccswitch: x edited\nbelow", "ccswitch: x", ("", "")), ("ab ccswitch: x\nc", "ccswitch: x", ("ab ccswitch: x\nc", "")),
])
def test_a_users_notes_are_what_is_not_ccswitch_s_last_word(comment, said, notes):
    from ccswitch.mitm.flows import users_notes
    assert users_notes(comment, said) == notes


def test_ccswitch_s_word_with_nothing_to_say_leaves_the_note_as_it_was():
    from mitmproxy.test import tflow

    from ccswitch.mitm.flows import comment_on
    flow = tflow.tflow()
    flow.comment = "mine\nccswitch: old"
    comment_on(flow, "")
    assert flow.comment == "mine"
    comment_on(flow, "ccswitch: new")
    assert flow.comment == "mine\nccswitch: new"


@pytest.mark.parametrize(("endpoint", "stream", "said"), [("count_tokens", False, True), ("messages", True, True),
                                                     ("messages", False, "true")])
def test_a_refusal_s_row_says_stream_as_its_routed_twin_would(endpoint, stream, said):
    """count_tokens answers whole whatever its body says: a refused one's row too; and a `stream`
    that is not JSON's true is no stream, as the router reads it."""
    from ccswitch.clock import utc_now
    from ccswitch.mitm.known import Known
    from ccswitch.routing.classify import RouteMatch
    known = Known(utc_now(), body={"model": "m", "stream": said})
    row = known.own_answer_row("r", RouteMatch("claude", endpoint), 401, "no key")
    assert bool(row["stream"]) is stream
