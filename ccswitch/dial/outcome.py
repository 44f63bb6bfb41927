"""What one upstream attempt produced, and the small pure judgements about it
(headers to pass on, how long to wait before a retry, how long to cool down)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from ccswitch.clock import utc_now
from ccswitch.net import http1
from ccswitch.net.ws_client import HandshakeRefused
from ccswitch.routing.rate_limits import retry_after
from ccswitch.vocab import Action
from ccswitch.wire import protocols
from ccswitch.wire.exchange import Reply
from ccswitch.wire.headers import OWN_PREFIX, named_by_connection

_DROP_RESPONSE_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length",
    "content-encoding", "trailer", "upgrade", "te",
    # the upstream's other ways to itself (HTTP/3 on its port): not the client's ways to what it
    # addressed, which may be another host (a route's failover) or ccswitch's own listener
    "alt-svc",
})
MAX_RETRY_AFTER = 30.0


@dataclass(slots=True)
class Failure:
    """An attempt that did not serve the client; `action` says what to do next."""
    upstream: str
    status: int | None
    reason: str
    action: str                      # switch | retry
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    counts: bool = True              # counts against the upstream's health
    translated: bool = False
    client_status: int | None = None  # what the client gets if this is the last word
    stands_for: int | None = None     # the status an in-stream error stands for (under a 200)
    lasting: bool = False             # a client's retry gets the same (its own answer says not to retry)

    @property
    def rate_limited(self) -> bool:
        return 429 in (self.status, self.stands_for)

    def as_reply(self, client_protocol: str, before: str = "") -> Reply:
        """The client's answer when this is the last word; `before`: what the route's earlier
        attempts got, named in ccswitch's own answer (the last upstream's words alone read as
        if it were the only one)."""
        if self.status is None or self.client_status is not None:
            status = self.client_status or 502
            message = f"upstream {self.upstream}: {self.reason}" + (f" (before it: {before})" if before else "")
            headers, body = protocols.own_error(client_protocol, status, message,
                                                (("x-should-retry", "false"),) if self.lasting else ())
            return Reply(self.upstream, status, headers, body, translated=True, reason=self.reason)
        return Reply(self.upstream, self.status, self.headers, self.body, self.translated, self.reason)


@dataclass(slots=True)
class Streamed:
    """The attempt was committed and streamed to the client; `ok` if it ended properly,
    None if it ended with an error the rules `pass` (neither a failure nor a success)."""
    upstream: str
    ok: bool | None
    reason: str | None = None
    rate_limited: bool = False       # it ended with a rate-limit error event
    # the head's rate-limit headers: what says when a rate-limited upstream serves again
    limit_headers: list[tuple[str, str]] = field(default_factory=list)


#: the TLS failures the rules or the relay must mend first: a refused certificate, an https://
#: base_url for a plain-HTTP port
_CERTIFICATE_REFUSED = "TLS error: certificate verify failed"
_PLAIN_PORT = "wrong version number"


def NetworkFailure(upstream: str, reason: str, action: str, timeout: bool = False) -> Failure:
    return Failure(upstream, None, reason, action, client_status=504 if timeout else 502)


def network_failure(upstream: str, exc: BaseException, action: str, phase: str, via: str | None = None) -> Failure:
    """Classify a transport exception: refused, reset, DNS, TLS, which timeout, or the proxy's
    own words (its message names it without credentials).  `via`: the proxy the request went
    through, named beside a timeout waiting for the answer or a connection cut (the proxy's doing
    or the upstream's: a user behind a proxy cannot tell which otherwise)."""
    # the proxy's doing or the upstream's: named beside a silence or a cut
    via_proxy = f" (via proxy {via})" if via else ""
    if isinstance(exc, http1.Unsendable):
        # what the client sent, not the upstream's doing; the next upstream may be sent other headers
        return Failure(upstream, None, str(exc), Action.SWITCH, counts=False, client_status=400)
    if isinstance(exc, http1.NoFreeConnection):
        # the upstream's connections were busy under ccswitch's own cap: it is not failing,
        # so this moves on without counting against its health
        return Failure(upstream, None, str(exc), action, counts=False, client_status=504)
    if isinstance(exc, http1.ProxyFailure):
        failure = NetworkFailure(upstream, str(exc), action)
        failure.lasting = exc.credentials     # the rules' proxy password: the client's retry gets the same
        return failure
    if isinstance(exc, http1.ConnectTimeout):
        if exc.in_tunnel:
            return NetworkFailure(upstream, f"TLS handshake timeout (through proxy {exc.through}, which had opened "
                                            "the tunnel)", action, timeout=True)
        through = f" (through proxy {exc.through})" if exc.through else ""   # not the upstream's own silence
        return NetworkFailure(upstream, f"connect timeout{through}", action, timeout=True)
    if isinstance(exc, asyncio.TimeoutError):
        return NetworkFailure(upstream, f"{phase} timeout{via_proxy}", action, timeout=True)
    # it says which encoding and what is wrong with it / with which status the upgrade was refused
    if isinstance(exc, http1.UndecodableBody | HandshakeRefused):
        return NetworkFailure(upstream, str(exc), action)
    chain = _causes(exc)
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, ssl.SSLError) for e in chain) or "CERTIFICATE" in text.upper():
        failure = NetworkFailure(upstream, tls_reason(chain), action)
        # the relay's certificate or an https:// URL for a plain port: a retry meets the same
        failure.lasting = failure.reason.startswith(_CERTIFICATE_REFUSED) or _PLAIN_PORT in failure.reason
        return failure
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text.lower() \
            or "All connection attempts failed" in text:
        reason = "connection refused"
    elif any(isinstance(e, ConnectionResetError) for e in chain):
        reason = f"connection reset{via_proxy}"
    elif "name" in text.lower() and ("resolution" in text.lower() or "known" in text.lower()):
        reason = "DNS error"
    elif isinstance(exc, http1.MalformedAnswer):
        reason = str(exc) or "not an HTTP/1.1 answer"     # ccswitch's words and llhttp's, never the answer's bytes
    elif isinstance(exc, http1.RemoteProtocolError):
        reason = f"connection closed{via_proxy}"
    elif isinstance(exc, http1.ConnectError) and str(exc):
        reason = str(exc)     # ccswitch's own words on what it met (never a header's text)
    else:
        reason = type(exc).__name__
    return NetworkFailure(upstream, reason, action)


