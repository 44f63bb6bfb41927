"""mitmproxy glue: options, hooks, commands.  Thin by design: every decision is
made by the pure modules (rules, routing, upstream, dialer); this file only
moves data between them and the flows."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from datetime import datetime

from mitmproxy import command, ctx, exceptions, http, tls
from mitmproxy.proxy import mode_specs

from . import protocols
from .dialer import Dialer
from .health import HealthBoard
from .jobs import Job
from .relay import JOB_HEADER, Relay
from .routing import RouteMatch, classify, plan
from .rules import Rules, RulesError
from .rulesfile import RulesFile
from .status import status_text
from .upstream import CREDENTIAL_HEADERS, REDACTED, ClientRequest, client_credential, upstream_url

log = logging.getLogger("ccswitch")
# httpx logs every upstream request at INFO; the flow list already shows them
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)


class Gateway:
    """State shared by the addon classes: the rules in force and the health board."""

    def __init__(self) -> None:
        self.rules_file = RulesFile()
        self.health = HealthBoard()

    @property
    def rules(self) -> Rules:
        return self.rules_file.rules


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        if self.own_loopback and client.peername and not _is_loopback(str(client.peername[0])):
            client.error = "ccswitch listens on loopback only"

    def check_exposure(self) -> None:
        exposed = []
        for spec in ctx.options.mode:
            try:
                mode = mode_specs.ProxyMode.parse(spec)
            except ValueError:
                continue
            host = mode.listen_host(ctx.options.listen_host)
            if not _is_loopback(host):
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


def _error_response(protocol: str, status: int, message: str, extra: dict | None = None) -> http.Response:
    headers = {"content-type": "application/json", **(extra or {})}
    return http.Response.make(status, protocols.error_json(protocol, status, message), headers)


class Router:
    """Hand routed flows to the dialer through the loopback relay."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.dialer: Dialer | None = None
        self.relay: Relay | None = None
        self.jobs: dict[str, Job] = {}   # flow id -> job, while the flow is live

    def load(self, loader) -> None:
        loader.add_option("ccswitch_loopback_only", bool, False,
                          "Refuse upstreams that are not loopback addresses (a guard for tests).")
        loader.add_option("ccswitch_offline", bool, False,
                          "The intercepted hosts are unreachable (relays only): answer their "
                          "unrouted requests (e.g. Claude Code's settings calls) with 404 at once "
                          "instead of a 502 that clients retry for many seconds.")

    async def running(self) -> None:
        self.dialer = Dialer(self.gateway.health, loopback_only=ctx.options.ccswitch_loopback_only)
        self.relay = Relay(self.dialer.run)
        await self.relay.start()

    async def done(self) -> None:
        if self.relay:
            await self.relay.stop()
        if self.dialer:
            await self.dialer.aclose()

    def configure(self, updated) -> None:
        if "ccswitch_loopback_only" in updated and self.dialer:
            self.dialer.loopback_only = ctx.options.ccswitch_loopback_only

    # ------------------------------------------------------------------ hooks

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or self.relay is None:
            return
        match = self._match(flow)
        rules = self.gateway.rules
        if match is None or not rules.routes.for_route(match.route):
            self._unrouted(flow)  # a route with no upstreams is not ours either
            return
        client_protocol = protocols.CLIENT_PROTOCOL[match.route]
        headers = list(flow.request.headers.items(multi=True))
        if rules.client_keys and not rules.client_key_ok(client_credential(headers)):
            self._answer(flow, _error_response(client_protocol, 401, "missing or invalid ccswitch client key"))
            return
        if match.endpoint == "websocket":
            self._answer(flow, _error_response(
                client_protocol, 426, "ccswitch serves Responses over HTTPS, not WebSocket"))
            return
        body, problem = _parse_body(flow.request.get_content(strict=False) or b"")
        if problem:
            self._answer(flow, _error_response(client_protocol, 400, problem))
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._answer(flow, _error_response(client_protocol, 400, "the request body names no model"))
            return
        now = datetime.now(rules.tz)
        chosen = plan(rules, match.route, model, self.gateway.health, now)
        if not chosen.candidates:
            self._answer(flow, _error_response(client_protocol, 503, chosen.why_none(match.route),
                                               {"retry-after": "30"}))
            return
        req = ClientRequest(route=match.route, endpoint=match.endpoint, method="POST",
                            url=flow.request.url, headers=headers,
                            body=flow.request.get_content(strict=False) or b"", json=body, model=model,
                            stream=body.get("stream") is True, client_protocol=client_protocol)
        job = Job(request=req, rules=rules, candidates=chosen.candidates, flow_id=flow.id)
        self.jobs[flow.id] = job
        self.relay.register(job)
        flow.metadata["ccswitch"] = {"route": match.route, "endpoint": match.endpoint, "model": model}
        _redact_credentials(flow.request.headers)
        flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", self.relay.port
        flow.request.headers[JOB_HEADER] = job.token

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.id in self.jobs and "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    # ------------------------------------------------------------------ helpers

    def _match(self, flow: http.HTTPFlow) -> RouteMatch | None:
        upgrade = flow.request.headers.get("upgrade", "").lower() == "websocket"
        match = classify(flow.request.method, flow.request.path, upgrade)
        if match is None:
            return None
        if isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            return match
        if flow.request.pretty_host.lower() in self.gateway.rules.intercept:
            return match
        return None

    def _unrouted(self, flow: http.HTTPFlow) -> None:
        if ctx.options.ccswitch_offline and flow.request.pretty_host.lower() in self.gateway.rules.intercept:
            protocol = protocols.ANTHROPIC if "anthropic" in flow.request.pretty_host else protocols.CHAT
            self._answer(flow, _error_response(protocol, 404, "ccswitch is offline: this host is not reachable"))

    @staticmethod
    def _answer(flow: http.HTTPFlow, response: http.Response) -> None:
        _redact_credentials(flow.request.headers)
        flow.response = response
        flow.comment = f"ccswitch: answered {response.status_code} itself"

    def _finish(self, flow: http.HTTPFlow) -> None:
        job = self.jobs.pop(flow.id, None)
        if job is None:
            if flow.request.pretty_host.lower() in self.gateway.rules.intercept:
                _redact_credentials(flow.request.headers)  # passed through: sent already, hide now
            return
        if self.relay:
            self.relay.forget(job)
        flow.request.headers.pop(JOB_HEADER, None)
        if job.upstream:
            upstream = job.rules.upstream(job.upstream)
            flow.request.url = upstream_url(upstream, job.request)
        flow.comment = job.comment()
        if job.failed_over:
            flow.marked = ":warning:"
        flow.metadata["ccswitch"].update(
            upstream=job.upstream, upstream_model=job.upstream_model,
            attempts=[a.describe() for a in job.attempts], error=job.error)


