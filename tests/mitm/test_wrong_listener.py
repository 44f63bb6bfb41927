import json

import pytest
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons, tflow, tutils

from ccswitch.mitm.wrong_listener import (
    WrongListener,
    addressed_to_itself,
    reverse_listeners,
    wants_the_page,
    wrong_listener_message,
)


def flow_at(url: str, mode: str = "regular@8080", sockname=("127.0.0.1", 8080)):
    flow = tflow.tflow(req=tutils.treq(method=b"POST", path=b"/v1/messages"))
    flow.request.url = url
    flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse(mode)
    flow.client_conn.sockname = sockname
    return flow


@pytest.mark.parametrize("host, port, sockname, listen_host, itself", [
    ("127.0.0.1", 8080, ("127.0.0.1", 8080), "", True),
    ("localhost", 8080, ("127.0.0.1", 8080), "", True),
    ("::1", 8080, ("::1", 8080, 0, 0), "", True),
    ("192.168.1.5", 8080, ("192.168.1.5", 8080), "", True),       # the address the client reached
    ("proxy.lan", 8080, ("192.168.1.5", 8080), "proxy.lan", True),
    ("127.0.0.1", 8081, ("127.0.0.1", 8080), "", False),          # another service on loopback
    ("127.0.0.2", 8080, ("127.0.0.1", 8080), "", False),          # not the listener's address
    ("api.anthropic.com", 443, ("127.0.0.1", 8080), "", False),
    ("127.0.0.1", 8080, None, "", False),
])
def test_a_request_names_its_own_listener(host, port, sockname, listen_host, itself):
    assert addressed_to_itself(host, port, sockname, listen_host) is itself


def test_the_message_names_the_proxy_variable_and_each_reverse_listener():
    said = wrong_listener_message("127.0.0.1", 8080, [(8082, "https://api.anthropic.com"), (8083, "https://api.openai.com")])
    assert said.startswith("http://127.0.0.1:8080 is ccswitch's regular proxy listener, not a base URL: "
                           "give it to the client as HTTPS_PROXY=http://127.0.0.1:8080")
    assert "http://127.0.0.1:8082 (its requests not routed go to https://api.anthropic.com)" in said
    assert "http://127.0.0.1:8083" in said and 'ccswitch env --reverse --port 8082' in said
    alone = wrong_listener_message("::1", 8080, [])
    assert "HTTPS_PROXY=http://[::1]:8080" in alone and "run a reverse listener" in alone
    assert reverse_listeners(["regular@8080", "reverse:https://api.anthropic.com@8082", "nonsense:"]) == [
        (8082, "https://api.anthropic.com")]
    # a spec without @PORT listens on the listen_port option's
    assert reverse_listeners(["reverse:https://api.anthropic.com"], 9090) == [(9090, "https://api.anthropic.com")]


def test_only_a_request_to_the_regular_listener_itself_is_answered():
    addon = WrongListener()
    with taddons.context(addon) as tctx:
        tctx.options.mode = ["regular@8080", "reverse:https://api.anthropic.com@8082"]
        mine = flow_at("http://127.0.0.1:8080/v1/messages")
        addon.request(mine)
        assert mine.response.status_code == 421
        body = json.loads(mine.response.content)
        assert body["type"] == "error" and "http://127.0.0.1:8082" in body["error"]["message"]
        assert "regular proxy listener" in mine.comment
        passing = [flow_at("https://api.anthropic.com/v1/messages"),
                   flow_at("http://127.0.0.1:8082/v1/messages", mode="reverse:https://api.anthropic.com@8082",
                           sockname=("127.0.0.1", 8082))]
        for flow in passing:
            addon.request(flow)
            assert flow.response is None


def test_a_bracketed_ipv6_host_names_its_listener_too():
    assert addressed_to_itself("[::1]", 8080, ("::1", 8080, 0, 0), "") is True