def tls_reason(chain: list[BaseException]) -> str:
    """`TLS error: …` with the verifier's own words (`certificate verify failed: self-signed
    certificate`, `Hostname mismatch, certificate is not valid for 'relay.example'`), so a user
    knows whether to trust a CA or mend `base_url`; else the TLS error's reason (`wrong version
    number`: a plain-HTTP port given as https)."""
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError) and e.verify_message:
            return f"{_CERTIFICATE_REFUSED}: {e.verify_message}"
    for e in chain:
        if isinstance(e, ssl.SSLError) and e.reason:
            said = e.reason.replace('_', ' ').lower()
            if said == _PLAIN_PORT:
                said += " (an https:// base_url for a plain-HTTP port? then give it as http://)"
            return f"TLS error: {said}"
    return "TLS error"


def transport_text(exc: BaseException) -> str:
    """What went wrong reaching a host, for a probe or a webhook: the attempts table's words
    (`connection refused`, `TLS error`, the proxy's own), else the exception's own text."""
    reason = network_failure("", exc, Action.SWITCH, "connect").reason
    if reason == type(exc).__name__ and str(exc):
        return f"{reason}: {exc}"
    return reason


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def response_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Upstream response headers fit to pass on (bodies reach the client decoded).  An upstream's
    own x-ccswitch-* (a chained ccswitch) would stand beside ours and tell the client the wrong one.
    The headers its `connection` names are for this hop only (RFC 9110 §7.6.1)."""
    drop = _DROP_RESPONSE_HEADERS | named_by_connection(headers)
    return [(k, v) for k, v in headers if (low := k.lower()) not in drop and not low.startswith(OWN_PREFIX)]


def retry_after_seconds(headers: list[tuple[str, str]]) -> float | None:
    """`retry-after-ms`, `retry-after` (seconds or an HTTP date), else None (also when malformed)."""
    return retry_after(headers, utc_now().timestamp())


def limit_passed_on(headers: list[tuple[str, str]], client_headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """An upstream's 429 or 503 passed on as it is, but for a retry-after over a minute: Codex
    would wait it out (see `protocols._told_codex`), so it goes, and Codex gives up after its own
    few retries; other clients are told not to retry (unless the upstream said otherwise), as
    ccswitch's own answers tell them, instead of waiting minutes for each of their retries."""
    wait = retry_after_seconds(headers)
    if wait is None or wait <= protocols.RETRY_WAIT_WORTH_IT:
        return headers
    if protocols.codex_client(client_headers):
        return protocols.without_retry_after(headers)
    if any(name.lower() == "x-should-retry" for name, _ in headers):
        return headers
    return [*headers, ("x-should-retry", "false")]


def retry_delay(headers: list[tuple[str, str]], backoff: float, retry_number: int) -> float:
    """`retry` waits the backoff, doubling; a Retry-After is honoured up to 30 s."""
    told = retry_after_seconds(headers)
    if told is not None:
        return min(told, MAX_RETRY_AFTER)
    return min(backoff * (2 ** (retry_number - 1)), MAX_RETRY_AFTER)


def redirect_failure(upstream: str, base_url: str, sent_to: str, status: int, headers: list[tuple[str, str]],
                     body: bytes) -> Failure:
    """A 3xx the rules say nothing of: ccswitch follows no redirect, and a client would follow it
    past ccswitch, its prompt with it.  The next upstream is tried; as the last word, a 502 that
    names where it pointed (a retry gets the same)."""
    where = next((v for k, v in headers if k.lower() == "location"), "")[:200]
    if where:
        reason = (f"redirected (HTTP {status} to {where}): ccswitch does not follow "
                  f"redirects{_base_url_advice(base_url, sent_to, where)}")
    else:       # a 304 and the like: pointing nowhere, no base_url to give
        reason = f"HTTP {status} without a location: no answer to pass on"
    return Failure(upstream, status, reason, Action.SWITCH, headers, body, client_status=502, lasting=True)


def _base_url_advice(base_url: str, sent_to: str, location: str) -> str:
    """What base_url a redirect points at: its Location without the path ccswitch appends."""
    if base_url == "original" or not sent_to.startswith(base_url):
        return ""
    appended = sent_to[len(base_url):].partition("?")[0]
    target = location.partition("?")[0]
    if appended and target.endswith(appended) and "://" in target:
        return f"; set its base_url to {target[:-len(appended)]}"
    return "; set its base_url to where it points (without the path ccswitch appends)"


#: the Responses API's word for a `previous_response_id` another upstream or account issued
NOT_ITS_RESPONSE = "previous_response_not_found"


def continues_anothers(request, parsed) -> bool:
    """A Responses request continuing a stored answer that this upstream says it did not issue."""
    err = protocols.error_object(parsed)
    return (isinstance(err, dict) and err.get("code") == NOT_ITS_RESPONSE
            and isinstance(request.json, dict) and "previous_response_id" in request.json)
