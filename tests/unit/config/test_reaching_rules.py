"""Rules for reaching upstreams: proxy / upstream_proxy (with ${VAR}, kept secret),
max_connections and cache_breakpoints."""

from __future__ import annotations

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.config.values import RulesError
from ccswitch.net.proxy import Proxy

PASSWORD = "proxy-pass-w0rd"


def rules(body: str, head: str = "", env: dict | None = None):
    text = f"""{head}
upstreams:
{body}
routes: {{claude: [a]}}
"""
    return parse_rules(text, "r.yaml", env={} if env is None else env)


def up(name: str, extra: str = "") -> str:
    return f"  - {{name: {name}, protocol: anthropic, base_url: 'https://{name}.example', api_key: k{extra}}}\n"


def problems(*args, **kw) -> list[str]:
    with pytest.raises(RulesError) as caught:
        rules(*args, **kw)
    return caught.value.problems


def test_no_proxy_no_cap_no_trimming_by_default():
    a = rules(up("a")).upstreams[0]
    assert (a.proxy, a.max_connections, a.cache_breakpoints) == (None, None, None)


def test_upstream_proxy_is_the_default_an_upstream_overrides_or_opts_out_of():
    r = rules(up("a") + up("b", ", proxy: 'socks5h://127.0.0.1:1080'") + up("c", ", proxy: direct"),
              head="upstream_proxy: http://127.0.0.1:3128")
    assert [u.proxy for u in r.upstreams] == [Proxy("http", "127.0.0.1", 3128), Proxy("socks5h", "127.0.0.1", 1080),
                                              None]
    assert rules(up("a", ", proxy: 'socks5://10.0.0.1:1080'")).upstreams[0].proxy.shown == "socks5://10.0.0.1:1080"


def test_proxy_passwords_come_from_the_environment_and_show_nowhere():
    env = {"PROXY_PASS": PASSWORD, "DEFAULT_PROXY": f"http://me:{PASSWORD}@127.0.0.1:3128"}
    r = rules(up("a", ", proxy: 'socks5://me:${PROXY_PASS}@127.0.0.1:1080'") + up("b"),
              head="upstream_proxy: ${DEFAULT_PROXY}", env=env)
    a, b = r.upstreams
    assert (a.proxy.username, a.proxy.password) == ("me", PASSWORD) and b.proxy.password == PASSWORD
    for shown in (repr(r), str(r), a.model_dump_json(), str(a.model_dump()), str(b.model_dump())):
        assert PASSWORD not in shown
    assert a.model_dump()["proxy"] == "socks5://127.0.0.1:1080" and a.model_dump()["max_connections"] is None


def test_a_missing_proxy_variable_is_a_problem_even_for_a_disabled_upstream():
    found = problems(up("a", ", enabled: false, proxy: 'http://me:${NOPE}@h:1'"),
                     head="upstream_proxy: 'socks5://${ALSO_MISSING}'")
    assert found == [
        "r.yaml: upstream_proxy: environment variable ALSO_MISSING is not set (export it where ccswitch runs)",
        "r.yaml: upstreams[a].proxy: environment variable NOPE is not set (export it where ccswitch runs)"]


@pytest.mark.parametrize("proxy, message", [
    (f"https://me:{PASSWORD}@h:1", "a TLS connection to the proxy itself (https://) is not supported"),
    (f"socks5://me:{PASSWORD}@h", "must name the proxy's port"),
    (f"smtp://me:{PASSWORD}@h:25", "must be direct or a URL like"),
    ("socks5://me@h:1", "SOCKS5 authentication needs both a user name and a password"),
    ("42", "must be direct or a URL like"),
])
def test_bad_proxies_are_named_by_field_without_their_text(proxy, message):
    found = problems(up("a", f", proxy: '{proxy}'"))
    assert len(found) == 1 and found[0].startswith("r.yaml: upstreams[a].proxy: " + message)
    assert PASSWORD not in found[0]
    top = problems(up("a"), head=f"upstream_proxy: '{proxy}'")
    assert len(top) == 1 and top[0].startswith("r.yaml: upstream_proxy: ") and PASSWORD not in top[0]


def test_a_proxy_that_is_not_text_is_refused():
    assert problems(up("a", ", proxy: 3128")) == [
        "r.yaml: upstreams[a].proxy: must be direct or a proxy URL like socks5://host:port"]


def test_max_connections_and_cache_breakpoints():
    a = rules(up("a", ", max_connections: 8, cache_breakpoints: 0")).upstreams[0]
    assert (a.max_connections, a.cache_breakpoints) == (8, 0)
    found = problems(up("a", ", max_connections: 0, cache_breakpoints: -1"))
    assert [p.split(": ")[1] for p in found] == ["upstreams[a].max_connections", "upstreams[a].cache_breakpoints"]
    assert problems(up("a", ", max_connections: many")) == ["r.yaml: upstreams[a].max_connections: must be an integer"]


PORT_RANGE = "the port must be a number from 1 to 65535"


@pytest.mark.parametrize("port", ["0", "00", "65536"])
def test_a_port_no_connection_can_use_is_refused(port):
    assert problems(up("a", f", proxy: 'socks5://127.0.0.1:{port}'")) == [f"r.yaml: upstreams[a].proxy: {PORT_RANGE}"]
    assert problems(up("a"), head=f"upstream_proxy: 'http://127.0.0.1:{port}'") == [f"r.yaml: upstream_proxy: {PORT_RANGE}"]
    body = f"  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:{port}', api_key: k}}\n"
    assert problems(body) == [f"r.yaml: upstreams[a].base_url: {PORT_RANGE}"]


def test_the_ports_at_either_end_are_fine():
    for port in (1, 65535):
        body = f"  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:{port}', api_key: k}}\n"
        assert rules(body, head=f"upstream_proxy: 'http://127.0.0.1:{port}'").upstreams[0].proxy.port == port


@pytest.mark.parametrize("port", ["0", "99999"])
def test_a_notify_hook_on_a_port_no_connection_can_use_is_refused(port):
    assert problems(up("a"), head=f"notify: [{{url: 'https://hooks.example:{port}/SECRET'}}]") == [
        f"r.yaml: notify[0].url: {PORT_RANGE}"]


def test_a_notify_hook_for_no_event_is_refused():
    assert problems(up("a"), head="notify: [{url: 'https://hooks.example/x', events: []}]") == [
        "r.yaml: notify[0].events: must name at least one event (leave it out for all; remove the hook to tell "
        "none)"]


@pytest.mark.parametrize("password", ["p%41ss", "a/b", "x#y", "q?z", "p@ss", "c:d", "50%"])
def test_a_proxy_password_from_the_environment_arrives_as_it_is_whatever_it_holds(password):
    """As for `usage_db` and `state`: the variable's value is the password, not URL text."""
    r = rules(up("a", ", proxy: 'socks5h://me:${PROXY_PASS}@127.0.0.1:1080'") + up("b"),
              head="upstream_proxy: 'http://${PROXY_USER}@127.0.0.1:3128'",
              env={"PROXY_PASS": password, "PROXY_USER": f"me:{password}"})
    a, b = r.upstreams
    assert (a.proxy.username, a.proxy.password, a.proxy.port) == ("me", password, 1080)
    assert (b.proxy.username, b.proxy.password) == ("me", password)