def test_a_flow_already_answered_failed_or_not_live_is_left_alone():
    from ccswitch.mitm.scope import EARLY_MARK
    addon = WrongListener()
    with taddons.context(addon) as tctx:
        tctx.options.mode = ["regular@8080"]
        answered = flow_at("http://127.0.0.1:8080/v1/messages")
        answered.response = tutils.tresp(status_code=200)
        failed = flow_at("http://127.0.0.1:8080/v1/messages")
        failed.error = tflow.terr()
        loaded = flow_at("http://127.0.0.1:8080/v1/messages")     # from a file: no client waits for it
        loaded.live = False
        early = flow_at("http://127.0.0.1:8080/v1/messages")      # EarlyRefusal answered it from its head
        early.metadata[EARLY_MARK] = 413
        for flow in (answered, failed, loaded, early):
            addon.request(flow)
        assert answered.response.status_code == 200
        assert failed.response is None and loaded.response is None and early.response is None


def test_the_answer_speaks_the_clients_api_and_the_log_says_it_once_per_port(caplog):
    addon = WrongListener()
    with taddons.context(addon) as tctx, caplog.at_level("WARNING", logger="ccswitch"):
        tctx.options.mode = ["regular@8080"]
        flows = [flow_at("http://127.0.0.1:8080/v1/chat/completions") for _ in range(2)]
        for flow in flows:
            addon.request(flow)
            # an OpenAI SDK reads an OpenAI error body (no Anthropic `"type": "error"` around it)
            body = json.loads(flow.response.content)
            assert flow.response.status_code == 421 and "type" not in body
            assert "regular proxy listener" in body["error"]["message"]
        # a client retrying does not fill the log
        assert sum("came to the regular listener" in r.getMessage() for r in caplog.records) == 1


def test_a_reverse_listener_without_a_port_is_named_at_the_listen_port_option():
    addon = WrongListener()
    with taddons.context(addon) as tctx:
        tctx.options.mode = ["regular@8080", "reverse:https://api.anthropic.com"]
        tctx.options.listen_port = 9090
        flow = flow_at("http://127.0.0.1:8080/v1/messages")
        addon.request(flow)
        assert "http://127.0.0.1:9090 (its requests not routed go to https://api.anthropic.com)" in (
            json.loads(flow.response.content)["error"]["message"])


def test_the_listen_host_option_is_a_name_of_the_regular_listener():
    addon = WrongListener()
    with taddons.context(addon) as tctx:
        tctx.options.mode = ["regular@8080"]
        tctx.options.listen_host = "proxy.lan"
        flow = flow_at("http://proxy.lan:8080/v1/messages", sockname=("192.168.1.5", 8080))
        addon.request(flow)
        assert flow.response.status_code == 421


def test_the_wrong_listener_addon_runs_before_the_router():
    from ccswitch.mitm import make_addons
    from ccswitch.mitm.router import Router
    kinds = [type(a) for a in make_addons()]
    assert WrongListener in kinds and kinds.index(WrongListener) < kinds.index(Router)


def test_a_browser_asking_the_regular_listener_for_the_live_page_is_told_where_it_is():
    # it got the 421 about base URLs and HTTPS_PROXY, which says nothing of the page
    said = wrong_listener_message("127.0.0.1", 8080, [(8082, "https://api.anthropic.com")], page=True)
    assert said == ("the live page is not served at http://127.0.0.1:8080, ccswitch's regular proxy listener: "
                    "open http://ccswitch/_ccswitch/ through it (HTTPS_PROXY or the browser's proxy set to "
                    "http://127.0.0.1:8080), or http://127.0.0.1:8082/_ccswitch/ (a reverse listener)")
    assert "reverse listener" not in wrong_listener_message("127.0.0.1", 8080, [], page=True)
    html = "text/html,application/xhtml+xml"
    assert wants_the_page("GET", "/_ccswitch/status.json", "") and wants_the_page("GET", "/", html)
    assert not wants_the_page("GET", "/", "*/*") and not wants_the_page("POST", "/_ccswitchx", html)
    addon = WrongListener()
    with taddons.context(addon) as tctx:
        tctx.options.mode = ["regular@8080"]
        flow = flow_at("http://127.0.0.1:8080/_ccswitch/")
        addon.request(flow)
    assert flow.response.status_code == 421 and "open http://ccswitch/_ccswitch/" in flow.response.text
