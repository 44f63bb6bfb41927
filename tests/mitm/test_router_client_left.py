"""A streamed flow whose client leaves: mitmproxy ends the flow (its `error` hook, where the
comment is written) a moment before it closes the relay connection and the dialer's attempt
is cancelled.  The comment tells the attempt's real time, and that the client left."""

import asyncio
import re

import pytest
from mitmproxy.test import taddons, tflow

from ccswitch.dial.job import CLIENT_CLOSED
from ccswitch.dial.relay import JOB_HEADER
from ccswitch.mitm.router import Router
from tests.mitm.conftest import open_gateway
from tests.mitm.test_router import messages_flow
from tests.support.helpers import CLIENT_KEY, KEY_A, eventually
from tests.support.loopback_guard import loopback_url
from tests.support.mock_upstream import hang_before_headers, stall_after
from tests.unit.dial.test_relay import Exchange

WAITED = 0.3    # seconds the client stays before it leaves


@pytest.fixture
async def live(tmp_path, mock_a):
    """(router, recorded jobs): a started router whose dialer reaches `mock_a`."""
    gateway = open_gateway(tmp_path, f"""
client_keys: ["{CLIENT_KEY}"]
timeouts: {{connect: 2s, first_byte: 5s, total: 5s, idle: 5s}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
""")
    gateway.allow_url = loopback_url
    recorded = []
    gateway.record_job = recorded.append
    router = Router(gateway)
    with taddons.context(router):
        router.running()
        await router.starting
        try:
            yield router, recorded
        finally:
            await router.sockets.stop()
            await router.relay.stop()
            await router.dialer.aclose()


def shown_ms(comment: str) -> int:
    return int(re.search(r"\((\d+) ms\)", comment).group(1))


@pytest.mark.parametrize("behaviour,shown", [(stall_after(3, 3), f"a: 200 {CLIENT_CLOSED}"),
                                             (hang_before_headers(3), f"a: {CLIENT_CLOSED}")],
                         ids=["mid-stream", "before-the-head"])
async def test_a_stream_the_client_leaves_shows_its_attempts_real_time_and_client_closed(
        live, mock_a, behaviour, shown):
    router, recorded = live
    mock_a.script(behaviour)
    flow = messages_flow()
    await router.request(flow)
    relay_hop = await Exchange(router.relay).send(flow.request.headers[JOB_HEADER])   # what mitmproxy sends
    if behaviour.kind == "stall":
        await relay_hop.read_until(lambda ex: ex.response is not None)
    await asyncio.sleep(WAITED)
    flow.error = tflow.terr("Client disconnected.")
    router.error(flow)
    assert flow.comment.startswith(f"ccswitch: {shown} (") and shown_ms(flow.comment) >= WAITED * 1000
    assert flow.metadata["ccswitch"]["error"] == CLIENT_CLOSED
    relay_hop.writer.close()                   # then mitmproxy closes the relay connection
    await eventually(lambda: recorded)
    [job] = recorded
    assert job.error == CLIENT_CLOSED and job.attempts[0].error == CLIENT_CLOSED
    assert job.attempts[0].ms >= shown_ms(flow.comment)


async def test_a_client_gone_before_the_commit_keeps_what_the_upstream_counted_in_its_row(live, mock_a):
    # the upstream had said it counts the prompt (message_start); the row said no upstream and
    # 0 tokens, and the spend of budgets missed them (Claude Code's Esc at the start of an answer)
    from ccswitch.ledger.rows import request_row
    router, recorded = live
    mock_a.script(stall_after(1, 3))     # message_start, then nothing: held back, not committed
    flow = messages_flow()
    await router.request(flow)
    relay_hop = await Exchange(router.relay).send(flow.request.headers[JOB_HEADER])
    await eventually(lambda: router.jobs[flow.id].attempts)
    await asyncio.sleep(WAITED)
    flow.error = tflow.terr("Client disconnected.")
    router.error(flow)
    relay_hop.writer.close()
    await eventually(lambda: recorded)
    [job] = recorded
    row = request_row(job)
    assert row["error"] == CLIENT_CLOSED and row["status"] is None
    assert row["upstream"] == "a" and row["input_tokens"] == 25 and row["cache_read_tokens"] == 100


async def test_a_request_whose_client_left_while_the_router_waited_goes_nowhere(tmp_path, mock_a):
    # left to mitmproxy, it would be sent on as it came, the client's key and all, unless
    # mitmproxy had seen its client go (it can miss that: a request read after its client's close)
    gateway = open_gateway(tmp_path, f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
""")
    router = Router(gateway)         # not started yet: its request hook waits
    with taddons.context(router):
        flow = messages_flow({"model": "claude-x", "messages": []})
        hook = asyncio.ensure_future(router.request(flow))
        await asyncio.sleep(0.05)
        flow.client_conn.timestamp_end = 1.0      # mitmproxy saw the client close
        router.started.set()
        await asyncio.wait_for(hook, 2)
    assert flow.error is not None and flow.error.msg == "Connection killed." and not flow.live
    assert flow.response is None and router.jobs == {}


@pytest.mark.parametrize("error,recorded_as", [
    ("Client disconnected.", CLIENT_CLOSED),
    ("stream reset by client (CANCEL)", CLIENT_CLOSED),      # an HTTP/2 client's cancel of one request
    ("HTTP/2 protocol error: invalid frame", "HTTP/2 protocol error: invalid frame"),
], ids=["http1-close", "http2-reset", "other"])
async def test_a_flow_that_ends_before_it_reached_the_relay_is_recorded_as_its_client_left(live, error, recorded_as):
    router, recorded = live
    flow = messages_flow()
    await router.request(flow)
    flow.error = tflow.terr(error)       # mitmproxy ends it before it sent the relay the request
    router.error(flow)
    [job] = recorded
    assert job.error == recorded_as and not job.attempts
