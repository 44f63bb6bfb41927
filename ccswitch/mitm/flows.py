"""What ccswitch writes onto a mitmproxy flow itself: its own answers, in the API the client
speaks, credentials shown as `<redacted>` (in mitmweb and `mitmdump -w` files), the body held
back from the relay hop, the copy of a streamed answer and what became of a routed request, in
its comment after any note of the user's (how a flow ends unannounced: `flow_ends`)."""

from __future__ import annotations

import hashlib
import re
import time
from functools import lru_cache

from mitmproxy import connection, http
from mitmproxy.net.http import status_codes, url
from mitmproxy.utils.strutils import always_str

from ccswitch.config.models import Rules
from ccswitch.dial.job import CLIENT_CLOSED, KILLED, Job
from ccswitch.dial.render import upstream_url
from ccswitch.report.terminal import printable
from ccswitch.routing.classify import classify
from ccswitch.vocab import CLIENT_PROTOCOL, Protocol
from ccswitch.wire import protocols
from ccswitch.wire.exchange import encodable
from ccswitch.wire.headers import to_wire
from ccswitch.wire.redact import (
    CREDENTIAL_HEADERS,
    CREDENTIAL_PARAMS,
    REDACTED,
    holding,
    is_placeholder,
    target_without,
)

#: the mark of a flow that failed over
WARNING = ":warning:"
#: the host whose every path the proxy answers itself with the live page (as mitmproxy does `mitm.it`)
LIVE_HOST = "ccswitch"


def flows_are_kept(master, options) -> bool:
    """Does anyone look at a finished flow's body: mitmweb or the console (their flow list),
    a `-w` file, or mitmdump printing bodies (`flow_detail` 3 or more)?  mitmdump alone drops
    each flow once answered, so a copy of a streamed body would only cost memory and time."""
    return (master.addons.get("view") is not None or bool(getattr(options, "save_stream_file", None))
            or getattr(options, "flow_detail", 0) >= 3)


def error_response(protocol: str, status: int, message: str, extra: dict | None = None, *,
                   codex: bool = False) -> http.Response:
    headers, body = protocols.own_error(protocol, status, message, tuple((extra or {}).items()), codex=codex)
    return http.Response.make(status, body, http.Headers(to_wire(headers)))


#: the last word of each API's paths, to an unrouted path's API
_LAST_WORDS = {"messages": Protocol.ANTHROPIC, "count_tokens": Protocol.ANTHROPIC, "completions": Protocol.CHAT,
               "responses": Protocol.RESPONSES}


def likely_protocol(request: http.Request) -> Protocol:
    """The API a request most likely speaks: its path's route, else its path's last word (a base
    URL gone wrong keeps it), else Anthropic's marks, else OpenAI's."""
    match = classify("POST", request.path)
    if match is not None:
        return CLIENT_PROTOCOL[match.route]
    last = request.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if last in _LAST_WORDS:
        return _LAST_WORDS[last]
    if "anthropic-version" in request.headers or "anthropic" in request.pretty_host:
        return Protocol.ANTHROPIC
    return Protocol.CHAT


def fit_to_save(flow: http.HTTPFlow) -> None:
    """The text ccswitch put on the flow as UTF-8 can hold it: a client's model may carry a lone
    surrogate (JSON allows one), and mitmproxy's `-w` file would leave out a flow holding one."""
    flow.comment = encodable(flow.comment)
    if (said := flow.metadata.get(SAID)) is not None:    # as the comment holds it, to be found there again
        flow.metadata[SAID] = encodable(said)
    meta = flow.metadata.get("ccswitch")
    if meta:
        for name, value in meta.items():
            if isinstance(value, str):
                meta[name] = encodable(value)
            elif isinstance(value, list):
                meta[name] = [encodable(item) if isinstance(item, str) else item for item in value]


_OWN_WORD = re.compile(r"^ccswitch:", re.MULTILINE)


#: the flow's metadata key holding ccswitch's last word in its comment, to be told from a user's note
SAID = "ccswitch_said"


