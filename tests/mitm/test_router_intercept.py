"""mitmweb's intercept on a routed flow.  mitmproxy runs ccswitch's request hook (a script's)
before its intercept addon's, in the same pass, and then waits for a stopped flow to be resumed:
these tests drive that pass with mitmproxy's own addon manager, ccswitch ahead of the intercept
addon as in mitmweb.  A routed flow the filter matches stops before anything is sent, and the
request as the user left it is what is routed."""

import asyncio
import json
import time

import pytest
from mitmproxy.addons.intercept import Intercept
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons

from ccswitch.dial.relay import Relay
from ccswitch.mitm.router import Router
from tests.mitm.test_router import RULES, messages_flow  # noqa: F401  (RULES: the gateway's)
from tests.mitm.test_router_replay import Answering
from tests.support.helpers import CLIENT_KEY

ORIGINAL = {"model": "m", "messages": [{"role": "user", "content": "ORIGINAL"}]}
EDITED = {"model": "m", "messages": [{"role": "user", "content": "EDITED"}]}


@pytest.fixture
def proxy(gateway):
    """(master, router, dialer): the router ahead of mitmproxy's intercept addon."""
    router, dialer = Router(gateway), Answering()
    router.relay, router.dialer = Relay(None), dialer
    router.relay.port = 4242
    router.started.set()
    gateway.record_job = lambda job: None
    with taddons.context(router, Intercept()) as tctx:
        yield tctx, router, dialer


def intercepting(tctx, expression: str) -> None:
    tctx.configure(tctx.master.addons.get("intercept"), intercept=expression)


async def request_hook(master, flow) -> None:
    """What mitmproxy does for a request: every addon's hook, then the wait for a stopped flow."""
    await master.addons.handle_lifecycle(HttpRequestHook(flow))
    await flow.wait_for_resume()


async def stopped(flow, hook: asyncio.Task) -> None:
    for _ in range(100):
        if flow.intercepted or hook.done():
            break
        await asyncio.sleep(0.01)
    assert flow.intercepted and not hook.done()


def edit(flow, body: dict) -> None:
    """mitmweb's edit of a flow's request body (PUT /flows/<id>)."""
    flow.backup()
    flow.request.content = json.dumps(body).encode()


@pytest.mark.parametrize("expression", ["~q & ~u /v1/messages", "~u /v1/messages"])
async def test_an_intercepted_request_is_sent_only_once_resumed_and_as_edited(proxy, expression):
    tctx, router, dialer = proxy
    intercepting(tctx, expression)
    flow = messages_flow(ORIGINAL)
    hook = asyncio.ensure_future(request_hook(tctx.master, flow))
    await stopped(flow, hook)          # `~q` too: nothing is answered yet
    await asyncio.sleep(0.05)
    assert dialer.jobs == [] and flow.response is None
    assert flow.request.headers["x-api-key"] == "<redacted>"    # while it is shown stopped
    # what ccswitch will do with it: the comment was empty while it waited
    assert flow.comment.startswith("ccswitch: held by the intercept; once resumed, routed by the claude route (")
    edit(flow, EDITED)
    flow.resume()
    await asyncio.wait_for(hook, 2)    # no second stop of the same request
    [job] = dialer.jobs
    assert job.request.json == EDITED and job.client is not None     # the client key was its own again
    assert flow.response.status_code == 200 and not flow.intercepted
    assert CLIENT_KEY not in repr(flow.request.headers.fields)


async def test_a_filter_matching_answers_stops_a_request_answered_whole_once_at_its_response(proxy):
    """It stopped twice, first with its answer set but nothing shown of where it came from (the
    reverse target's URL, no comment); a kill then left it in flight until the shutdown."""
    from mitmproxy.proxy.layers.http import HttpResponseHook
    tctx, router, dialer = proxy
    intercepting(tctx, "~u /v1/messages & ~s")
    flow = messages_flow(ORIGINAL)
    await asyncio.wait_for(request_hook(tctx.master, flow), 2)
    assert flow.response.status_code == 200 and not flow.intercepted and len(dialer.jobs) == 1
    await tctx.master.addons.handle_lifecycle(HttpResponseHook(flow))
    assert flow.intercepted and flow.comment.startswith("ccswitch: a: 200")    # its answer, shown
    flow.resume()


async def test_an_intercepted_stream_gets_its_job_once_resumed_with_the_edit(proxy):
    tctx, router, _ = proxy
    intercepting(tctx, "~u /v1/messages")
    flow = messages_flow({**ORIGINAL, "stream": True})
    hook = asyncio.ensure_future(request_hook(tctx.master, flow))
    await stopped(flow, hook)
    assert flow.id not in router.jobs and flow.request.host == "api.anthropic.com"
    edit(flow, {**EDITED, "stream": True})
    flow.resume()
    await asyncio.wait_for(hook, 2)
    assert router.jobs[flow.id].request.json == {**EDITED, "stream": True}
    assert (flow.request.host, flow.request.port) == ("127.0.0.1", 4242) and not flow.intercepted


