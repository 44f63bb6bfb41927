"""Where ccswitch listens, who may use it, and what it decrypts."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from mitmproxy import ctx, exceptions, http, tls
from mitmproxy.proxy import mode_specs

from ccswitch.config.models import Rules
from ccswitch.mitm.flows import LIVE_HOST, answer_error, likely_protocol
from ccswitch.mitm.gateway import Gateway
from ccswitch.mitm.scope import answered_early, host_named
from ccswitch.net.addresses import is_loopback
from ccswitch.net.proxy import proxy_elsewhere
from ccswitch.wire import headers as wire
from ccswitch.wire.redact import NO_CLIENT_KEY, client_credential, holding, target_without

log = logging.getLogger("ccswitch")

_PROXYAUTH_HOW = ("mitmproxy's proxy authentication: add --proxyauth USER:PASS (or --proxyauth @HTPASSWD_FILE) "
                  "and give clients HTTPS_PROXY=http://USER:PASS@HOST:PORT (client_keys cannot protect it: "
                  "a CONNECT carries no API key; --proxyauth any, or a login without a password, lets anyone in)")
_CLIENT_KEYS_HOW = ("client_keys in rules.yaml (every request on it, routed or not, must then carry one "
                    "as x-api-key or Authorization: Bearer)")


def missing_guard(mode: mode_specs.ProxyMode, client_keys: bool, proxyauth: bool) -> str | None:
    """What a listener of `mode` beyond loopback needs to authenticate every client and lacks, or None."""
    if isinstance(mode, (mode_specs.LocalMode, mode_specs.TunMode, mode_specs.WireGuardMode)):
        return None   # no listener others can reach, or peers that hold WireGuard keys
    if isinstance(mode, mode_specs.ReverseMode) and mode.scheme in ("http", "https"):
        return None if client_keys else _CLIENT_KEYS_HOW
    if isinstance(mode, (mode_specs.RegularMode, mode_specs.UpstreamMode, mode_specs.Socks5Mode)):
        return None if proxyauth else _PROXYAUTH_HOW
    return "a way to authenticate its clients, which ccswitch has not for this mode: listen on loopback"


def routed_past_upstream_mode(modes: list[tuple[str, mode_specs.ProxyMode]], rules: Rules) -> str | None:
    """mitmproxy's upstream mode sends on, through its proxy, what ccswitch does not route; ccswitch
    dials what it routes itself, through the rules' proxies: with none set, those go direct."""
    proxies = [f"{mode.scheme}://{mode.address[0]}:{mode.address[1]}" for _, mode in modes
               if isinstance(mode, mode_specs.UpstreamMode)]
    direct = going_direct(rules)
    if not proxies or not direct:
        return None
    # ccswitch reaches a proxy over plain HTTP (CONNECT) or SOCKS only
    write = f"`upstream_proxy: http://{proxies[0].split('://', 1)[1]}`" if proxies[0].startswith(("http:", "https:")) \
        else "an upstream_proxy"
    return (f"the upstream mode's proxy ({', '.join(proxies)}) carries only what ccswitch does not route: "
            "ccswitch sends the requests it routes itself, through rules.yaml's upstream_proxy or each "
            f"upstream's proxy, and {', '.join(direct)} would go direct. Write {write} (its login as "
            "`http://USER:${VAR}@…`), or `upstream_proxy: direct` to mean it")


def going_direct(rules: Rules) -> list[str]:
    """The routed upstreams reached without a proxy because the rules name none (not `direct`
    by choice); none at all when the rules set `upstream_proxy`."""
    if "upstream_proxy" in rules.model_fields_set:
        return []
    return [u.name for u in rules.upstreams
            if rules.routes.routes_of(u.name) and u.proxy is None and "proxy" not in u.model_fields_set]


#: the variables other programs take an outgoing proxy from, in the order they are looked at
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


def proxy_in_environment(environ: Mapping[str, str], rules: Rules, own_ports: Iterable[int]) -> str | None:
    """ccswitch's environment names an outgoing proxy (a company's), which ccswitch does not use:
    what to write instead, or None (no such proxy, only ccswitch itself from `ccswitch env`, or
    the rules decide every upstream's way)."""
    if not (direct := going_direct(rules)) or (found := proxy_elsewhere(environ, PROXY_VARIABLES,
                                                                          set(own_ports))) is None:
        return None
    name, proxy = found
    goes = "goes" if len(direct) == 1 else "go"
    return (f"{name} in ccswitch's environment names {proxy.shown}, which ccswitch does not use: "
            f"{', '.join(direct)} {goes} direct. Write `upstream_proxy: {proxy.suggestion}` in rules.yaml to "
            "reach upstreams through it, or `upstream_proxy: direct` to mean it")


def parsed_modes(specs: Iterable[str]) -> list[tuple[str, mode_specs.ProxyMode]]:
    """(spec, mode) of each listener spec of mitmproxy's `mode` option that parses (mitmproxy
    itself refuses a bad one)."""
    found = []
    for spec in specs:
        try:
            found.append((spec, mode_specs.ProxyMode.parse(spec)))
        except ValueError:
            continue
    return found


