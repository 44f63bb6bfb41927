"""A loopback webhook receiver for notification tests: records every POST (path, headers,
body) and answers with a chosen status — or never answers (`hang`), to show a stuck hook
delays nothing but its own notifications."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self, *, status: int = 200, hang: bool = False, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = dict(headers or {})      # sent with every answer (a 429's retry-after)
        self.hang = hang
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="webhook-receiver", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/hook/T0KEN-in-the-path") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()      # hanging handlers return
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.json() for r in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """At least `count` POSTs, waiting up to `timeout` seconds for them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self._lock:
            raise AssertionError(f"expected {count} webhook POST(s), got {len(self.received)}: "
                                 f"{[r.body[:200] for r in self.received]}")

    def _record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        receiver._record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if receiver.hang:
            receiver._stopping.wait()
            return
        answer = b'{"ok": true}'
        self.send_response(receiver.status)
        self.send_header("content-type", "application/json")
        for name, value in receiver.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
