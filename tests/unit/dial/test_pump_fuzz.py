"""A stream whose events carry a value of another JSON type somewhere, through the whole pump
(the usage tap, the judge, the conversion): it ends as a result (streamed or failed over),
never with an exception out of `Pump.run`, which left the client with "ccswitch internal error"
and the upstream neither counted nor failed over. Both upstream protocols, passed through and
converted for the chat route; seeded."""

from __future__ import annotations

import asyncio
import random

import pytest

from ccswitch.dial.job import Attempt
from ccswitch.dial.pump import Pump
from ccswitch.dial.render import OutgoingRequest
from ccswitch.translate import translation_for
from ccswitch.vocab import Protocol
from ccswitch.wire.sse import format_event
from tests.support.helpers import MemorySink, make_job, rules_for
from tests.support.json_places import places, replaced
from tests.unit.translate.test_answer_fuzz import ANTHROPIC, ODD_VALUES, RESPONSES, recorded_events

CASES = 250
SSE = [("content-type", "text/event-stream")]
BODY = {"model": "m", "stream": True, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
CLIENT_PATHS = {Protocol.ANTHROPIC: ("/v1/messages", BODY),
                Protocol.RESPONSES: ("/v1/responses", {"model": "m", "stream": True, "input": "hi"}),
                Protocol.CHAT: ("/v1/chat/completions", {k: v for k, v in BODY.items() if k != "max_tokens"})}


class Answer:
    """The upstream's 200, its body in one piece."""
    status_code = 200
    headers = SSE

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def aiter_bytes(self):
        yield self.body

    async def finish(self, grace) -> None:
        return None


async def pump(upstream, client: str, events: list[dict]) -> None:
    route = {Protocol.ANTHROPIC: "claude", Protocol.RESPONSES: "codex", Protocol.CHAT: "chat"}[client]
    rules = rules_for(("a", upstream.protocol, "http://127.0.0.1:9"), routes={route: ["a"]})
    path, body = CLIENT_PATHS[client]
    job = make_job(rules, path=path, body=body)
    up = rules.upstream("a")
    translation = translation_for(job.request.client_protocol, up.protocol)
    outgoing = OutgoingRequest("POST", "http://127.0.0.1:9" + path, [], b"", "m")
    stream = b"".join(format_event(e, e.get("type")) for e in events)
    await Pump(job, up, outgoing, translation, Answer(stream), MemorySink(), SSE, Attempt("a")).run()


@pytest.mark.parametrize(("upstream", "client"), [(ANTHROPIC, Protocol.ANTHROPIC), (RESPONSES, Protocol.RESPONSES),
                                                  (ANTHROPIC, Protocol.CHAT), (RESPONSES, Protocol.CHAT)],
                         ids=lambda v: getattr(v, "protocol", v))
def test_an_odd_value_in_a_stream_never_escapes_the_pump(upstream, client):
    events = recorded_events(upstream)
    spots = [(i, path) for i, event in enumerate(events) for path in places(event) if path != ("type",)]
    rng = random.Random(f"pump-{upstream.protocol}-{client}")

    async def every_case() -> None:
        await pump(upstream, client, events)          # the recorded stream itself goes through
        for case in range(CASES):
            i, path = rng.choice(spots)
            odd = rng.choice(ODD_VALUES)
            try:
                await pump(upstream, client, [*events[:i], replaced(events[i], path, odd), *events[i + 1:]])
            except Exception as exc:
                pytest.fail(f"case {case}: event {i} ({events[i].get('type')}) at {path!r} = {odd!r}: {exc!r}")

    asyncio.run(every_case())
