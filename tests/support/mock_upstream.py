"""Scriptable loopback mock LLM upstream (standard library, plus brotli and zstd for `encoded`).

    with MockUpstream("A") as up:                 # binds 127.0.0.1:<random>
        up.script(status(529), ok())              # 1st call -> 529, 2nd -> OK, then up.default
        ... point a client or the proxy at up.base_url ...
        assert up.last().json["model"] == "m" and up.paths() == ["/v1/messages", ...]

Protocols, chosen by the request path suffix (any prefix such as /api or /openai/v1 works):
    POST .../v1/messages               Anthropic Messages
    POST .../v1/messages/count_tokens  -> {"input_tokens": N}
    POST .../responses                 OpenAI Responses
    POST .../chat/completions          OpenAI Chat Completions
    GET  .../responses + Upgrade: websocket
                                       the Responses WebSocket (see below)
Anything else (any method) -> 404 JSON; it is recorded but consumes no behaviour.
A request streams (chunked SSE, one flush per event) when its JSON body has
"stream": true (or, for a non-JSON body, when it Accepts text/event-stream).
Chat sends a final usage chunk when stream_options.include_usage is true.

Reply: text `up.text` (default "Hello from mock <name>", split into 4 deltas), or a
tool call when `up.tool = (name, args_dict)` (Anthropic tool_use block / Responses
function_call item / Chat tool_calls). Model = the request's "model". Usage numbers:
`up.usage` (see mock_payloads.DEFAULT_USAGE and its docstring for the OpenAI mapping).

Behaviours (`Behaviour` dataclass; build them with these factories):
    ok(text=None, tool=None, headers=None)
                                    normal reply, optionally overriding text / tool, with extra
                                    response headers (str values go out latin-1, as http.server does)
    status(code, body=None, headers=None, retry_after=None)
                                    HTTP error; default body = the protocol's error JSON
    hang_before_headers(seconds)    wait, then reply normally (stop() interrupts it)
    stall_after(n_events, seconds)  send n SSE events, go silent for `seconds`, then finish
                                    (n >= the number of events: silent before the body's end)
    error_event_after(n_events)     n events, then Anthropic `event: error` / Responses
                                    `response.failed` / Chat `{"error":..}`; body ends cleanly
    cut_after(n_events)             n events, then close the socket mid chunked body
    cut_mid_event(n_events)         n events, then the first half of the next one, then close
    huge_event(n_events, size)      n events, then event n with a `padding` member of `size` bytes
                                    (one line), then the rest as usual
    html_200()                      200 text/html page
    error_json_200()                200 application/json carrying the protocol's error JSON
    slow_stream(n_events, interval) n content deltas ("tok0 tok1 ..."), `interval` s apart
    encoded(encoding, text=None)    normal reply, its body compressed (gzip | deflate | br | zstd)
                                    whatever the request accepted; a stream is flushed per event
For non-streaming requests: stall_after waits between headers and body, cut_after
(and cut_mid_event) sends half the body then closes, huge_event replies normally, error_event_after answers 500 + error JSON,
slow_stream waits n*interval then answers.
`up.script(*bs)` queues behaviours, one per known-endpoint request; then `up.by_model[model]`,
then `up.default`. `up.record = False` keeps no request log (long benchmark or soak runs).
`up.peak_connections`: the most connections open at once.
`MockUpstream.closed_port()` gives a loopback port nobody listens on (refused tests).

Recorded (`up.requests`, thread-safe list): method, path (no query), query (dict),
headers (lower-cased dict), body (bytes), json (parsed or None), time, protocol
("anthropic" | "count_tokens" | "responses" | "chat" | None), socket. Helpers: last(),
clear(), paths(), frames().

The Responses WebSocket (wsproto, server side, in the handler's thread; permessage-deflate when
offered, pings answered): the upgrade is recorded as a GET with `socket` = the connection's number
on this mock (1, 2, ...), each client frame as method "WS" with the same `socket`, its headers,
json and protocol "responses" (`up.frames()` lists the response.create ones).  Each
`response.create` takes the next behaviour and is answered with the events the SSE stream would
carry, one text frame each.  Like the real API it remembers only the last response completed on
that connection: a `previous_response_id` naming anything else gets an in-band
`{"type": "error", "status": 400, "error": {"code": "previous_response_not_found", ...}}`.
Behaviours over the socket: status(code) -> an in-band error frame with that status (before any
event); hang_before_headers(s) waits first; stall_after / slow_stream / error_event_after as in a
stream; cut_after(n) and cut_mid_event(n) close the TCP connection after n events (0: at once);
others answer normally.  `up.refuse_websocket = 503` answers upgrades with that status instead.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import brotli
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

try:
    from compression import zstd  # Python 3.14+
except ImportError:
    from backports import zstd

try:
    from . import mock_payloads as P
except ImportError:  # imported as a top-level module (tests dir on sys.path)
    from tests.support import mock_payloads as P


@dataclass(frozen=True)
class Behaviour:
    kind: str = "ok"
    code: int = 200
    body: Any = None
    headers: dict | None = None
    seconds: float = 0.0
    n_events: int = 0
    interval: float = 0.0
    size: int = 0
    text: str | None = None
    tool: tuple[str, dict] | None = None
    encoding: str | None = None     # content-encoding of the reply's body
    sealed: str | None = None       # a Responses answer's reasoning item, sealed so
    beat: bytes = b""               # what a `heartbeats` stream sends after its events


def ok(text: str | None = None, tool: tuple[str, dict] | None = None, headers: dict | None = None,
       sealed: str | None = None) -> Behaviour:
    return Behaviour("ok", text=text, tool=tool, headers=headers, sealed=sealed)


def status(code: int, body: Any = None, headers: dict | None = None, retry_after: float | None = None) -> Behaviour:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return Behaviour("status", code=code, body=body, headers=headers)


def hang_before_headers(seconds: float) -> Behaviour:
    return Behaviour("hang", seconds=seconds)


def stall_after(n_events: int, seconds: float) -> Behaviour:
    return Behaviour("stall", n_events=n_events, seconds=seconds)


def heartbeats_after(n_events: int, seconds: float, interval: float, beat: bytes = b": keepalive\n\n") -> Behaviour:
    """`n_events` of the answer, then only `beat` (a comment, a `ping` event, a line end) every
    `interval` for `seconds`, then the connection dropped."""
    return Behaviour("heartbeats", n_events=n_events, seconds=seconds, interval=interval, beat=beat)


def error_event_after(n_events: int) -> Behaviour:
    return Behaviour("error_event", n_events=n_events)


def cut_after(n_events: int) -> Behaviour:
    return Behaviour("cut", n_events=n_events)


def cut_mid_event(n_events: int) -> Behaviour:
    return Behaviour("cut_mid_event", n_events=n_events)


def huge_event(n_events: int, size: int) -> Behaviour:
    return Behaviour("huge_event", n_events=n_events, size=size)


def unnamed_events() -> Behaviour:
    """A stream without `event:` lines, as some relays send it (the JSON's `type` says each)."""
    return Behaviour("unnamed")


def html_200() -> Behaviour:
    return Behaviour("html")


def error_json_200() -> Behaviour:
    return Behaviour("error_json_200")


def slow_stream(n_events: int, interval: float) -> Behaviour:
    return Behaviour("slow", n_events=n_events, interval=interval)


def encoded(encoding: str, text: str | None = None) -> Behaviour:
    return Behaviour("ok", text=text, encoding=encoding)


class StreamPacker:
    """Compresses a body as a server does: `part` flushes after each piece (an SSE event),
    `end` finishes the stream."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "br":
            self._c = brotli.Compressor(quality=5)
        elif encoding == "zstd":
            self._c = zstd.ZstdCompressor()
        elif encoding in ("gzip", "deflate"):
            self._c = zlib.compressobj(wbits=zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
        else:
            raise ValueError(f"no packer for {encoding!r}")

    def part(self, data: bytes) -> bytes:
        if self.encoding == "br":
            return self._c.process(data) + self._c.flush()
        if self.encoding == "zstd":
            return self._c.compress(data, zstd.ZstdCompressor.FLUSH_BLOCK)
        return self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        if self.encoding == "br":
            return self._c.finish()
        if self.encoding == "zstd":
            return self._c.flush(zstd.ZstdCompressor.FLUSH_FRAME)
        return self._c.flush()

    def whole(self, data: bytes) -> bytes:
        return self.part(data) + self.end()


HTML_PAGE = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    time: float = field(default_factory=time.time)
    protocol: str | None = None
    socket: int | None = None       # the WebSocket connection's number on the mock (None: HTTP)


def _protocol(method: str, path: str) -> str | None:
    if method != "POST":
        return None
    path = path.rstrip("/")
    for suffix, proto in (("/v1/messages/count_tokens", "count_tokens"), ("/v1/messages", "anthropic"),
                          ("/responses", "responses"), ("/chat/completions", "chat")):
        if path.endswith(suffix):
            return proto
    return None


class MockUpstream:
    def __init__(self, name: str = "mock", *, text: str | None = None,
                 tool: tuple[str, dict] | None = None, usage: dict | None = None):
        self.name, self.text, self.tool = name, text, tool
        self.usage = {**P.DEFAULT_USAGE, **(usage or {})}
        self.default: Behaviour = ok()
        self.by_model: dict[str, Behaviour] = {}   # behaviour per request model, after the script
        self.record = True                          # False: keep no request log (benchmarks, soak)
        self.refuse_websocket: int | None = None    # answer WebSocket upgrades with this status
        # as the Responses API over HTTPS: a `previous_response_id` this mock did not issue is a 400
        # `previous_response_not_found` (off: any id is taken)
        self.stores_responses = False
        self.issued: set[str] = set()
        self.websockets = 0                         # WebSocket connections accepted so far
        self.upgrades_refused = 0                   # and refused (`refuse_websocket`)
        self.requests: list[Recorded] = []
        self._queue: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(self)
        self.port: int = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> MockUpstream:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                            name=f"mock-upstream-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=2)
        self._server.server_close()
        with self._lock:
            conns = list(self._server.conns)
        for conn in conns:  # wake handlers blocked on keep-alive reads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # scripting and recording
    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted so far (keep-alive shows as fewer than requests)."""
        return self._server.accepted

    @property
    def peak_connections(self) -> int:
        """The most TCP connections that were open at the same time."""
        return self._server.peak

    def script(self, *behaviours: Behaviour) -> MockUpstream:
        with self._lock:
            self._queue.extend(behaviours)
        return self

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def last(self) -> Recorded:
        with self._lock:
            return self.requests[-1]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self._queue.clear()

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def frames(self) -> list[Recorded]:
        """The response.create frames received over WebSockets, in order."""
        with self._lock:
            return [r for r in self.requests if r.method == "WS" and isinstance(r.json, dict)
                    and r.json.get("type") == "response.create"]

    def _record(self, rec: Recorded) -> None:
        if not self.record:
            return
        with self._lock:
            self.requests.append(rec)

    def _next(self, model: Any = None) -> Behaviour:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            return self.by_model.get(model, self.default) if isinstance(model, str) else self.default

    def _reply(self, js: Any, beh: Behaviour) -> P.Reply:
        model = js.get("model") if isinstance(js, dict) else None
        if beh.kind == "slow":
            deltas = [f"tok{i} " for i in range(beh.n_events)]
        else:
            text = beh.text if beh.text is not None else self.text
            deltas = P.split(f"Hello from mock {self.name}" if text is None else text)
        usage = dict(self.usage)
        if usage.get("output_tokens") is None:
            usage["output_tokens"] = max(1, len("".join(deltas).split()))
        return P.Reply(model=model or "mock-model", deltas=deltas, tool=beh.tool or self.tool, sealed=beh.sealed,
                       **usage)

    @staticmethod
    def closed_port() -> int:
        """A loopback port with nothing listening (connections are refused)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024   # the default backlog of 5 refuses bursts of concurrent connects
    daemon_threads = True

    def __init__(self, mock: MockUpstream):
        self.mock = mock
        self.conns: set[socket.socket] = set()
        self.accepted = 0
        self.peak = 0            # the most connections open at once
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self):
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.mock._lock:
            self.conns.add(sock)
            self.accepted += 1
            self.peak = max(self.peak, len(self.conns))
        return sock, addr

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # peers resetting connections is routine here
            super().handle_error(request, client_address)

    def shutdown_request(self, request):
        with self.mock._lock:
            self.conns.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-upstream/1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def __getattr__(self, name: str):  # do_GET, do_POST, do_HEAD, ... all go to _handle
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    # ------------------------------------------------------------ plumbing
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            out = b""
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)):
                out += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return out
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _head(self, code: int, ctype: str, length: int | None = None, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("request-id" if self._proto in ("anthropic", "count_tokens") else "x-request-id",
                         P._id("req_"))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if length is None:
            self.send_header("transfer-encoding", "chunked")
            self.send_header("cache-control", "no-cache")
        else:
            self.send_header("content-length", str(length))
        self.end_headers()

    def _send(self, code: int, body: Any, ctype: str = "application/json", extra: dict | None = None) -> None:
        if not isinstance(body, bytes):
            body = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self._head(code, ctype, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _abort(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _wait(self, seconds: float) -> bool:
        """Sleep; True if the mock is stopping (the caller should abort)."""
        return self.server.mock._stopping.wait(seconds)

    # ------------------------------------------------------------ dispatch
    def _handle(self) -> None:
        mock = self.server.mock
        url = urlsplit(self.path)
        if self.command == "GET" and self.headers.get("upgrade", "").lower() == "websocket" \
                and url.path.rstrip("/").endswith("/responses"):
            try:
                return _WebSocket(self, url).serve()
            except OSError:  # client went away
                self.close_connection = True
                return
        body = self._read_body()
        try:
            js = json.loads(body) if body else None
        except ValueError:
            js = None
        self._proto = proto = _protocol(self.command, url.path)
        mock._record(Recorded(self.command, url.path, dict(parse_qsl(url.query, keep_blank_values=True)),
                              {k.lower(): v for k, v in self.headers.items()}, body, js, time.time(), proto))
        try:
            if proto is None:
                return self._send(404, {"error": {"type": "not_found_error", "message": f"Not found: {url.path}"}})
            self._respond(mock, proto, js, mock._next(js.get("model") if isinstance(js, dict) else None))
        except OSError:  # client went away
            self.close_connection = True

    def _respond(self, mock: MockUpstream, proto: str, js: Any, beh: Behaviour) -> None:
        if beh.kind == "hang" and self._wait(beh.seconds):
            return self._abort()
        if beh.kind == "status":
            body = P.error_body(proto, beh.code) if beh.body is None else beh.body
            extra = dict(beh.headers or {})    # a content-type among them is the one sent
            ctype = extra.pop("content-type", None) or (
                "application/json" if isinstance(body, (dict, list)) else "text/plain")
            return self._send(beh.code, body, ctype, extra)
        if beh.kind == "html":
            return self._send(200, HTML_PAGE, "text/html; charset=utf-8")
        if beh.kind == "error_json_200":
            return self._send(200, P.error_body(proto, 500 if proto in ("responses", "chat") else 529))
        stored = mock.stores_responses and proto == "responses" and isinstance(js, dict)
        if stored and js.get("previous_response_id") not in (None, *mock.issued):
            return self._send(400, {"error": {
                "message": f"Previous response with id '{js['previous_response_id']}' not found.",
                "type": "invalid_request_error", "param": "previous_response_id",
                "code": "previous_response_not_found"}})
        reply = mock._reply(js, beh)
        if stored:
            mock.issued.add("resp_" + reply.msg_id[4:])
        if isinstance(js, dict):
            stream = bool(js.get("stream"))
        else:
            stream = "text/event-stream" in self.headers.get("accept", "")
        if proto == "count_tokens" or not stream:
            return self._respond_json(proto, reply, beh)
        if proto == "anthropic":
            events = P.anthropic_events(reply)
        elif proto == "responses":
            events = P.responses_events(reply)
        else:
            opts = js.get("stream_options") if isinstance(js, dict) else None
            events = P.chat_events(reply, bool(isinstance(opts, dict) and opts.get("include_usage")))
        self._stream(proto, reply, beh, events)

    def _respond_json(self, proto: str, reply: P.Reply, beh: Behaviour) -> None:
        if beh.kind == "error_event":
            return self._send(500, P.error_body(proto, 500))
        if beh.kind == "slow" and self._wait(beh.n_events * beh.interval):
            return self._abort()
        payload = {"anthropic": P.anthropic_message, "responses": P.responses_object,
                   "chat": P.chat_completion}.get(proto, lambda r: {"input_tokens": r.input_tokens})(reply)
        data = json.dumps(payload).encode()
        if beh.encoding:
            return self._send(200, StreamPacker(beh.encoding).whole(data),
                              extra={"content-encoding": beh.encoding})
        if beh.kind not in ("stall", "cut", "cut_mid_event"):
            return self._send(200, data, extra=beh.headers)
        self._head(200, "application/json", len(data))
        if beh.kind in ("cut", "cut_mid_event"):
            self.wfile.write(data[: len(data) // 2])
            return self._abort()
        if self._wait(beh.seconds):
            return self._abort()
        self.wfile.write(data)

    def _stream(self, proto: str, reply: P.Reply, beh: Behaviour, events: list[P.Event]) -> None:
        if beh.encoding:
            return self._stream_encoded(events, StreamPacker(beh.encoding))
        extra = dict(beh.headers or {})    # a content-type among them is the one sent
        self._head(200, extra.pop("content-type", None) or "text/event-stream; charset=utf-8", extra=extra)
        for i, event in enumerate(events):
            if i == beh.n_events:
                if beh.kind == "cut":
                    return self._abort()
                if beh.kind == "cut_mid_event":
                    data = P.sse(event)
                    self._chunk(data[: len(data) // 2])
                    return self._abort()
                if beh.kind == "huge_event" and isinstance(event[1], dict):
                    event = (event[0], dict(event[1], padding="x" * beh.size))
                if beh.kind == "error_event":
                    self._chunk(P.sse(P.error_event(proto, reply, i)))
                    break
                if beh.kind == "stall" and self._wait(beh.seconds):
                    return self._abort()
                if beh.kind == "heartbeats":
                    for _ in range(max(1, int(beh.seconds / beh.interval))):
                        if self._wait(beh.interval):
                            break
                        try:
                            self._chunk(beh.beat)
                        except OSError:
                            break
                    return self._abort()
            if beh.kind == "slow" and P.is_delta(event) and self._wait(beh.interval):
                return self._abort()
            data = P.sse(event)
            self._chunk(re.sub(rb"(?m)^event:[^\n]*\n", b"", data) if beh.kind == "unnamed" else data)
        else:   # n_events >= the number of events: after the last one, before the body's end
            if beh.kind == "cut":
                return self._abort()
            if beh.kind == "stall" and beh.n_events >= len(events) and self._wait(beh.seconds):
                return self._abort()
        self.wfile.write(b"0\r\n\r\n")

    def _stream_encoded(self, events: list[P.Event], packer: StreamPacker) -> None:
        self._head(200, "text/event-stream; charset=utf-8", extra={"content-encoding": packer.encoding})
        for event in events:
            self._chunk(packer.part(P.sse(event)))
        if tail := packer.end():        # (an empty chunk would end the body early)
            self._chunk(tail)
        self.wfile.write(b"0\r\n\r\n")


class _Cut(Exception):
    """The behaviour ends the connection."""


class _WebSocket:
    """One Responses WebSocket connection, served in its handler's thread."""

    def __init__(self, handler: _Handler, url) -> None:
        self.handler, self.mock, self.path = handler, handler.server.mock, url.path
        self.headers = {k.lower(): v for k, v in handler.headers.items()}
        self.ws = WSConnection(ConnectionType.SERVER)
        self.issued: str | None = None      # the last response completed here: the one id it knows
        with self.mock._lock:
            self.mock.websockets += 1
            self.number = self.mock.websockets
        self.mock._record(Recorded("GET", url.path, dict(parse_qsl(url.query, keep_blank_values=True)),
                                   self.headers, b"", None, time.time(), None, self.number))

    def serve(self) -> None:
        handler = self.handler
        handler.close_connection = True
        head = handler.requestline + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in handler.headers.items())
        self.ws.receive_data((head + "\r\n").encode("latin-1"))
        request = next(e for e in self.ws.events() if isinstance(e, Request))
        if self.mock.refuse_websocket is not None:
            self.mock.upgrades_refused += 1
            body = json.dumps(P.error_body("responses", self.mock.refuse_websocket)).encode()
            self._write(self.ws.send(RejectConnection(
                status_code=self.mock.refuse_websocket, has_body=True,
                headers=[(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())])))
            return self._write(body)
        self._write(self.ws.send(AcceptConnection(extensions=[PerMessageDeflate()] if request.extensions else [])))
        parts: list[str] = []
        while True:
            data = handler.rfile.read1(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        text, parts = "".join(parts), []
                        try:
                            self._frame(text)
                        except _Cut:
                            return handler._abort()
                elif isinstance(event, Ping):
                    self._write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self.ws.state.name == "REMOTE_CLOSING":
                        self._write(self.ws.send(event.response()))
                    return
            if not data:
                return

    def _write(self, data: bytes) -> None:
        self.handler.wfile.write(data)
        self.handler.wfile.flush()

    def _send(self, payload: dict) -> None:
        self._write(self.ws.send(TextMessage(data=json.dumps(payload))))

    def _frame(self, text: str) -> None:
        try:
            js = json.loads(text)
        except ValueError:
            js = None
        self.mock._record(Recorded("WS", self.path, {}, self.headers, text.encode(), js, time.time(), "responses",
                                   self.number))
        if not isinstance(js, dict) or js.get("type") != "response.create":
            return
        previous, issued = js.get("previous_response_id"), self.issued
        self.issued = None              # until this one completes
        if previous is not None and previous != issued:
            return self._send({"type": "error", "status": 400, "error": {
                "type": "invalid_request_error", "code": "previous_response_not_found", "param": "previous_response_id",
                "message": f"Previous response with id '{previous}' not found."}})
        beh = self.mock._next(js.get("model"))
        if beh.kind == "hang" and self.handler._wait(beh.seconds):
            raise _Cut
        if beh.kind == "status":
            error = P.error_body("responses", beh.code) if beh.body is None else beh.body
            return self._send({"type": "error", "status": beh.code,
                               "error": error.get("error", error) if isinstance(error, dict) else {"message": str(error)}})
        reply = self.mock._reply(js, beh)
        events = P.responses_events(reply)
        for i, event in enumerate(events):
            if i == beh.n_events:
                if beh.kind in ("cut", "cut_mid_event"):
                    raise _Cut
                if beh.kind == "error_event":
                    return self._send(P.error_event("responses", reply, i)[1])
                if beh.kind == "stall" and self.handler._wait(beh.seconds):
                    raise _Cut
            if beh.kind == "slow" and P.is_delta(event) and self.handler._wait(beh.interval):
                raise _Cut
            self._send(event[1])
        if beh.kind in ("cut", "cut_mid_event"):
            raise _Cut
        self.issued = events[-1][1]["response"]["id"]