def comment_on(flow: http.HTTPFlow, text: str) -> None:
    """ccswitch's word on the flow in its comment, among the user's own notes (written in mitmweb
    above or below it, on a flow then replayed): each of ccswitch's words replaces the last, never a note."""
    above, below = users_notes(flow.comment, flow.metadata.get(SAID))
    flow.comment = "\n".join(part for part in (above, text, below) if part)
    if text:
        flow.metadata[SAID] = text
    else:
        flow.metadata.pop(SAID, None)


def users_notes(comment: str, said: str | None = None) -> tuple[str, str]:
    """(above, below): the parts of a comment that are not ccswitch's.  ccswitch's is the word it
    `said` last, where the comment still holds it; else (edited, or a flow saved by an older
    ccswitch) everything from its first `ccswitch:` line on."""
    if not comment:     # every flow's at first: no search
        return "", ""
    if said and (at := comment.rfind(said)) >= 0:
        end = at + len(said)
        if comment[at - 1:at] in ("", "\n") and comment[end:end + 1] in ("", "\n"):   # whole lines
            return comment[:at].rstrip("\n"), comment[end:].strip("\n")
    own = _OWN_WORD.search(comment)
    return (comment[: own.start()] if own else comment).rstrip("\n"), ""


def answer(flow: http.HTTPFlow, response: http.Response, why: str | None = None) -> None:
    """ccswitch answers the flow itself: nothing is sent on, and the comment says so, and why."""
    redact_credentials(flow.request)
    flow.response = response
    comment_on(flow, f"ccswitch: answered {response.status_code} itself" + (f": {why}" if why else ""))


def answer_error(flow: http.HTTPFlow, protocol: str, status: int, message: str, extra: dict | None = None) -> None:
    """An error answer in the client's API format, its message in the flow's comment too."""
    answer(flow, error_response(protocol, status, message, extra, codex=from_codex(flow.request)), message)


def from_codex(request: http.Request) -> bool:
    """Whether Codex sent it (two look-ups: `Headers.items()` reads every name's values anew,
    quadratic in a head of thousands of distinct names that a stranger may send)."""
    return protocols.is_codex(request.headers.get("originator"), request.headers.get("user-agent"))


def point_at(request: http.Request, target: str) -> None:
    """`request.url = target`, as mitmproxy's setter leaves it, with the parse of each upstream URL
    kept (every routed flow is shown pointed at its upstream, and the few URLs recur) and the
    Host header and authority rewritten once (by the port's setter) instead of twice."""
    scheme, host, port, path = _parsed_url(target)
    data = request.data
    data.scheme, data.host, data.path = scheme, host, path
    request.port = port


def to_own_server(flow: http.HTTPFlow, port: int) -> None:
    """Send the flow on to one of ccswitch's own loopback servers (the relay, the WebSocket
    bridge).  In mitmproxy's upstream mode the flow's server is reached through the mode's proxy,
    which would refuse a hop to this machine's loopback, or carry it, the client's request and its
    answer in plain HTTP: the flow gets a server of its own, reached directly (the connection's
    server, shared by the next requests on it, keeps its proxy)."""
    flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", port
    if flow.server_conn.via is not None:
        flow.server_conn = connection.Server(address=("127.0.0.1", port))


@lru_cache(maxsize=512)
def _parsed_url(target: str) -> tuple[bytes, str, int, bytes]:
    scheme, host, port, path = url.parse(target)
    return scheme, always_str(host, "idna", "strict"), port, path


_BODY_FRAMING = ("content-length", "transfer-encoding")
HeldBody = tuple[bytes | None, list[tuple[str, list[str]]]]   # the raw body and its framing headers


def drop_body(request: http.Request) -> None:
    """Take the body off a request bound for the relay, which never reads it (the job holds the
    client's request): Claude Code's bodies reach megabytes, and each would be sent and read
    again on loopback."""
    for name in _BODY_FRAMING:
        request.headers.pop(name, None)
    request.headers["content-length"] = "0"
    request.raw_content = b""


