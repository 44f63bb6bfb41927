"""An answer given from the request hook goes out before mitmproxy's responseheaders and
response passes (when no addon may still change it), whole and once; mitmproxy's own order for
any other answer."""

import types
from types import SimpleNamespace

import pytest
from mitmproxy import connection, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.addons.save import Save
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import HttpLayer, HTTPMode, HttpStream
from mitmproxy.proxy.layers.http._hooks import (
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import taddons

from ccswitch.mitm.flows import whole_response
from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.router import Router
from ccswitch.mitm.send_first import (
    AnswerSentFirst,
    AnswerTiming,
    addon_editing_answers,
    options_may_change_answers,
    send_answers_first,
)

REQUEST = (b"POST http://example.com/v1/messages HTTP/1.1\r\nHost: example.com\r\n"
           b"Content-Length: 2\r\n\r\n{}")
BODY = b'{"type":"message","content":[]}'


def _exchange(kind, *, head=REQUEST, on_hook=None, leaves=None):
    """The commands of one HTTP/1 exchange whose request hook answers with `kind`, in order;
    every hook is answered once nothing else is pending (after `on_hook(hook, client)`, if given,
    which may return what the client sends meanwhile); `leaves`: the client closes its
    connection as soon as a command of that type comes."""
    send_answers_first()
    with taddons.context(Proxyserver()) as tctx:
        client = connection.Client(peername=("127.0.0.1", 5), sockname=("127.0.0.1", 8080), timestamp_start=0,
                                   state=ConnectionState.OPEN)
        layer = HttpLayer(Context(client, tctx.options), HTTPMode.regular)
        seen, hooks = [], []
        pending = [events.Start(), events.DataReceived(client, head)]
        for _ in range(1000):     # an exchange is a few dozen steps: more is a loop
            if not (pending or hooks):
                break
            if not pending:
                hook = hooks.pop(0)
                if on_hook:
                    pending.extend(on_hook(hook, client) or ())
                pending.append(events.HookCompleted(hook))
            for command in layer.handle_event(pending.pop(0)):
                seen.append(command)
                if isinstance(command, HttpRequestHook):
                    command.flow.response = whole_response(200, [("content-type", "application/json")], BODY, kind)
                if isinstance(command, commands.StartHook):
                    hooks.append(command)
                if leaves and isinstance(command, leaves) and client.state is not ConnectionState.CLOSED:
                    client.state = ConnectionState.CLOSED
                    pending.append(events.ConnectionClosed(client))
        else:
            raise AssertionError("the exchange never settled")
    return seen, client


def _sent(seen, client):
    return b"".join(c.data for c in seen if isinstance(c, commands.SendData) and c.connection is client)


def _first_send(seen, client):
    return next(i for i, c in enumerate(seen) if isinstance(c, commands.SendData) and c.connection is client)


def _index(seen, hook):
    return next(i for i, c in enumerate(seen) if isinstance(c, hook))


def test_an_answer_sent_first_goes_out_whole_before_the_responseheaders_pass_and_once():
    seen, client = _exchange(AnswerSentFirst)
    sent = _sent(seen, client)
    assert _first_send(seen, client) < _index(seen, HttpResponseHeadersHook) < _index(seen, HttpResponseHook)
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n") and sent.endswith(b"\r\n\r\n" + BODY)
    assert sent.count(BODY) == 1 and b"content-length: %d\r\n" % len(BODY) in sent.lower()
    # everything before the responseheaders pass is the answer, whole: the client has it then
    before = b"".join(c.data for c in seen[:_index(seen, HttpResponseHeadersHook)]
                      if isinstance(c, commands.SendData) and c.connection is client)
    assert before == sent


def test_the_passes_after_it_still_see_the_flow_and_it_ends_after_them():
    ended = []
    seen, client = _exchange(AnswerSentFirst, on_hook=lambda hook, _: ended.append(
        (type(hook).__name__, hook.args()[0].live, type(hook.args()[0].response).__name__)))
    assert ended[-2:] == [("HttpResponseHeadersHook", True, "AnswerSentFirst"),
                          ("HttpResponseHook", True, "AnswerSentFirst")]


def test_a_client_that_leaves_once_it_has_the_whole_answer_leaves_a_complete_exchange():
    seen, client = _exchange(AnswerSentFirst, leaves=commands.SendData)
    flow = next(c for c in seen if isinstance(c, HttpResponseHook)).flow
    assert flow.error is None and not flow.live and _sent(seen, client).endswith(BODY)
    assert not any(isinstance(c, HttpErrorHook) for c in seen)


@pytest.mark.parametrize("sent_meanwhile", [REQUEST, REQUEST.replace(b"Content-Length: 2", b"Content-Length: 10")],
                         ids=["a whole request", "part of one"])
def test_what_a_client_sent_before_it_left_during_the_later_passes_is_not_read_on(sent_meanwhile):
    # it read its whole answer, sent its next request (or part of one) at once, then gave up and
    # closed, while the first flow's later passes ran: no request of a client gone is run, and
    # no flow waits for the rest of a body that never comes
    def on_hook(hook, client):
        if isinstance(hook, HttpResponseHeadersHook):
            client.state = ConnectionState.CLOSED
            return [events.DataReceived(client, sent_meanwhile), events.ConnectionClosed(client)]
    seen, client = _exchange(AnswerSentFirst, on_hook=on_hook)
    (first, *later) = [c.flow for c in seen if isinstance(c, HttpRequestHeadersHook)]
    assert first.error is None and not first.live and _sent(seen, client).endswith(BODY)
    assert later == []


def test_mitmproxys_own_check_of_the_events_a_state_takes_is_kept():
    # mitmproxy's `@expect` wraps its state (functools.wraps): the wrapper calls it, not what it wraps
    send_answers_first()
    with pytest.raises(AssertionError, match="Unexpected event type"):
        list(HttpStream.state_consume_request_body(object.__new__(HttpStream), events.Start()))


def test_any_other_answer_keeps_mitmproxys_order_after_the_response_pass():
    seen, client = _exchange(http.Response)
    assert _index(seen, HttpResponseHook) < _first_send(seen, client)
    assert _sent(seen, client).count(BODY) == 1


def test_an_edit_in_a_later_pass_of_an_answer_not_sent_first_reaches_the_client():
    def edit(hook, _):
        if isinstance(hook, HttpResponseHook):
            hook.flow.response.headers["x-edited"] = "1"
    seen, client = _exchange(http.Response, on_hook=edit)
    assert b"x-edited: 1" in _sent(seen, client)


@pytest.mark.parametrize("head", [REQUEST, REQUEST.replace(b"POST", b"HEAD", 1)])
def test_the_client_gets_the_same_bytes_either_way(head):
    assert _sent(*_exchange(AnswerSentFirst, head=head)) == _sent(*_exchange(http.Response, head=head))


@pytest.mark.parametrize(("options", "why"), [
    ({}, None),
    ({"intercept": "~s"}, "intercept"),
    ({"intercept_active": True}, "intercept"),
    ({"modify_headers": ["/~s/x-a/1"]}, "modify_headers/modify_body"),
    ({"modify_body": ["/~s/a/b"]}, "modify_headers/modify_body"),
])
def test_mitmproxys_options_that_may_edit_an_answer_keep_it_for_the_later_passes(options, why):
    given = {"intercept": None, "intercept_active": False, "modify_headers": [], "modify_body": [], **options}
    assert options_may_change_answers(SimpleNamespace(**given)) == why
    assert options_may_change_answers(SimpleNamespace(modify_headers=[], modify_body=[])) is None   # mitmdump: no intercept


class Editor:
    def response(self, flow):
        flow.response.headers["x-edited"] = "1"


class Watcher:
    def request(self, flow):
        pass


def _module(name, **hooks):
    module = types.ModuleType(name)
    vars(module).update(hooks)
    return module


def test_a_users_addon_or_script_with_an_answer_hook_keeps_answers_for_the_later_passes():
    editor = Editor()
    assert addon_editing_answers([Watcher(), editor]) == f"{__name__}.Editor"
    assert addon_editing_answers([_module("myscript", responseheaders=lambda flow: None)]) == "myscript"
    # mitmproxy's own (read-only, or gated by their options) and ccswitch's do not count
    assert addon_editing_answers([Watcher(), Save(), Router(Gateway()), _module("addon", addons=[])]) is None


def test_the_kind_follows_scripts_loaded_reloaded_and_removed_and_the_options():
    timing = AnswerTiming()
    timing.configure(SimpleNamespace(modify_headers=[], modify_body=[]))
    registered = {"save": Save(), "watcher": Watcher()}
    assert timing.kind(registered) is AnswerSentFirst
    registered["mine"] = _module("mine", response=lambda flow: None)
    assert timing.kind(registered) is http.Response
    registered["mine"] = _module("mine", request=lambda flow: None)     # reloaded without its hook
    assert timing.kind(registered) is AnswerSentFirst
    timing.configure(SimpleNamespace(modify_headers=["/~s/x-a/1"], modify_body=[]))
    assert timing.kind(registered) is http.Response


def test_a_reload_finds_mitmproxys_own_methods_under_the_wrappers():
    # a script reload imports the package anew: what it wraps must be mitmproxy's, not the old wrapper
    send_answers_first()
    import ccswitch.mitm.send_first as first
    from ccswitch.mitm.wrapped import mitmproxys
    for name in ("state_consume_request_body", "send_response", "check_killed"):
        assert getattr(HttpStream, name) is not mitmproxys(HttpStream, name)
        assert mitmproxys(HttpStream, name) is getattr(first, {"state_consume_request_body": "_original_consume"}.get(
            name, f"_original_{name}"))
        assert mitmproxys(HttpStream, name).__module__.startswith("mitmproxy.")
