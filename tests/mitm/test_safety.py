"""Listening beyond loopback: every client authenticated, at start-up, per peer, per request, per reload."""

import contextlib
import json
import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.addons import proxyauth, proxyserver
from mitmproxy.proxy import mode_specs
from mitmproxy.test import taddons, tflow, tutils

from ccswitch.config.watch import RulesFile
from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.safety import ClientKeyGate, ListenSafety, guards_anything, unprotected_listeners
from ccswitch.wire.redact import NO_CLIENT_KEY
from tests.support.helpers import CLIENT_KEY, KEY_A, reload_settled

RULES = f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
"""
NO_KEYS = RULES.replace(f'client_keys: ["{CLIENT_KEY}"]\n', "")
REVERSE_OPEN = "reverse:http://127.0.0.1:9@0.0.0.0:8082"
REMOTE = ("192.0.2.7", 40000)   # TEST-NET-1: only ever a simulated peer address


@pytest.fixture
def safety_ctx(gateway):
    safety = ListenSafety(gateway)
    with taddons.context(proxyserver.Proxyserver(), proxyauth.ProxyAuth(), safety) as tctx:
        yield safety, tctx


def without_keys(gateway):
    gateway.rules_file.rules = gateway.rules.model_copy(update={"client_keys": ()})


@pytest.mark.parametrize("spec,host,keys,auth,needs", [
    ("regular", "0.0.0.0", True, False, "--proxyauth"),         # client keys cannot guard a CONNECT
    ("regular", "0.0.0.0", True, True, None),
    ("regular@0.0.0.0:8080", "127.0.0.1", False, False, "--proxyauth"),
    ("socks5", "::", False, False, "--proxyauth"),
    ("reverse:https://api.anthropic.com", "0.0.0.0", False, True, "client_keys"),   # proxyauth is not it
    ("reverse:https://api.anthropic.com", "0.0.0.0", True, False, None),
    ("reverse:tcp://127.0.0.1:22@0.0.0.0:2222", "127.0.0.1", True, True, "listen on loopback"),
    ("regular", "127.0.0.1", False, False, None),
    ("reverse:https://api.anthropic.com@localhost:8082", "0.0.0.0", False, False, None),
    ("wireguard", "0.0.0.0", False, False, None),
])
def test_which_listeners_beyond_loopback_are_unprotected(spec, host, keys, auth, needs):
    found = unprotected_listeners([spec], host, keys, auth)
    if needs is None:
        assert found == []
    else:
        assert len(found) == 1 and needs in found[0] and spec in found[0]


def test_a_regular_listener_beyond_loopback_needs_proxyauth_even_with_client_keys(safety_ctx):
    safety, tctx = safety_ctx
    with pytest.raises(exceptions.OptionsError, match="--proxyauth USER:PASS"):
        tctx.configure(safety, listen_host="0.0.0.0")
    tctx.configure(safety, listen_host="0.0.0.0", proxyauth="user:pass")


@pytest.mark.parametrize("login", ["any", "user:", ":"])
def test_proxyauth_that_lets_anyone_in_is_no_authentication(safety_ctx, login):
    safety, tctx = safety_ctx
    with pytest.raises(exceptions.OptionsError, match="--proxyauth any, or a login without a password"):
        tctx.configure(safety, listen_host="0.0.0.0", proxyauth=login)   # any user, or `curl -x http://user:@…`


@pytest.mark.parametrize("login", ["user:pa:ss", "@/etc/ccswitch/htpasswd",
                                   "ldaps:ldap.example.com:cn=admin,dc=example:pw:ou=users,dc=example"])
def test_a_password_an_htpasswd_file_or_ldap_is_authentication(login):
    assert guards_anything(login)


def test_stream_large_bodies_is_refused_since_large_requests_would_pass_ccswitch_by(safety_ctx):
    safety, tctx = safety_ctx
    with pytest.raises(exceptions.OptionsError, match="Leave stream_large_bodies unset"):
        tctx.configure(safety, stream_large_bodies="1m")


def test_an_open_reverse_listener_is_refused_once_not_by_recursion(safety_ctx, gateway, caplog):
    safety, tctx = safety_ctx
    without_keys(gateway)
    # the listen host is ccswitch's to set here: the refusal must come before that nested update,
    # or mitmproxy's rollback configures the same options again and again
    with pytest.raises(exceptions.OptionsError, match="needs client_keys"):
        tctx.configure(safety, mode=[REVERSE_OPEN], listen_host="")
    assert "recursion" not in caplog.text and "Addon error" not in caplog.text
    with pytest.raises(exceptions.OptionsError, match="needs client_keys"):
        tctx.configure(safety, mode=[REVERSE_OPEN], proxyauth="user:pass")


def client(mode: str, peer=REMOTE):
    conn = tflow.tclient_conn()
    conn.peername = peer
    conn.proxy_mode = mode_specs.ProxyMode.parse(mode)
    return conn


def test_peers_beyond_loopback_are_checked_whatever_the_listen_host_came_from(safety_ctx, gateway):
    safety, tctx = safety_ctx
    tctx.configure(safety, listen_host="127.0.0.1")   # given by the user: not ccswitch's own loopback
    assert not safety.own_loopback
    regular = client("regular")       # yet a peer from elsewhere got in (a server bound otherwise)
    safety.client_connected(regular)
    assert regular.error
    reverse = client("reverse:https://api.anthropic.com")
    safety.client_connected(reverse)
    assert not reverse.error          # client keys: every request will be asked for one
    without_keys(gateway)
    reverse = client("reverse:https://api.anthropic.com")
    safety.client_connected(reverse)
    assert reverse.error
    local = client("regular", peer=("127.0.0.1", 5000))
    safety.client_connected(local)
    assert not local.error
    tctx.configure(safety, proxyauth="user:pass")
    regular = client("regular")
    safety.client_connected(regular)
    assert not regular.error          # mitmproxy's proxyauth asks it for credentials


def test_an_address_beyond_loopback_holds_so_many_connections_at_most(safety_ctx, caplog):
    # a stranger holding thousands of idle connections took every file the process may open
    from ccswitch.mitm.safety import MAX_CONNECTIONS_PER_PEER
    safety, tctx = safety_ctx
    tctx.configure(safety, listen_host="127.0.0.1")
    caplog.set_level(logging.WARNING, logger="ccswitch")
    held = [client("reverse:https://api.anthropic.com") for _ in range(MAX_CONNECTIONS_PER_PEER)]
    for conn in held:
        safety.client_connected(conn)
    assert not any(conn.error for conn in held)
    extra, other = client("reverse:https://api.anthropic.com"), client("reverse:https://api.anthropic.com")
    other.peername = ("192.0.2.77", 4000)
    safety.client_connected(extra)
    safety.client_connected(other)
    assert extra.error == f"more than {MAX_CONNECTIONS_PER_PEER} connections from one address" and not other.error
    safety.client_connected(client("reverse:https://api.anthropic.com"))
    assert caplog.text.count("the most one address may") == 1          # once while it stays over
    safety.client_disconnected(extra)                                   # refused: never counted
    safety.client_disconnected(held[0])
    again = client("reverse:https://api.anthropic.com")
    safety.client_connected(again)
    assert not again.error
    local = client("regular", peer=("127.0.0.1", 5000))
    safety.client_connected(local)
    assert not local.error                                              # loopback is not counted


def test_own_loopback_refuses_remote_peers_only_on_the_listeners_it_rebinds(safety_ctx):
    safety, tctx = safety_ctx
    tctx.configure(safety, listen_host="")
    assert safety.own_loopback
    early = client("regular")         # bound on every interface before the script loaded
    safety.client_connected(early)
    assert early.error == "ccswitch listens on loopback only"
    declared = client("reverse:https://api.anthropic.com@0.0.0.0:8082")
    safety.client_connected(declared)   # the user asked for it, and it has client keys
    assert not declared.error


def test_a_reload_that_would_leave_an_exposed_listener_open_is_refused(tmp_path, caplog):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    gateway = Gateway()
    gateway.rules_file.open(str(path))
    safety = ListenSafety(gateway)
    with taddons.context(proxyserver.Proxyserver(), proxyauth.ProxyAuth(), safety) as tctx:
        tctx.configure(safety, mode=[REVERSE_OPEN])
        path.write_text(NO_KEYS)
        assert not reload_settled(gateway.rules_file)
        assert [k.get_secret_value() for k in gateway.rules.client_keys] == [CLIENT_KEY]
        assert "rules edit refused" in caplog.text and "needs client_keys" in caplog.text
        tctx.configure(safety, mode=["reverse:http://127.0.0.1:9@127.0.0.1:8082"])
        path.write_text(NO_KEYS + "\n# now on loopback\n")
        assert reload_settled(gateway.rules_file) and not gateway.rules.client_keys
    assert CLIENT_KEY not in caplog.text


def test_a_rules_file_without_a_safety_addon_has_no_vetoes():
    assert RulesFile().vetoes == []


def flow_on(mode: str, *, peer=REMOTE, path="/admin/secret", method="GET", headers=(), host="127.0.0.1"):
    req = tutils.treq(method=method.encode(), scheme=b"http", host=host, port=19001, path=path.encode(),
                      headers=tuple((k.encode(), v.encode()) for k, v in headers), content=b"")
    flow = tflow.tflow(req=req)
    flow.client_conn.peername = peer
    flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse(mode)
    return flow


@pytest.fixture
def gate(gateway):
    gate = ClientKeyGate(gateway)
    with taddons.context(gate) as tctx:
        tctx.configure(gate, listen_host="127.0.0.1")
        yield gate


@pytest.mark.parametrize("mode,peer", [
    ("reverse:http://127.0.0.1:19001", REMOTE),                      # a remote peer, whatever the listener
    ("reverse:http://127.0.0.1:19001@0.0.0.0:8082", ("127.0.0.1", 5000)),   # an exposed listener, any peer
])
def test_unrouted_requests_beyond_loopback_need_a_client_key(gate, mode, peer):
    flow = flow_on(mode, peer=peer)
    gate.request(flow)
    assert flow.response.status_code == 401
    assert json.loads(flow.response.content)["error"]["message"] == NO_CLIENT_KEY
    anthropic = flow_on(mode, peer=peer, path="/v1/models", headers=[("x-api-key", "sk-wrong"),
                                                                      ("anthropic-version", "2023-06-01")])
    gate.request(anthropic)
    body = json.loads(anthropic.response.content)
    assert anthropic.response.status_code == 401 and body["type"] == "error"   # in the Anthropic format
    keyed = flow_on(mode, peer=peer, headers=[("authorization", f"Bearer {CLIENT_KEY}"), ("x-trace", "1")])
    gate.request(keyed)
    assert keyed.response is None
    assert "authorization" not in keyed.request.headers and keyed.request.headers["x-trace"] == "1"


def test_a_client_key_is_never_passed_on_even_on_loopback(gate):
    local = flow_on("reverse:http://127.0.0.1:19001", peer=("127.0.0.1", 5000))
    gate.request(local)
    assert local.response is None     # loopback: unrouted requests pass as before
    passthrough = flow_on("regular", peer=("127.0.0.1", 5000), host="api.anthropic.com",
                          headers=[("x-api-key", CLIENT_KEY), ("authorization", "Bearer sk-their-own")])
    gate.request(passthrough)
    assert passthrough.response is None and "x-api-key" not in passthrough.request.headers
    assert passthrough.request.headers["authorization"] == "Bearer sk-their-own"   # not ours: kept


def test_a_client_key_is_not_passed_on_wherever_the_client_put_it(gate):
    import base64
    flow = flow_on("regular", peer=("127.0.0.1", 5000), host="api.anthropic.com",
                   path=f"/v1/models?key={CLIENT_KEY}&beta=true&KEY=their-own-key-123&token={CLIENT_KEY}",
                   headers=[("api-key", CLIENT_KEY), ("x-goog-api-key", f" {CLIENT_KEY} "), ("x-trace", "1"),
                            ("authorization", f"Token {CLIENT_KEY}"), ("cookie", f"theme=dark; key={CLIENT_KEY}"),
                            ("proxy-authorization", "Basic " + base64.b64encode(f"{CLIENT_KEY}:".encode()).decode())])
    gate.request(flow)
    assert flow.response is None and CLIENT_KEY not in repr(flow.request.headers.fields)
    assert [name for name, _ in flow.request.headers.items()] == ["x-trace"]
    assert CLIENT_KEY not in flow.request.path and flow.request.headers["x-trace"] == "1"
    assert flow.request.query.get_all("beta") == ["true"] and flow.request.query.get_all("KEY") == ["their-own-key-123"]


def test_the_gate_leaves_routed_and_answered_flows_to_the_router(gate):
    routed = flow_on("reverse:http://127.0.0.1:19001", path="/v1/messages", method="POST")
    routed.metadata["ccswitch"] = {"route": "claude"}
    gate.request(routed)
    assert routed.response is None
    answered = flow_on("reverse:http://127.0.0.1:19001")
    answered.response = tutils.tresp(status_code=503)
    gate.request(answered)
    assert answered.response.status_code == 503


def test_proxyauth_beside_a_reverse_listener_is_warned_about(safety_ctx, caplog):
    safety, tctx = safety_ctx
    caplog.set_level(logging.WARNING, logger="ccswitch")
    tctx.configure(safety, mode=["regular", "reverse:https://api.anthropic.com@8082"], proxyauth="user:pass")
    assert "Authorization: Basic" in caplog.text


def test_an_api_path_of_a_route_with_no_upstreams_is_refused_in_that_routes_format(gate):
    """Such a request passes the router untouched (its route is empty), so the gate must refuse it:
    in the format of the API its path names."""
    flow = flow_on("reverse:http://127.0.0.1:19001@0.0.0.0:8082", path="/v1/responses", method="POST")
    gate.request(flow)
    body = json.loads(flow.response.content)
    assert flow.response.status_code == 401 and body["error"]["message"] == NO_CLIENT_KEY
    assert "type" not in body   # OpenAI's shape, not Anthropic's {"type": "error", ...}


def test_a_refusal_while_the_script_loads_is_logged_as_its_message_not_as_a_crash(caplog):
    from ccswitch.mitm import make_addons
    from ccswitch.mitm.lifecycle import RefusalsAsMessages
    make_addons()
    script_log = logging.getLogger("mitmproxy.addons.script")
    assert sum(isinstance(f, RefusalsAsMessages) for f in script_log.filters) == 1
    make_addons()       # a reload adds no second filter
    assert sum(isinstance(f, RefusalsAsMessages) for f in script_log.filters) == 1
    caplog.set_level(logging.ERROR, "mitmproxy.addons.script")
    for error in (exceptions.OptionsError("ccswitch refuses to listen beyond loopback"), KeyError("a bug")):
        try:
            raise error
        except Exception as exc:
            script_log.error("error in script entry.py", exc_info=(type(exc), exc, exc.__traceback__))
    refusal, bug = caplog.records
    assert refusal.getMessage() == "ccswitch refuses to listen beyond loopback" and refusal.exc_info is None
    assert bug.getMessage() == "error in script entry.py" and bug.exc_info is not None   # a real crash keeps its traceback


@pytest.mark.parametrize("modes, said", [(["reverse:https://api.anthropic.com@127.0.0.1:8082"], False),
                                         (["regular@8080"], True),
                                         (["regular@127.0.0.1:8080", "reverse:https://api.anthropic.com@8082"], True)])
def test_the_loopback_note_comes_only_when_a_listener_names_no_host(safety_ctx, caplog, modes, said):
    # "pass --listen-host to change" came beside listeners whose host the user had written already
    import logging
    safety, tctx = safety_ctx
    caplog.set_level(logging.INFO, "ccswitch")
    tctx.configure(safety, mode=modes)
    tctx.configure(safety, listen_host="")
    assert ("pass --listen-host to change" in caplog.text) is said


@contextlib.contextmanager
def watched_safety(rules_path):
    """The rules watcher and the listen safety over `rules_path`, in mitmproxy's test context:
    (its context, the watcher, the safety)."""
    from ccswitch.mitm.rules_watcher import RulesWatcher
    gateway = Gateway()
    watcher, safety = RulesWatcher(gateway), ListenSafety(gateway)
    with taddons.context(proxyserver.Proxyserver(), proxyauth.ProxyAuth(), watcher, safety) as tctx:
        tctx.configure(watcher, ccswitch_rules=str(rules_path))
        yield tctx, watcher, safety


def test_upstream_mode_beside_a_rules_file_switched_to_one_without_upstream_proxy_is_told(tmp_path, caplog):
    # `set ccswitch_rules` to a file with no upstream_proxy: the requests ccswitch routes went direct,
    # past the upstream mode's proxy, without the word the same file gave at the start
    with_proxy, without = tmp_path / "with.yaml", tmp_path / "without.yaml"
    with_proxy.write_text("upstream_proxy: direct\n" + RULES)
    without.write_text(RULES)
    caplog.set_level(logging.WARNING, logger="ccswitch")
    with watched_safety(with_proxy) as (tctx, watcher, safety):
        tctx.configure(safety, mode=["upstream:http://127.0.0.1:3128"])
        assert "carries only what ccswitch does not route" not in caplog.text
        tctx.configure(watcher, ccswitch_rules=str(without))
        assert "the upstream mode's proxy (http://127.0.0.1:3128) carries only what ccswitch does not route" \
            in caplog.text


def test_the_upstream_mode_warning_comes_only_for_routed_upstreams_that_would_go_direct():
    # it came when every routed upstream had a proxy of its own, and told an https:// mode proxy to
    # be written as an upstream_proxy the rules refuse
    from ccswitch.config.load import parse_rules
    from ccswitch.mitm.safety import parsed_modes, routed_past_upstream_mode
    head = "upstreams:\n  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: k"
    modes = parsed_modes(["upstream:https://proxy.internal:3128@8085"])
    own = parse_rules(head + ", proxy: 'socks5://127.0.0.1:1080'}\n"
                      "  - {name: spare, protocol: anthropic, base_url: 'https://s.example', api_key: k}\n"
                      "routes: {claude: [a]}\n")
    assert routed_past_upstream_mode(modes, own) is None          # spare is in no route
    bare = parse_rules(head + "}\nroutes: {claude: [a]}\n")
    said = routed_past_upstream_mode(modes, bare)
    assert "a would go direct" in said and "Write `upstream_proxy: http://proxy.internal:3128`" in said
    explicit = parse_rules(head + ", proxy: direct}\nroutes: {claude: [a]}\n")
    assert routed_past_upstream_mode(modes, explicit) is None     # said so in the rules


def test_a_proxy_in_ccswitch_s_environment_is_said_to_go_unused_with_what_to_write():
    # a user behind a company proxy set HTTPS_PROXY for ccswitch: its requests went direct, unsaid
    from ccswitch.config.load import parse_rules
    from ccswitch.mitm.safety import proxy_in_environment
    rules = parse_rules("upstreams:\n  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: k}\n"
                        "routes: {claude: [a]}\n")
    said = proxy_in_environment({"https_proxy": "http://alice:s3cret@proxy.corp:3128"}, rules, [8080])
    assert said.startswith("https_proxy in ccswitch's environment names http://proxy.corp:3128") and "s3cret" not in said
    assert "a goes direct" in said and "Write `upstream_proxy: http://USER:${VAR}@proxy.corp:3128`" in said
    assert "ALL_PROXY" in proxy_in_environment({"ALL_PROXY": "socks5h://127.0.0.1:1080"}, rules, [8080])
    assert proxy_in_environment({"HTTPS_PROXY": "http://127.0.0.1:8080"}, rules, [8080]) is None   # ccswitch itself
    # ccswitch's own in HTTPS_PROXY (an `eval` in this shell) and the company's in HTTP_PROXY
    said = proxy_in_environment({"HTTPS_PROXY": "http://127.0.0.1:8080", "HTTP_PROXY": "https://proxy.corp"},
                                rules, [8080])
    assert said.startswith("HTTP_PROXY in ccswitch's environment names https://proxy.corp")
    assert "`upstream_proxy: http://proxy.corp:PORT`" in said
    assert proxy_in_environment({}, rules, [8080]) is None
    decided = parse_rules("upstream_proxy: direct\n" + "upstreams:\n  - {name: a, protocol: anthropic, "
                          "base_url: 'https://a.example', api_key: k}\nroutes: {claude: [a]}\n")
    assert proxy_in_environment({"HTTPS_PROXY": "http://proxy.corp:3128"}, decided, [8080]) is None


def test_the_start_says_when_ccswitch_s_environment_names_a_proxy_it_does_not_use(tmp_path, caplog, monkeypatch):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    caplog.set_level(logging.WARNING, logger="ccswitch")
    with watched_safety(rules) as (tctx, watcher, safety):
        tctx.configure(safety, mode=["regular@8080"])
        tctx.configure(safety, listen_port=8081)    # the start configures again for --set's options
        tctx.configure(watcher, ccswitch_rules=str(rules))
    assert "HTTPS_PROXY in ccswitch's environment names http://proxy.corp:3128, which ccswitch does not use" \
        in caplog.text
    assert caplog.text.count("which ccswitch does not use") == 1, caplog.text