def hold_body(request: http.Request) -> HeldBody:
    """`drop_body`, returning what `restore_body` puts back."""
    held = (request.raw_content, [(name, request.headers.get_all(name)) for name in _BODY_FRAMING])
    drop_body(request)
    return held


def restore_body(request: http.Request, held: HeldBody) -> None:
    """The flow shows and saves the body the client sent, as before `hold_body`."""
    raw, framing = held
    request.raw_content = raw
    for name, values in framing:
        if values:
            request.headers.set_all(name, values)
        else:
            request.headers.pop(name, None)


def whole_response(status: int, headers: list[tuple[str, str]], body: bytes,
                   kind: type[http.Response] = http.Response) -> http.Response:
    """`http.Response.make(status, body, headers)` for headers without framing (as the dialer's
    buffered answers have), built at once: every non-streamed answer passes here, and `make`
    re-reads the headers to learn what is known already (about half of its cost)."""
    fields = to_wire(headers)
    if any(name.lower() in _FRAMING for name, _ in fields):
        return kind.make(status, body, http.Headers(fields))
    fields.append((b"content-length", str(len(body)).encode()))
    now = time.time()
    reason = status_codes.RESPONSES.get(status, "").encode()
    if type(status) is not int or type(body) is not bytes:   # mitmproxy's checks say what is wrong
        return kind(b"HTTP/1.1", status, reason, http.Headers(fields), body, None, now, now)
    return _response(kind, status, reason, http.Headers(fields), body, now)


def _response(kind: type[http.Response], status: int, reason: bytes, headers: http.Headers, body: bytes,
              now: float) -> http.Response:
    """`http.Response(b"HTTP/1.1", status, reason, headers, body, None, now, now)` without its data's
    check of each field's type (mitmproxy's `if __debug__` `__post_init__`: two thirds of building
    an answer, about 20 µs, on every non-streamed answer's way out): each is of its type here by
    construction (`Headers` checks its own fields; the caller, the status and body).  The fields
    go in the dataclass's order, as its `__init__` sets them (a saved flow lists them so)."""
    data = object.__new__(http.ResponseData)
    vars(data).update(http_version=b"HTTP/1.1", headers=headers, content=body, trailers=None,
                      timestamp_start=now, timestamp_end=now, status_code=status, reason=reason)
    response = object.__new__(kind)
    response.data = data
    return response


_FRAMING = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})
_CREDENTIALS = frozenset(name.encode() for name in CREDENTIAL_HEADERS)


def redact_credentials(request: http.Request) -> None:
    """No key on the flow (mitmweb, `mitmdump -w`, the console line): credential headers and
    key-carrying query parameters show as `<redacted>`."""
    _redact_headers(request.headers)
    if "?" in request.path:
        query = request.query
        for name in {name for name in query.keys() if name.strip().lower() in CREDENTIAL_PARAMS}:
            query[name] = REDACTED      # all its values, as one


def without_placeholders(request: http.Request) -> None:
    """The credential headers and key-carrying query parameters that show `<redacted>` left out:
    sent so, the placeholder would be taken for a key."""
    for name in {name for name, value in request.headers.items(multi=True)
                 if name.lower() in CREDENTIAL_HEADERS and is_placeholder(value)}:
        del request.headers[name]
    if "?" in request.path:
        query = request.query
        for name in {name for name, value in query.items(multi=True)
                     if name.strip().lower() in CREDENTIAL_PARAMS and value == REDACTED}:
            del query[name]


