"""A client that took the regular (HTTPS_PROXY) listener for a base URL.

Its request is addressed to the proxy itself: mitmproxy would refuse to connect to itself and
answer an HTML 502 ("Request destination unknown"), which Claude Code retries for three minutes
before calling it "a server-side issue". ccswitch answers it at once instead, in the client's API
format, with the base URL or the HTTPS_PROXY it meant.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mitmproxy import ctx, http
from mitmproxy.proxy import mode_specs

from ccswitch.mitm.flows import LIVE_HOST, answer_error, likely_protocol
from ccswitch.mitm.live_page import PREFIX as PAGE_PREFIX
from ccswitch.mitm.safety import parsed_modes
from ccswitch.mitm.scope import answered_early

log = logging.getLogger("ccswitch")

#: 421 Misdirected Request: this server is not the one to answer it (a 4xx: no client retries it)
STATUS = 421


def addressed_to_itself(host: str, port: int, sockname: tuple | None, listen_host: str) -> bool:
    """A request for `host:port` received on the listener at `sockname` names that listener."""
    if not sockname or port != sockname[1]:
        return False
    host = host.strip("[]").lower()
    # the names mitmproxy's own check refuses to connect to, and the address the client reached
    return host in ("localhost", "127.0.0.1", "::1", str(sockname[0]).lower(), listen_host.lower())


def reverse_listeners(specs: Iterable[str], default_port: int | None = None) -> list[tuple[int, str]]:
    """(port, target) of each reverse listener of mitmproxy's `mode` option (`default_port`: its
    `listen_port` option, for a spec without `@PORT`)."""
    return [(mode.listen_port(default_port), mode.data) for _, mode in parsed_modes(specs)
            if isinstance(mode, mode_specs.ReverseMode)]


def wants_the_page(method: str, path: str, accept: str) -> bool:
    """A browser asking the regular listener for a page: the live page's path, or its root."""
    bare = path.split("?", 1)[0]
    return bare == PAGE_PREFIX or bare.startswith(PAGE_PREFIX + "/") or (
        method == "GET" and bare == "/" and "text/html" in accept)


def wrong_listener_message(host: str, port: int, reverse: list[tuple[int, str]], page: bool = False) -> str:
    """What a client pointed at the regular listener as its base URL is told to do (a browser
    asking it for a page: where the live page is)."""
    host = f"[{host}]" if ":" in host else host
    proxy = f"http://{host}:{port}"
    if page:
        elsewhere = f", or http://{host}:{reverse[0][0]}{PAGE_PREFIX}/ (a reverse listener)" if reverse else ""
        return (f"the live page is not served at {proxy}, ccswitch's regular proxy listener: open "
                f"http://{LIVE_HOST}{PAGE_PREFIX}/ through it (HTTPS_PROXY or the browser's proxy set to {proxy})"
                f"{elsewhere}")
    said = (f"{proxy} is ccswitch's regular proxy listener, not a base URL: give it to the client as "
            f"HTTPS_PROXY={proxy} (eval \"$(ccswitch env --port {port})\")")
    if reverse:
        ways = ", ".join(f"http://{host}:{r_port} (its requests not routed go to {target})" for r_port, target in reverse)
        return (f"{said}, or set the client's base URL to a reverse listener: {ways} "
                f"(eval \"$(ccswitch env --reverse --port {reverse[0][0]})\")")
    return (f"{said}, or run a reverse listener (--mode reverse:https://api.anthropic.com@8082) and set the "
            f"client's base URL to http://{host}:8082")


class WrongListener:
    """Answer a request addressed to the regular listener itself, before mitmproxy's 502."""

    def __init__(self) -> None:
        self._told: set[int] = set()    # the log says it once per listener port, not per retry

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or answered_early(flow):
            return
        client = flow.client_conn
        if not isinstance(client.proxy_mode, mode_specs.RegularMode):
            return
        listen_host = client.proxy_mode.listen_host(ctx.options.listen_host or "")
        if not addressed_to_itself(flow.request.host, flow.request.port, client.sockname, listen_host):
            return
        reverse = reverse_listeners(ctx.options.mode, ctx.options.listen_port)
        page = wants_the_page(flow.request.method, flow.request.path, flow.request.headers.get("accept", ""))
        message = wrong_listener_message(flow.request.host, flow.request.port, reverse, page)
        if flow.request.port not in self._told:
            self._told.add(flow.request.port)
            log.warning("ccswitch: %s %s came to the regular listener as if it were %s: %s", flow.request.method,
                        flow.request.path.split("?", 1)[0], "a web server" if page else "a base URL", message)
        answer_error(flow, likely_protocol(flow.request), STATUS, message)
