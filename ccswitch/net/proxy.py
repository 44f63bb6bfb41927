"""Outgoing proxies: an upstream reached through HTTP CONNECT, SOCKS5 or SOCKS5h.

`parse_proxy` turns the rules' `proxy:` text into a `Proxy` (None for `direct`); `open_through`
opens a tunnel (SOCKS with python-socks, HTTP CONNECT here: python-socks reads a CONNECT answer
with a single read, and one that comes in two TCP segments broke the tunnel) and runs TLS (for
https upstreams) and the HTTP client's protocol over it.  Plain-HTTP upstreams are tunnelled
too, never sent to an HTTP proxy as absolute-form requests: one code path, and the proxy sees
no request, headers or key.

A proxy's credentials are secrets: `Proxy` prints as `socks5://host:port`, and every message
raised here names the proxy that way, with anything the library said scrubbed of them.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import ssl
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from python_socks import ProxyConnectionError, ProxyType
from python_socks.async_.asyncio import Proxy as SocksClient

from ccswitch.net.addresses import is_loopback, refuse_unencoded_credentials, url_port

SCHEMES = ("http", "socks5", "socks5h")
DIRECT = "direct"
_SOCKS = {"socks5": ProxyType.SOCKS5, "socks5h": ProxyType.SOCKS5}     # HTTP CONNECT is _connect_tunnel's
_FORM = "must be direct or a URL like http://host:port, socks5://host:port or socks5h://user:pass@host:port"


_AUTH_FAILED = "authentication failed"


class ProxyError(Exception):
    """The proxy refused, failed its authentication or could not reach the upstream.
    The message names the proxy without credentials; `credentials`: the proxy refused the ones
    the rules give it (a 407, a SOCKS authentication failure), which no retry mends."""

    def __init__(self, message: str, *, credentials: bool = False) -> None:
        super().__init__(message)
        self.credentials = credentials


@dataclass(frozen=True, repr=False)
class Proxy:
    scheme: str                                     # http (CONNECT), socks5, socks5h
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def shown(self) -> str:
        """The proxy as it may be named anywhere: no credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def resolves_names(self) -> bool:
        """socks5h and HTTP CONNECT send the host name; socks5 sends an address resolved here."""
        return self.scheme != "socks5"

    def secrets(self, *, user: bool = True) -> list[str]:
        """Its login as text may show it: whole as HTTP Basic sends it (a proxy's refusal may
        quote its Proxy-Authorization), then each part; `user=False` leaves out the user name
        alone (a word like `developer` is no secret where a model's answer may hold it)."""
        basic = [self.basic_login] if self.scheme == "http" and self.username else []
        return basic + [s for s in (self.password, self.username if user else None) if s]

    @property
    def basic_login(self) -> str:
        """The login as HTTP Basic sends it (base64 of user:password)."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def __repr__(self) -> str:
        return f"Proxy({self.shown})"

    __str__ = __repr__


@dataclass(frozen=True)
class NamedProxy:
    """An outgoing proxy as another program's environment names it (`HTTPS_PROXY=…`)."""
    host: str
    port: int | None
    shown: str          # scheme://host:port, never its login
    suggestion: str     # how rules.yaml would name it (`upstream_proxy: …`)


def named_proxy(value: str) -> NamedProxy | None:
    """`HTTPS_PROXY`'s value, with a scheme or not, a login or not; None when it names no host or a
    kind of proxy ccswitch cannot use.  The suggestion is `http://` for an `https://` one (ccswitch
    reaches a proxy over plain HTTP CONNECT), `USER:${VAR}@` where it had a login, `PORT` where it
    named none."""
    value = value.strip()
    if not value or not value.isprintable():
        return None
    parts = urlsplit(value if "://" in value else "http://" + value)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    scheme = "http" if parts.scheme.lower() == "https" else parts.scheme.lower()
    if not host or scheme not in SCHEMES:
        return None
    where = f"[{host}]" if ":" in host else host
    shown = f"{parts.scheme.lower()}://{where}" + (f":{port}" if port else "")
    login = "USER:${VAR}@" if parts.username else ""
    return NamedProxy(host, port, shown, f"{scheme}://{login}{where}:{port if port else 'PORT'}")


