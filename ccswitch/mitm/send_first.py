"""An answer given from the request hook, sent before mitmproxy's passes that follow it.

mitmproxy 12 sends an answer an addon sets in its request hook only after two more passes over
every addon (`responseheaders`, then `response`, each followed by `update`): at concurrency 1
they are about 0.4 ms of every non-streamed request's wait, where bare mitmproxy, streaming,
writes an upstream's answer first and runs those passes beside the client's next turn.  An
`AnswerSentFirst` goes out as a streamed answer does: its head and body before those passes,
its end (and the flow's) after them.  Nothing else changes: each hook still sees the flow and
its answer, and mitmproxy's layer sends nothing twice.

The router gives one only where no addon may still change the answer in those passes
(`AnswerTiming`).
"""

from __future__ import annotations

import types

from mitmproxy import http
from mitmproxy.proxy.layers.http import (
    ErrorCode,
    HttpStream,
    RequestProtocolError,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
    SendHttp,
)
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook

from ccswitch.mitm.wrapped import mitmproxys, wrap


class AnswerSentFirst(http.Response):
    """An answer whose head and body go to its HTTP/1 client before its responseheaders pass."""


#: the options `options_may_change_answers` reads
ANSWER_OPTIONS = frozenset({"intercept", "intercept_active", "modify_headers", "modify_body"})
_ANSWER_HOOKS = ("responseheaders", "response")


def options_may_change_answers(options) -> str | None:
    """Why one of mitmproxy's own addons may change an answer in its `responseheaders` or
    `response` hook, or None (the others there only read it, or act on headers ccswitch never
    passes on: an upstream's `alt-svc`)."""
    if getattr(options, "intercept_active", False) or getattr(options, "intercept", None):   # not in every tool
        return "intercept"            # mitmweb (or `--intercept`) may stop an answer to edit it
    if getattr(options, "modify_headers", None) or getattr(options, "modify_body", None):
        return "modify_headers/modify_body"
    return None


def addon_editing_answers(addons) -> str | None:
    """The name of an addon, neither mitmproxy's nor ccswitch's, with a `responseheaders` or
    `response` hook (a user's script, which may edit what ccswitch answered), or None."""
    for addon in addons:
        module = addon.__name__ if isinstance(addon, types.ModuleType) else type(addon).__module__
        if module.partition(".")[0] in ("mitmproxy", "ccswitch"):
            continue
        if any(callable(getattr(addon, hook, None)) for hook in _ANSWER_HOOKS):
            return module if isinstance(addon, types.ModuleType) else f"{module}.{type(addon).__name__}"
    return None


class AnswerTiming:
    """What kind of answer the request hook gives: one sent first unless an addon may still
    change it.  Options are read as they change; the addons (a script loaded, reloaded or
    removed) when the registered ones are not the ones last looked at."""

    def __init__(self) -> None:
        self.options_reason: str | None = None
        self.addons_reason: str | None = None
        self._looked_at: tuple = ()

    def configure(self, options) -> None:
        self.options_reason = options_may_change_answers(options)

    def kind(self, registered: dict) -> type[http.Response]:
        """`registered`: mitmproxy's addons by name (`AddonManager.lookup`), scripts' own among them."""
        if self.options_reason is not None:
            return http.Response
        addons = tuple(registered.values())
        if addons != self._looked_at:
            self._looked_at, self.addons_reason = addons, addon_editing_answers(addons)
        return http.Response if self.addons_reason is not None else AnswerSentFirst


_original_consume = mitmproxys(HttpStream, "state_consume_request_body")
_original_send_response = mitmproxys(HttpStream, "send_response")
_original_check_killed = mitmproxys(HttpStream, "check_killed")


def _relay(steps, instead):
    """The commands of a layer's generator `steps`, each as `instead(command)` gives them (in its
    place, with it or without it), the replies to it sent back in."""
    reply = None
    while True:
        try:
            command = steps.send(reply)
        except StopIteration as end:
            return end.value
        for given in instead(command):
            reply = yield given


def _consume_request_body(self: HttpStream, event):
    def instead(command):
        if isinstance(command, HttpResponseHeadersHook) and _sends_first(self):
            response = self.flow.response
            vars(self)["_ccswitch_sent_first"] = True
            yield SendHttp(ResponseHeaders(self.stream_id, response, end_stream=False), self.context.client)
            if response.raw_content:
                yield SendHttp(ResponseData(self.stream_id, response.raw_content), self.context.client)
        yield command
    return (yield from _relay(_original_consume(self, event), instead))


def _sends_first(stream: HttpStream) -> bool:
    flow = stream.flow
    return type(flow.response) is AnswerSentFirst and not (flow.request.is_http2 or flow.request.is_http3)


def _sent_first(stream: HttpStream) -> bool:
    return vars(stream).get("_ccswitch_sent_first", False)


def _send_response(self: HttpStream, already_streamed: bool = False):
    if not _sent_first(self):        # every other answer: mitmproxy's own, unwrapped
        return (yield from _original_send_response(self, already_streamed))

    def instead(command):
        if not (vars(self).get("_ccswitch_client_left") and isinstance(command, SendHttp)
                and isinstance(command.event, ResponseEndOfMessage)):
            yield command
        # else: the client's connection closed with the answer whole; told its end, mitmproxy's
        # HTTP/1 server would read on what the client sent before it left (a next request)
    return (yield from _relay(_original_send_response(self, True), instead))


def _check_killed(self: HttpStream, emit_error_hook: bool):
    if _sent_first(self):
        # mitmproxy takes a client's close waiting in the queue for a kill; a client that left
        # once it had the whole answer (curl does) left an exchange that is complete: its flow
        # ends as it would have, had it left after the answer's end
        queue = self._paused_event_queue
        for left in [e for e in queue if isinstance(e, RequestProtocolError) and e.code is ErrorCode.CLIENT_DISCONNECTED]:
            queue.remove(left)
            vars(self)["_ccswitch_client_left"] = True
    return _original_check_killed(self, emit_error_hook)


def send_answers_first() -> None:
    """Once per process (a script reload calls this again)."""
    wrap(HttpStream, "state_consume_request_body", _consume_request_body, _original_consume)
    wrap(HttpStream, "send_response", _send_response, _original_send_response)
    wrap(HttpStream, "check_killed", _check_killed, _original_check_killed)