def _redact_credentials(headers: http.Headers) -> None:
    for name in CREDENTIAL_HEADERS:
        if name in headers:
            headers[name] = REDACTED


def _parse_body(raw: bytes) -> tuple[dict, str | None]:
    if not raw:
        return {}, "the request has no body"
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        return {}, "the request body is not UTF-8 JSON"
    except ValueError as exc:
        return {}, f"the request body is not valid JSON ({exc})"
    except RecursionError:
        return {}, "the request body is nested too deeply"
    if not isinstance(body, dict):
        return {}, "the request body must be a JSON object"
    return body, None


class RulesWatcher:
    """Load the rules at start-up (invalid rules stop it) and reload them on change."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._task: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option("ccswitch_rules", str, "",
                          "Path of ccswitch's rules.yaml (default: ./rules.yaml, else "
                          "~/.ccswitch/rules.yaml, else the built-in default).")

    def configure(self, updated) -> None:
        if "ccswitch_rules" in updated:
            try:
                self.gateway.rules_file.open(ctx.options.ccswitch_rules or None)
            except RulesError as exc:
                raise exceptions.OptionsError(f"invalid ccswitch rules:\n{exc}") from None
            self.gateway.health.sync(self.gateway.rules_file.fingerprints())

    def running(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def done(self) -> None:
        if self._task:
            self._task.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.gateway.rules_file.reload_if_changed():
                self.gateway.health.sync(self.gateway.rules_file.fingerprints())


class Commands:
    """`ccswitch.status`, `.use`, `.reset`, `.enable`, `.disable`: live, in memory."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _upstream(self, name: str):
        try:
            return self.gateway.rules.upstream(name)
        except KeyError:
            known = ", ".join(u.name for u in self.gateway.rules.upstreams)
            raise exceptions.CommandError(f"no upstream named {name!r} (known: {known})") from None

    @command.command("ccswitch.status")
    def status(self) -> str:
        """Each upstream's state: available, cooling down, outside its hours, failures."""
        rules = self.gateway.rules
        return status_text(rules, self.gateway.health, datetime.now(rules.tz))

    @command.command("ccswitch.use")
    def use(self, name: str, minutes: int = 30) -> str:
        """Prefer one upstream for its routes for a while (default 30 minutes)."""
        self._upstream(name)
        health = self.gateway.health
        health.preferred = (name, health.clock() + minutes * 60)
        log.info("ccswitch: preferring %s for %d minutes", name, minutes)
        return f"preferring {name} for {minutes} minutes"

    @command.command("ccswitch.reset")
    def reset(self, name: str) -> str:
        """Clear an upstream's failures and cooldown."""
        self._upstream(name)
        self.gateway.health.reset(name)
        log.info("ccswitch: %s reset", name)
        return f"{name}: failures and cooldown cleared"

    @command.command("ccswitch.enable")
    def enable(self, name: str) -> str:
        """Switch an upstream on until the next reload."""
        upstream = self._upstream(name)
        if upstream.auth != "client" and upstream.api_key is None:
            raise exceptions.CommandError(f"{name} has no api_key (its environment variable is not set)")
        self.gateway.health.switch(name, True)
        log.info("ccswitch: %s enabled until the next reload", name)
        return f"{name} enabled until the next reload"

    @command.command("ccswitch.disable")
    def disable(self, name: str) -> str:
        """Switch an upstream off until the next reload."""
        self._upstream(name)
        self.gateway.health.switch(name, False)
        log.info("ccswitch: %s disabled until the next reload", name)
        return f"{name} disabled until the next reload"


def make_addons() -> list:
    gateway = Gateway()
    return [RulesWatcher(gateway), ListenSafety(gateway), InterceptScope(gateway), Router(gateway),
            Commands(gateway)]