def proxy_elsewhere(environ: Mapping[str, str], names: Iterable[str],
                    own_ports: Collection[int]) -> tuple[str, NamedProxy] | None:
    """The first of the variables `names` in `environ` that names a proxy ccswitch could use other
    than one of its own listeners (on loopback at one of `own_ports`): (the variable, the proxy)."""
    for name in names:
        proxy = named_proxy(environ.get(name, ""))
        if proxy is not None and not (is_loopback(proxy.host) and proxy.port in own_ports):
            return name, proxy
    return None


def parse_proxy(text: str) -> Proxy | None:
    """`direct` -> None; `scheme://[user[:pass]@]host:port` -> Proxy.  Raises ValueError with a
    message that never repeats the text (it may hold a password)."""
    if not isinstance(text, str):
        raise ValueError(_FORM)
    text = text.strip()
    if text.lower() == DIRECT:
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError(_FORM) from None
    scheme = parts.scheme.lower()
    if scheme == "https":
        raise ValueError("a TLS connection to the proxy itself (https://) is not supported; use http:// "
                         "(CONNECT tunnels the upstream's own TLS)")
    if scheme not in SCHEMES or not parts.hostname:
        raise ValueError(_FORM)
    refuse_unencoded_credentials(text, parts)
    port = url_port(parts)
    if port is None:
        raise ValueError("must name the proxy's port, like socks5://127.0.0.1:1080")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must not have a path, query or fragment: only scheme://[user:pass@]host:port")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password and not username:
        raise ValueError("has a password without a user name")
    for value in (username, password):
        if value is not None and (not value.isascii() or not value.isprintable() or len(value) > 255):
            raise ValueError("user name and password must be printable ASCII of at most 255 characters "
                             "(written in the file itself, percent-encode % @ : / ? # as %25 %40 %3A %2F %3F %23)")
    if username and ":" in username:
        raise ValueError("the user name must not contain ':'")
    if username and scheme != "http" and not password:
        raise ValueError("SOCKS5 authentication needs both a user name and a password")
    if username and password is None:
        password = ""                   # HTTP basic auth with an empty password
    return Proxy(scheme, parts.hostname, port, username, password)


_SHORT = 4   # a user name `u` replaced inside "Proxy Authentication Required" garbles it


def scrub(text: str, proxy: Proxy) -> str:
    """The proxy's login out of `text`; a short part of it only where it stands as a word."""
    for secret in proxy.secrets():
        if len(secret) >= _SHORT:
            text = text.replace(secret, "***")
        elif secret:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


async def open_through(proxy: Proxy, protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int,
                       context: ssl.SSLContext | None, timeout: float,
                       tunnel_open: Callable[[], None] | None = None) -> tuple[asyncio.BaseTransport,
                                                                               asyncio.Protocol]:
    """A tunnel through `proxy` to host:port, with TLS over it when `context` is given.
    The caller bounds the whole call; `timeout` bounds the proxy's part as well.  `tunnel_open`
    is called once the proxy has opened the tunnel (a timeout after it is not the proxy's silence)."""
    try:
        if proxy.scheme == "http":
            async with asyncio.timeout(timeout):
                sock = await _connect_tunnel(proxy, host, port)
        else:
            client = SocksClient(_SOCKS[proxy.scheme], proxy.host, proxy.port, username=proxy.username,
                                 password=proxy.password, rdns=proxy.resolves_names)
            sock = await client.connect(dest_host=host, dest_port=port, timeout=timeout)
    except (TimeoutError, ProxyError):
        raise
    except Exception as exc:   # python-socks' errors, a reset mid-handshake, a name it could not resolve
        raise ProxyError(f"proxy {proxy.shown}: {_what(exc, proxy)}", credentials=_refused_credentials(exc)) from None
    if tunnel_open is not None:
        tunnel_open()
    try:
        return await asyncio.get_running_loop().create_connection(
            protocol_factory, sock=sock, ssl=context, server_hostname=host if context else None)
    except BaseException:
        sock.close()
        raise


_MAX_CONNECT_ANSWER = 16 * 1024
_HEAD_END = re.compile(rb"\r?\n\r?\n")    # a bare LF ends a line too (RFC 9112 §2.2), as some proxies write