def unprotected_listeners(specs: Iterable[str], default_host: str, client_keys: bool, proxyauth: bool) -> list[str]:
    """The listeners beyond loopback that would let a client in unauthenticated, and what each needs."""
    found = []
    for spec, mode in parsed_modes(specs):
        host = mode.listen_host(default_host)
        if is_loopback(host):
            continue
        need = missing_guard(mode, client_keys, proxyauth)
        if need:
            found.append(f"{spec} on {host or 'all interfaces'} needs {need}")
    return found


def beyond_loopback(client, default_host: str) -> bool:
    """The client came from another machine, or over a listener that others can reach."""
    peer = str(client.peername[0]) if client.peername else ""
    return not is_loopback(peer) or not is_loopback(client.proxy_mode.listen_host(default_host))


def proxy_auth_set() -> bool:
    """Whether mitmproxy asks for proxy credentials that keep anyone out."""
    return guards_anything(ctx.options.proxyauth)


#: connections one address beyond loopback may hold open at once: a team behind one NAT has far
#: fewer; a stranger holding thousands (idle, or sending a header line now and then) took every
#: file the process may open, and no key holder got in
MAX_CONNECTIONS_PER_PEER = 256


class PeerConnections:
    """The connections each address beyond loopback holds open; one past the limit is closed."""

    def __init__(self, limit: int = MAX_CONNECTIONS_PER_PEER) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}
        self._counted: dict[str, str] = {}      # client id -> its address
        self._told: set[str] = set()            # addresses over the limit, logged once while they are

    def connected(self, client) -> None:
        address = str(client.peername[0])
        if self.open.get(address, 0) >= self.limit:
            client.error = f"more than {self.limit} connections from one address"
            if address not in self._told:
                self._told.add(address)
                log.warning("ccswitch: %s holds %d connections, the most one address may: its next ones are "
                            "closed until it holds fewer", address, self.limit)
            return
        self.open[address] = self.open.get(address, 0) + 1
        self._counted[client.id] = address

    def disconnected(self, client) -> None:
        address = self._counted.pop(client.id, None)
        if address is None:
            return
        if (left := self.open[address] - 1) > 0:
            self.open[address] = left
        else:
            del self.open[address]
        if left < self.limit:
            self._told.discard(address)


def guards_anything(proxyauth: str | None) -> bool:
    """`any` takes every user and password, and `USER:` a login without a password: neither keeps
    anyone out.  An htpasswd file (`@…`) and LDAP (`ldap:…`, `ldaps:…`) do."""
    setting = (proxyauth or "").strip()
    if not setting or setting.lower() == "any":
        return False
    if setting.startswith("@") or setting.lower().startswith(("ldap:", "ldaps:")):
        return True
    user, sep, password = setting.partition(":")
    return bool(sep) and bool(password)


