"""What the router does with answers as mitmproxy hands them back: which streams it passes on as
they come, and options it refuses."""

from dataclasses import replace

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons

from ccswitch.mitm.router import Router
from tests.mitm.test_router import RULES, messages_flow  # noqa: F401 - RULES: the gateway fixture's


def sse(flow, status=200, content_type="text/event-stream"):
    flow.response = http.Response.make(status, b"event: error\ndata: {}\n\n", {"content-type": content_type})
    return flow


async def test_an_answer_set_whole_from_the_hook_is_not_streamed_even_when_sse_typed(router):
    flow = messages_flow()
    await router.request(flow)
    job = router.jobs[flow.id]
    job.request = replace(job.request, stream=False)    # as a non-streamed job answered from the hook
    job.relayed = False
    router.responseheaders(sse(flow, 529))              # e.g. an upstream's SSE-typed error, passed on
    assert not flow.response.stream


async def test_a_routed_stream_and_an_unrouted_api_stream_go_as_they_come(router, gateway):
    routed = messages_flow()
    await router.request(routed)
    router.responseheaders(sse(routed))
    unrouted = messages_flow(path="/v1/chat/completions")      # the chat route has no upstreams here
    await router.request(unrouted)
    assert unrouted.id not in router.jobs and unrouted.response is None
    router.responseheaders(sse(unrouted))
    elsewhere = messages_flow(host="example.com", path="/events")
    router.responseheaders(sse(elsewhere))
    assert routed.response.stream and unrouted.response.stream and not elsewhere.response.stream


async def test_a_stream_typed_in_other_letter_case_goes_as_it_comes(router):
    flow = messages_flow()
    await router.request(flow)
    router.responseheaders(sse(flow, content_type="Text/Event-Stream; charset=UTF-8"))
    assert flow.response.stream


def test_a_max_body_that_is_not_positive_is_refused(gateway):
    router = Router(gateway)
    with taddons.context(router) as tctx:
        for bad in (0, -1):
            with pytest.raises(exceptions.OptionsError, match="ccswitch_max_body"):
                tctx.configure(router, ccswitch_max_body=bad)


def test_a_negative_keep_stream_is_refused(gateway):
    """A negative size would keep no content at all, and mitmweb's view of the flow then fails."""
    router = Router(gateway)
    with taddons.context(router) as tctx:
        tctx.configure(router, ccswitch_keep_stream=0)      # 0 keeps none, on purpose
        for bad in (-1, -5):
            with pytest.raises(exceptions.OptionsError, match="ccswitch_keep_stream must be 0 or more"):
                tctx.configure(router, ccswitch_keep_stream=bad)
        assert tctx.options.ccswitch_keep_stream == 0