class Hidden:
    """A request's credentials as they came, while the flow shows them `<redacted>`: mitmweb is
    sent a flow at each hook pass, from `requestheaders` on.  `restore` puts back each one still
    shown so; one edited meanwhile (by the user in mitmweb, or by an addon) stays as edited."""

    __slots__ = ("own_fields", "own_path", "shown_fields", "shown_path")

    def __init__(self, request: http.Request) -> None:
        self.own_fields, self.own_path = request.headers.fields, request.path
        redact_credentials(request)
        self.shown_fields, self.shown_path = request.headers.fields, request.path

    @property
    def hid_anything(self) -> bool:
        return self.shown_fields is not self.own_fields or self.shown_path != self.own_path

    def restore(self, request: http.Request) -> None:
        headers = request.headers
        if headers.fields == self.shown_fields:      # untouched: every request but an edited one
            headers.fields = self.own_fields
        else:
            own, shown = http.Headers(self.own_fields), http.Headers(self.shown_fields)
            for name in CREDENTIAL_HEADERS:
                if headers.get_all(name) == shown.get_all(name) and (values := own.get_all(name)):
                    headers.set_all(name, values)
        if request.path == self.shown_path:
            request.path = self.own_path


def redact_proxy_login(flow: http.HTTPFlow) -> None:
    """mitmproxy's `--proxyauth` keeps the login a client gave on the flow, password and all, and
    `mitmdump -w` files and mitmweb would show it: the password shows as `<redacted>`."""
    login = flow.metadata.get("proxyauth")
    if isinstance(login, tuple | list) and len(login) == 2 and login[1] != REDACTED:
        flow.metadata["proxyauth"] = (login[0], REDACTED)


def redact_fields(headers: http.Headers, which: list[bool]) -> None:
    """The headers `which` marks (by position) as `<redacted>`."""
    headers.fields = tuple((name, REDACTED.encode() if hit else value)
                           for (name, value), hit in zip(headers.fields, which, strict=True))


def without_client_keys(flow: http.HTTPFlow, headers: list[tuple[str, str]], rules: Rules) -> list[tuple[str, str]]:
    """`headers` without those holding a client key's text, which the flow shows `<redacted>`
    (mitmweb, -w), as it does a key in its path."""
    keys = rules.client_key_texts()
    held = holding(headers, keys)
    if any(held):
        headers = [field for field, hit in zip(headers, held, strict=True) if not hit]
        redact_fields(flow.request.headers, held)
    if (path := target_without(flow.request.path, keys)) != flow.request.path:
        flow.request.path = path
    return headers


def _redact_headers(headers: http.Headers) -> None:
    """Each credential header once, as `<redacted>`, where its first value was (what
    `headers[name] = REDACTED` does), in one pass over the fields instead of one per name."""
    fields = headers.fields
    if not any(name.lower() in _CREDENTIALS for name, _ in fields):
        return
    redacted, seen = [], set()
    for name, value in fields:
        lowered = name.lower()
        if lowered in _CREDENTIALS:
            if lowered in seen:
                continue
            seen.add(lowered)
            value = REDACTED.encode()
        redacted.append((name, value))
    headers.fields = tuple(redacted)


class StreamCopy:
    """mitmproxy's stream callable: passes each chunk on untouched and keeps the first `limit`
    bytes, set on the flow at the end (a streamed flow otherwise shows "Content is missing")."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.total = 0

    def __call__(self, chunk: bytes) -> bytes:
        if len(self.kept) < self.limit:
            self.kept += chunk[: self.limit - len(self.kept)]
        self.total += len(chunk)
        return chunk

    def keep_on(self, response: http.Response) -> None:
        response.stream = False
        response.headers.pop("content-encoding", None)
        response.content = bytes(self.kept)
        if self.total > len(self.kept):
            response.headers["x-ccswitch-kept"] = f"first {len(self.kept)} of {self.total} bytes"


def show_streaming(flow: http.HTTPFlow, job: Job) -> None:
    """A routed stream while it runs (minutes, for Claude Code): the request has gone to the
    relay, so the flow can point at the upstream the stream comes from instead of the relay's
    loopback address, with the attempts so far in its comment."""
    _point_at_upstream(flow, job)
    comment_on(flow, job.comment())
    if job.failed_over:
        mark_for_a_look(flow)


def _point_at_upstream(flow: http.HTTPFlow, job: Job) -> None:
    """At the upstream that answered; with none (killed, all failed), at the client's own URL,
    not the relay's loopback address."""
    if job.upstream:
        point_at(flow.request, upstream_url(job.rules.upstream(job.upstream), job.request))
    elif (url := flow.metadata.get("ccswitch", {}).get("client_url")) is not None:
        flow.request.url = url
    else:
        return
    redact_credentials(flow.request)    # a `?key=` kept for `auth: client`