async def test_an_intercepted_request_killed_meanwhile_is_sent_nowhere(proxy):
    tctx, router, dialer = proxy
    intercepting(tctx, "~q & ~u /v1/messages")
    flow = messages_flow(ORIGINAL)
    hook = asyncio.ensure_future(request_hook(tctx.master, flow))
    await stopped(flow, hook)
    flow.kill()                        # mitmweb's kill: it clears `intercepted`, and wakes no one
    await asyncio.wait_for(hook, 2)
    assert dialer.jobs == [] and flow.id not in router.jobs and flow.response is None
    assert not flow.intercepted and flow.error.msg == "Connection killed."


async def test_a_flow_ccswitch_does_not_route_is_left_to_the_intercept_addon(proxy):
    tctx, _, _ = proxy
    intercepting(tctx, "~u /v1/models")
    flow = messages_flow(path="/v1/models", method="GET")
    await tctx.master.addons.handle_lifecycle(HttpRequestHook(flow))
    assert flow.intercepted           # stopped as mitmproxy stops it, and left so
    assert flow.comment == "ccswitch: not routed (no route takes GET /v1/models): passed on as it came"


async def test_a_held_request_killed_keeps_its_keys_hidden_and_one_whose_client_left_goes_nowhere(proxy):
    tctx, router, dialer = proxy
    intercepting(tctx, "~q & ~u /v1/messages")
    killed, left = messages_flow(ORIGINAL), messages_flow(ORIGINAL)
    for flow in (killed, left):
        hook = asyncio.ensure_future(request_hook(tctx.master, flow))
        await stopped(flow, hook)
        if flow is killed:
            flow.kill()
        else:
            flow.client_conn.timestamp_end = time.time()    # the client gave up while the flow was held
            flow.resume()
        await asyncio.wait_for(hook, 2)
        # mitmweb is sent the flow after this pass, before the error hook: no key may be back on it
        assert CLIENT_KEY not in repr(flow.request.headers.fields)
    assert dialer.jobs == [] and router.jobs == {}
    # what it was to become ("once resumed, routed by…") is no longer what the comment says
    assert killed.comment == "ccswitch: killed while held by the intercept: sent nowhere"
    assert left.comment == "ccswitch: its client left while it was held by the intercept: sent nowhere"


async def test_a_held_request_of_a_route_listing_nothing_says_it_goes_on_unrouted_and_then_that_it_did(proxy):
    tctx, router, dialer = proxy
    assert not router.gateway.rules.routes.for_route("chat")
    intercepting(tctx, "~q & ~u /v1/chat/completions")
    flow = messages_flow({"model": "m", "messages": []}, path="/v1/chat/completions")
    hook = asyncio.ensure_future(request_hook(tctx.master, flow))
    await stopped(flow, hook)
    assert flow.comment == ("ccswitch: held by the intercept; once resumed, passed on unrouted "
                            "(the chat route lists no upstreams)")
    flow.resume()
    await asyncio.wait_for(hook, 2)
    assert dialer.jobs == [] and flow.comment == (
        "ccswitch: not routed (the chat route lists no upstreams): passed on as it came")


async def test_a_held_flow_s_comments_keep_the_user_s_note(proxy):
    """A replayed flow the user wrote on: the hold's word, and what became of the flow, come after the note."""
    tctx, _, _ = proxy
    intercepting(tctx, "~q & ~u /v1/chat/completions")
    unrouted = messages_flow({"model": "m", "messages": []}, path="/v1/chat/completions")
    unrouted.comment = "mine"
    hook = asyncio.ensure_future(request_hook(tctx.master, unrouted))
    await stopped(unrouted, hook)
    assert unrouted.comment.startswith("mine\nccswitch: held by the intercept; once resumed, ")
    unrouted.resume()
    await asyncio.wait_for(hook, 2)
    assert unrouted.comment == "mine\nccswitch: not routed (the chat route lists no upstreams): passed on as it came"
    intercepting(tctx, "~q & ~u /v1/messages")
    killed = messages_flow(ORIGINAL)
    killed.comment = "mine"
    hook = asyncio.ensure_future(request_hook(tctx.master, killed))
    await stopped(killed, hook)
    killed.kill()
    await asyncio.wait_for(hook, 2)
    assert killed.comment == "mine\nccswitch: killed while held by the intercept: sent nowhere"


async def test_an_answer_the_intercept_or_a_modify_option_may_change_waits_for_the_later_passes(gateway):
    """As the options are set and cleared while ccswitch runs (mitmweb's Intercept filter)."""
    from mitmproxy import http
    from mitmproxy.addons.modifybody import ModifyBody
    from mitmproxy.addons.modifyheaders import ModifyHeaders
    router, dialer = Router(gateway), Answering()
    router.relay, router.dialer = Relay(None), dialer
    router.relay.port = 4242
    router.started.set()
    gateway.record_job = lambda job: None
    with taddons.context(ModifyHeaders(), ModifyBody(), router, Intercept()) as tctx:
        intercepting(tctx, "~u /v1/messages & ~s")
        flow = messages_flow(ORIGINAL)
        await asyncio.wait_for(request_hook(tctx.master, flow), 2)
        assert type(flow.response) is http.Response
        intercepting(tctx, None)
        flow = messages_flow(ORIGINAL)
        await asyncio.wait_for(request_hook(tctx.master, flow), 2)
        assert type(flow.response).__name__ == "AnswerSentFirst"
        tctx.options.update(modify_headers=["/~s/x-a/1"])
        flow = messages_flow(ORIGINAL)
        await asyncio.wait_for(request_hook(tctx.master, flow), 2)
        assert type(flow.response) is http.Response