class ListenSafety:
    """Loopback by default, lazy upstream connections, no open relay on a network.

    mitmproxy may bind its servers before a script is loaded, so setting
    `listen_host` alone is not enough: `running` rebinds any server that ended up
    on every interface, and until then `client_connected` turns away any peer that
    is not on loopback.  Beyond loopback every listener must authenticate every
    client: at start-up, on every option change and on every rules reload (a veto).
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.own_loopback = False   # True when the user gave no listen host
        self.said: set[str] = set()     # notes logged: the start configures twice (the script's options, then --set)
        self.peers = PeerConnections()
        gateway.rules_file.vetoes.append(self.refuse_unprotected)

    def configure(self, updated) -> None:
        # checked before this method updates options itself: a refusal raised inside a nested
        # update makes mitmproxy roll back to the same options and configure again, without end
        if updated & {"listen_host", "mode", "proxyauth", "ccswitch_rules"}:
            self.check_exposure()
        if updated & {"mode", "ccswitch_rules"} and (note := routed_past_upstream_mode(
                parsed_modes(ctx.options.mode), self.gateway.rules)):
            self._note(note)
        if updated & {"mode", "listen_port", "ccswitch_rules"} and (note := proxy_in_environment(
                os.environ, self.gateway.rules,
                (mode.listen_port(ctx.options.listen_port) for _, mode in parsed_modes(ctx.options.mode)))):
            self._note(note)
        if "proxyauth" in updated and ctx.options.proxyauth and self._reverse_specs():
            log.warning("ccswitch: mitmproxy's proxyauth also asks every request on %s for "
                        "'Authorization: Basic': API clients that send a Bearer token or only x-api-key get "
                        "its 401 there; protect reverse listeners with client_keys and run them in a "
                        "mitmdump without --proxyauth", ", ".join(self._reverse_specs()))
        if "listen_host" in updated and not ctx.options.listen_host:
            self.own_loopback = True
            ctx.options.update(listen_host="127.0.0.1")
            if any(mode.custom_listen_host is None for _, mode in parsed_modes(ctx.options.mode)):
                log.info("ccswitch: listening on 127.0.0.1 (pass --listen-host to change)")
        if "stream_large_bodies" in updated and ctx.options.stream_large_bodies:
            # mitmproxy sends a body over that size on to the original host before any request hook
            raise exceptions.OptionsError(
                "ccswitch reads API requests whole, to route them and check their keys, and streams "
                "answers itself: with stream_large_bodies a large request would go past it to the "
                "original host, its key with it. Leave stream_large_bodies unset")
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            ctx.options.update(connection_strategy="lazy")
            log.info("ccswitch: connection_strategy forced to lazy (the original host may be unreachable)")

    def _note(self, note: str) -> None:
        """A note on the setup, logged once while it stays the same."""
        if note not in self.said:
            self.said.add(note)
            log.warning("ccswitch: %s", note)

    def running(self) -> None:
        if not self.own_loopback:
            return
        specs, changed = [], False
        for spec in ctx.options.mode:
            mode = mode_specs.ProxyMode.parse(spec)
            port = mode.listen_port(ctx.options.listen_port)
            if mode.custom_listen_host is None and port is not None:
                head = spec.rpartition("@")[0] if "@" in spec else spec
                spec, changed = f"{head}@127.0.0.1:{port}", True
            specs.append(spec)
        if changed:
            ctx.options.update(mode=specs)

    def client_connected(self, client) -> None:
        if not client.peername or is_loopback(str(client.peername[0])):
            return
        if self.own_loopback and client.proxy_mode.custom_listen_host is None:
            client.error = "ccswitch listens on loopback only"   # a server bound before the rebind
        elif missing_guard(client.proxy_mode, bool(self.gateway.rules.client_keys), proxy_auth_set()):
            client.error = "ccswitch serves clients beyond loopback only with authentication"
        else:
            self.peers.connected(client)

    def client_disconnected(self, client) -> None:
        self.peers.disconnected(client)

    def check_exposure(self) -> None:
        found = self._unprotected(self.gateway.rules)
        if found:
            raise exceptions.OptionsError(
                "ccswitch refuses to listen beyond loopback without authentication: " + "; ".join(found))

    def refuse_unprotected(self, rules: Rules) -> str | None:
        """Veto new rules that would leave a listener beyond loopback open."""
        found = self._unprotected(rules)
        if not found:
            return None
        return "they would leave a listener beyond loopback without authentication: " + "; ".join(found)

    def _unprotected(self, rules: Rules) -> list[str]:
        # an empty listen host is ours to make loopback (`configure`, `running`)
        return unprotected_listeners(ctx.options.mode, ctx.options.listen_host or "127.0.0.1",
                                     bool(rules.client_keys), proxy_auth_set())

    @staticmethod
    def _reverse_specs() -> list[str]:
        return [spec for spec in ctx.options.mode if spec.lower().startswith("reverse:")]


class ClientKeyGate:
    """Client keys on the requests ccswitch does not route (the router checks its own).

    On a reverse listener reachable from beyond loopback, or from a peer beyond it, a
    request that passes through to the target needs a client key just like a routed one;
    and a client key is never passed on, in any mode.  Runs after the router: a flow it
    routed or answered is left alone.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or "ccswitch" in flow.metadata or answered_early(flow):
            return
        rules = self.gateway.rules
        client = flow.client_conn
        if isinstance(client.proxy_mode, mode_specs.ReverseMode) and beyond_loopback(
                client, ctx.options.listen_host or "127.0.0.1"):
            presented = client_credential(wire.from_wire(flow.request.headers.fields))   # as the router reads it
            if not rules.client_keys or not rules.client_key_ok(presented):   # no keys: nobody passes
                answer_error(flow, likely_protocol(flow.request), 401, NO_CLIENT_KEY)
                return
        _drop_client_keys(flow.request, rules)


def _drop_client_keys(request: http.Request, rules: Rules) -> None:
    """A client key goes no further than ccswitch, wherever the client put it (`x-api-key`, a
    Bearer token, Azure's `api-key`, a cookie, `?key=`); the rest is the client's own."""
    if not rules.client_keys:
        return
    keys = rules.client_key_texts()
    held = holding(wire.from_wire(request.headers.fields), keys)
    if any(held):
        request.headers.fields = tuple(field for field, hit in zip(request.headers.fields, held, strict=True)
                                       if not hit)
    if (path := target_without(request.path, keys)) != request.path:
        request.path = path


class InterceptScope:
    """In regular (HTTPS_PROXY) and upstream mode decrypt only the `intercept` hosts (and
    `https://ccswitch`, the live page, which the proxy answers itself); upstream mode passes the
    others through its proxy."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        context = data.context
        if not isinstance(context.client.proxy_mode, mode_specs.RegularMode | mode_specs.UpstreamMode):
            return
        host = data.client_hello.sni or (context.server.address[0] if context.server.address else "")
        host = host_named(host)
        if host not in self.gateway.rules.intercept and host != LIVE_HOST:
            data.ignore_connection = True
