"""Where ccswitch listens and what it decrypts."""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions, tls
from mitmproxy.proxy import mode_specs

from ccswitch.mitm.gateway import Gateway
from ccswitch.net.addresses import is_loopback

log = logging.getLogger("ccswitch")


class ListenSafety:
    """Loopback by default, lazy upstream connections, no open relay on a network.

    mitmproxy may bind its servers before a script is loaded, so setting
    `listen_host` alone is not enough: `running` rebinds any server that ended up
    on every interface, and until then `client_connected` turns away any peer that
    is not on loopback.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.own_loopback = False   # True when the user gave no listen host

    def configure(self, updated) -> None:
        if "listen_host" in updated and not ctx.options.listen_host:
            self.own_loopback = True
            ctx.options.update(listen_host="127.0.0.1")
            log.info("ccswitch: listening on 127.0.0.1 (pass --listen-host to change)")
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            ctx.options.update(connection_strategy="lazy")
            log.info("ccswitch: connection_strategy forced to lazy (the original host may be unreachable)")
        if updated & {"listen_host", "mode", "proxyauth", "ccswitch_rules"}:
            self.check_exposure()

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
        if self.own_loopback and client.peername and not is_loopback(str(client.peername[0])):
            client.error = "ccswitch listens on loopback only"

    def check_exposure(self) -> None:
        exposed = []
        for spec in ctx.options.mode:
            try:
                mode = mode_specs.ProxyMode.parse(spec)
            except ValueError:
                continue
            host = mode.listen_host(ctx.options.listen_host)
            if not is_loopback(host):
                exposed.append(f"{spec} on {host or 'all interfaces'}")
        if exposed and not self.gateway.rules.client_keys and not ctx.options.proxyauth:
            raise exceptions.OptionsError(
                "ccswitch refuses to listen beyond loopback (" + "; ".join(exposed) + ") without "
                "client_keys in rules.yaml or mitmproxy's --proxyauth")


class InterceptScope:
    """In regular (HTTPS_PROXY) mode decrypt only the `intercept` hosts."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        context = data.context
        if not isinstance(context.client.proxy_mode, mode_specs.RegularMode):
            return
        host = data.client_hello.sni or (context.server.address[0] if context.server.address else "")
        if host.lower() not in self.gateway.rules.intercept:
            data.ignore_connection = True
