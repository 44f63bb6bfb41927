"""Loopback outgoing proxies for tests: HTTP CONNECT and SOCKS5 (standard library, threads).

    with Socks5Proxy(auth=("user", "pw")) as proxy:     # binds 127.0.0.1:<random>
        ... an upstream with proxy: proxy.url("user", "pw") ...
        assert proxy.tunnels == 1 and proxy.credentials == [("user", "pw")]
        assert proxy.targets == [("relay.test", 443)]  # as the client named it (socks5h: the name)

Each counts the TCP connections it accepted, the tunnels it carried to a target (and the most
open at once), records the credentials it was offered and the targets it was asked for, and
says why it refused (`refusals`).  With `auth`, other credentials are refused (407 / SOCKS5
auth failure).  `aliases` maps host names only the proxy knows to addresses; `localhost` is
127.0.0.1.  A target that refuses is answered 502 (CONNECT) or "connection refused" (SOCKS5).
"""

from __future__ import annotations

import base64
import select
import socket
import struct
import threading
import time
from typing import Any


class _TunnelProxy:
    scheme = ""

    def __init__(self, *, auth: tuple[str, str] | None = None, aliases: dict[str, str] | None = None) -> None:
        self.auth = auth
        self.aliases = {"localhost": "127.0.0.1", **(aliases or {})}
        self.accepted = 0
        self.tunnels = 0
        self.open_tunnels = 0
        self.peak_tunnels = 0
        self.credentials: list[tuple[str, str]] = []
        self.targets: list[tuple[str, int]] = []
        self.refusals: list[str] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port: int = self._listener.getsockname()[1]
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def url(self, user: str | None = None, password: str | None = None, scheme: str | None = None) -> str:
        userinfo = f"{user}:{password}@" if user is not None else ""
        return f"{scheme or self.scheme}://{userinfo}127.0.0.1:{self.port}"

    def start(self) -> Any:
        self._thread = threading.Thread(target=self._accept, name=f"{self.scheme}-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ inside

    def _accept(self) -> None:
        self._listener.settimeout(0.05)       # so that stop() is seen at once
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._sockets.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        target = None
        try:
            target = self._handshake(client)
            if target is not None:
                self._relay(client, target)
        except (OSError, ValueError, struct.error):
            pass
        finally:
            for sock in (client, target):
                if sock is not None:
                    with self._lock:
                        self._sockets.discard(sock)
                    sock.close()

    def _handshake(self, client: socket.socket) -> socket.socket | None:
        raise NotImplementedError

    def _refuse(self, why: str) -> None:
        with self._lock:
            self.refusals.append(why)

    def _allowed(self, user: str | None, password: str | None) -> bool:
        if user is not None:
            with self._lock:
                self.credentials.append((user, password or ""))
        return self.auth is None or (user, password) == self.auth

    def _dial(self, host: str, port: int) -> socket.socket | None:
        with self._lock:
            self.targets.append((host, port))
        try:
            target = socket.create_connection((self.aliases.get(host, host), port), timeout=5)
        except OSError:
            self._refuse(f"target {host}:{port} unreachable")
            return None
        target.settimeout(None)
        with self._lock:
            self._sockets.add(target)
        return target

    def _relay(self, client: socket.socket, target: socket.socket) -> None:
        with self._lock:
            self.tunnels += 1
            self.open_tunnels += 1
            self.peak_tunnels = max(self.peak_tunnels, self.open_tunnels)
        try:
            peers = {client: target, target: client}
            while True:
                readable, _, _ = select.select(list(peers), [], [], 0.5)
                if self._stopping.is_set():
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        finally:
            with self._lock:
                self.open_tunnels -= 1


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed mid-handshake")
        data += chunk
    return data


class ConnectProxy(_TunnelProxy):
    """HTTP CONNECT with optional basic auth (407 with Proxy-Authenticate otherwise: `schemes`); with
    `split`, its 200 comes in two TCP segments (the blank line a moment after the status line);
    with `bare_lf`, its lines end with LF alone."""
    scheme = "http"

    def __init__(self, *, split: bool = False, bare_lf: bool = False, schemes: tuple[str, ...] = ("Basic realm=\"test\"",),
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.split, self.bare_lf, self.schemes = split, bare_lf, schemes

    def _handshake(self, client: socket.socket) -> socket.socket | None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return None
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, authority, _ = lines[0].split(" ", 2)
        if method != "CONNECT":
            self._refuse(f"method {method}")
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            return None
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        user = password = None
        scheme, _, encoded = headers.get("proxy-authorization", "").partition(" ")
        if scheme.lower() == "basic":
            user, _, password = base64.b64decode(encoded).decode("latin-1").partition(":")
        if not self._allowed(user, password):
            self._refuse("credentials")
            offered = "".join(f"proxy-authenticate: {scheme}\r\n" for scheme in self.schemes).encode()
            client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n" + offered + b"content-length: 0\r\n\r\n")
            return None
        host, _, port = authority.rpartition(":")
        target = self._dial(host.strip("[]"), int(port))
        if target is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            return None
        if self.bare_lf:
            client.sendall(b"HTTP/1.1 200 Connection established\nProxy-agent: lf\n\n")
        elif self.split:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n")
            time.sleep(0.05)
            client.sendall(b"\r\n")
        else:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        return target


class Socks5Proxy(_TunnelProxy):
    """SOCKS5 CONNECT: no authentication, or user/password (RFC 1929) when `auth` is set."""
    scheme = "socks5"

    def _handshake(self, client: socket.socket) -> socket.socket | None:
        version, count = _read_exactly(client, 2)
        methods = _read_exactly(client, count)
        if version != 5:
            self._refuse("not SOCKS5")
            return None
        if self.auth is None and 0 in methods:
            client.sendall(b"\x05\x00")
        elif 2 in methods:
            client.sendall(b"\x05\x02")
            _, user_length = _read_exactly(client, 2)
            user = _read_exactly(client, user_length).decode()
            password = _read_exactly(client, _read_exactly(client, 1)[0]).decode()
            if not self._allowed(user, password):
                self._refuse("credentials")
                client.sendall(b"\x01\x01")
                return None
            client.sendall(b"\x01\x00")
        else:
            self._refuse("no acceptable authentication method")
            client.sendall(b"\x05\xff")
            return None
        _, command, _, address_type = _read_exactly(client, 4)
        if address_type == 1:
            host = socket.inet_ntoa(_read_exactly(client, 4))
        elif address_type == 3:
            host = _read_exactly(client, _read_exactly(client, 1)[0]).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, _read_exactly(client, 16))
        (port,) = struct.unpack("!H", _read_exactly(client, 2))
        if command != 1:
            client.sendall(b"\x05\x07\x00\x01" + bytes(6))
            return None
        target = self._dial(host, port)
        if target is None:
            client.sendall(b"\x05\x05\x00\x01" + bytes(6))
            return None
        client.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", port))
        return target
