"""A Chat upstream's stream chunk with an odd `choices` (a null or string choice, a string delta, a
number) is an opening chunk like any other: the answer after it is served, never a 500 ("ccswitch
internal error") for the request."""


import pytest

from ccswitch.dial.dialer import Dialer
from ccswitch.dial.relay import run_guarded
from ccswitch.net import http1
from ccswitch.routing.health import HealthBoard
from tests.support.helpers import MemorySink, make_job, rules_for
from tests.support.memory_upstream import MemoryUpstream
from tests.unit.dial.test_dialer import FAST

GOOD = (b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant",'
        b'"content":"from b"},"finish_reason":null}]}\n\n'
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b'data: [DONE]\n\n')


def sse(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body))


async def served(first: bytes) -> tuple[MemorySink, object]:
    """A chat stream through upstreams a (answering `first`) and b (a good stream)."""
    upstreams = {"a.invalid": MemoryUpstream(sse(first)), "b.invalid": MemoryUpstream(sse(GOOD))}

    async def connect(protocol_factory, host, port, context):
        return await upstreams[host](protocol_factory, host, port, context)

    rules = rules_for(("a", "openai-chat", "http://a.invalid/v1"), ("b", "openai-chat", "http://b.invalid/v1"),
                      routes={"chat": ["a", "b"]}, extra=FAST)
    body = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    job = make_job(rules, path="/v1/chat/completions", body=body)
    sink, dialer = MemorySink(), Dialer(HealthBoard(), client=http1.UpstreamClient(connect=connect))
    try:
        await run_guarded(dialer.run, job, sink)
    finally:
        await dialer.aclose()
    return sink, job


@pytest.mark.parametrize("odd", [b'{"choices":[null]}', b'{"choices":"abc"}', b'{"choices":[{"delta":"x"}]}',
                                 b'{"choices":5}'], ids=["null-choice", "string-choices", "string-delta", "number"])
async def test_an_odd_chat_chunk_is_passed_by_not_a_500(odd):
    # an opening chunk like any other: the answer that follows it is served
    sink, job = await served(b"data: " + odd + b"\n\n" + GOOD)
    assert sink.status == 200 and job.error is None, (sink.status, sink.body[:300], job.error)
    assert sink.headers["x-ccswitch-upstream"] == "a" and b"from b" in sink.body