def attempts_line(job: Job) -> str | None:
    """For the log, a request that failed over or failed on its upstream: `claude-x failed over:
    a: 503 (12 ms) → b: 200 (900 ms)`, `claude-x failed: a: connect timeout (3001 ms)`; the model
    as the client named it (scrubbed of keys, control characters escaped).  None for one served
    by its first upstream, or whose client left."""
    verb = went_wrong(job)
    if verb is None:
        return None
    return f"{printable(job.rules.scrub(job.request.model))} {verb}: " + " → ".join(a.describe() for a in job.attempts)


def went_wrong(job: Job) -> str | None:
    """"failed over", "failed" (on its upstream: every attempt, or a stream broken after it began),
    or None: served by its first upstream, its client gone, or its own mistake passed back."""
    if job.failed_over:
        return "failed over"
    if job.attempts and job.error is not None and job.error not in (CLIENT_CLOSED, KILLED) \
            and not (job.status is not None and 400 <= job.status < 500 and job.status != 429):
        return "failed"     # the upstream's failure; a 4xx passed on is the client's own mistake
    return None


#: the flow's metadata key saying its ⚠ is ccswitch's (a replay takes only that one off)
MARKED = "ccswitch_marked"


def mark_for_a_look(flow: http.HTTPFlow) -> None:
    """⚠ in mitmweb's list, unless the flow carries a mark of the user's own."""
    if not flow.marked:
        flow.marked = WARNING
        flow.metadata[MARKED] = True


def unmark(flow: http.HTTPFlow) -> None:
    """ccswitch's ⚠ off (a replay's own attempts say whether it failed over); a user's stays."""
    if flow.metadata.pop(MARKED, False) and flow.marked == WARNING:
        flow.marked = ""


def show_outcome(flow: http.HTTPFlow, job: Job) -> None:
    """What became of a routed flow, for whoever inspects it: pointed at the upstream that
    answered, the attempts in its comment (marked when it failed over) and metadata, the body
    that upstream got in the request tab, and the kept copy of a streamed answer."""
    _point_at_upstream(flow, job)
    comment_on(flow, job.comment())
    if went_wrong(job):
        mark_for_a_look(flow)
    meta = flow.metadata["ccswitch"]
    meta.update(upstream=job.upstream, upstream_model=job.upstream_model and job.rules.scrub(job.upstream_model),
                attempts=[a.describe() for a in job.attempts], error=job.error, shown_url=flow.request.url)
    if job.sent_body is not None and job.sent_body != flow.request.raw_content:
        # the request tab shows what the upstream got; the client's own body stays in the metadata
        meta["client_body"] = flow.request.get_text(strict=False)
        meta["shown_body"] = body_digest(job.sent_body)
        if job.sent_protocol is not None and job.sent_protocol != job.request.client_protocol:
            meta["shown_protocol"] = job.sent_protocol     # converted: no edit of it is the client's request
        flow.request.headers.pop("content-encoding", None)
        flow.request.content = job.sent_body
    keep_copy(flow)


def keep_copy(flow: http.HTTPFlow) -> None:
    """A streamed answer's kept copy on the flow, for mitmweb and `-w`."""
    if isinstance(flow.response and flow.response.stream, StreamCopy):
        flow.response.stream.keep_on(flow.response)


def body_digest(body: bytes) -> str:
    """What a body is known by in a flow's metadata (`shown_body`): a replay tells an edit by it."""
    return hashlib.blake2b(body, digest_size=16).hexdigest()