async def _connect_tunnel(proxy: Proxy, host: str, port: int) -> socket.socket:
    """A socket through an HTTP proxy's CONNECT to host:port, its answer read to its blank line."""
    loop = asyncio.get_running_loop()
    sock = await _socket_to(proxy)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        login = f"Proxy-Authorization: Basic {proxy.basic_login}\r\n" if proxy.username else ""
        await loop.sock_sendall(sock, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{login}\r\n".encode())
        answer = b""
        while (end := _HEAD_END.search(answer)) is None:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ProxyError(f"proxy {proxy.shown}: closed the connection before answering CONNECT")
            answer += chunk
            if len(answer) > _MAX_CONNECT_ANSWER:
                raise ProxyError(f"proxy {proxy.shown}: its answer to CONNECT has no end")
        head, beyond = answer[:end.start()], answer[end.end():]
        status_line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ProxyError(f"proxy {proxy.shown}: not an HTTP answer to CONNECT "
                             f"({scrub(status_line[:100], proxy)!r})")
        if parts[1] != "200":
            text = scrub(" ".join(parts[1:]), proxy)
            why = f"{_AUTH_FAILED} ({text}){_unspoken_schemes(head)}" if parts[1] == "407" else text
            raise ProxyError(f"proxy {proxy.shown}: {why}", credentials=parts[1] == "407")
        if beyond:    # the tunnel's first bytes are the client's to send (TLS, HTTP): nothing can come first
            raise ProxyError(f"proxy {proxy.shown}: sent data past its answer to CONNECT")
        return sock
    except BaseException:
        sock.close()
        raise


def _unspoken_schemes(head: bytes) -> str:
    """What to add to a 407 whose proxy offers no Basic login (a company's NTLM or Negotiate):
    no password mends that."""
    schemes = []
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep and name.strip().lower() == "proxy-authenticate":
            # one header may list several challenges: `Negotiate, Basic realm="corp"`; a part
            # holding `=` first is a parameter of the one before
            schemes += [part.split()[0][:20] for part in value.split(",")
                        if part.strip() and "=" not in part.split()[0]]
    if not schemes or any(scheme.lower() == "basic" for scheme in schemes):
        return ""
    return f": it asks for {', '.join(dict.fromkeys(schemes))}, and ccswitch logs in to a proxy with Basic only"


async def _socket_to(proxy: Proxy) -> socket.socket:
    """A connected non-blocking socket to the proxy, each of its addresses tried in turn."""
    loop = asyncio.get_running_loop()
    try:
        addresses = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProxyError(f"proxy {proxy.shown}: cannot connect to the proxy ({exc.strerror})") from None
    failure: OSError | None = None
    for family, kind, protocol, _, address in addresses:
        sock = socket.socket(family, kind, protocol)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    why = os.strerror(failure.errno) if failure is not None and failure.errno else str(failure)
    raise ProxyError(f"proxy {proxy.shown}: cannot connect to the proxy ({why})")


def _what(exc: Exception, proxy: Proxy) -> str:
    """What went wrong, in the library's words (without the credentials it was given)."""
    if isinstance(exc, ProxyConnectionError):
        cause = exc.__cause__
        if isinstance(cause, socket.gaierror):
            why = cause.strerror
        elif isinstance(cause, OSError) and cause.errno:
            why = os.strerror(cause.errno)      # not asyncio's "Connect call failed (addr)"
        else:
            why = str(cause or exc)
        return f"cannot connect to the proxy ({why})"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the upstream's name here ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno:     # a reset or a broken pipe mid-handshake: its words alone
        return f"the connection to the proxy failed ({os.strerror(exc.errno)})"
    text = scrub(str(exc) or type(exc).__name__, proxy)
    return f"{_AUTH_FAILED} ({text})" if _refused_credentials(exc) else text


def _refused_credentials(exc: Exception) -> bool:
    """python-socks' word that the proxy refused the user name and password (a SOCKS failure, an
    HTTP proxy's 407), or wants a login where the rules give none (no SOCKS method acceptable)."""
    text = str(exc).lower()
    return getattr(exc, "error_code", None) == 407 or "authentication failure" in text \
        or "no acceptable authentication methods" in text
