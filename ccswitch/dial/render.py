"""Render one client request for one upstream: URL, credentials, model, headers, the body's
cache breakpoints and the way it is reached (proxy, connection cap) as a single unit.
Pure: the same inputs always give the same request, and the client's body is never changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ccswitch.config.models import Upstream
from ccswitch.net.http1 import Via
from ccswitch.vocab import Endpoint, Protocol
from ccswitch.wire.cache_breakpoints import keep_cache_breakpoints
from ccswitch.wire.exchange import ClientRequest, RenderError, json_bytes
from ccswitch.wire.headers import OWN_PREFIX, named_by_connection, sendable
from ccswitch.wire.redact import CREDENTIAL_HEADERS, credential_part, echo_forms, is_placeholder, without_credential_params

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "host", "content-length", "accept-encoding", "content-encoding",
})
_SUFFIX = {
    (Protocol.ANTHROPIC, Endpoint.MESSAGES): "/v1/messages",
    (Protocol.ANTHROPIC, Endpoint.COUNT_TOKENS): "/v1/messages/count_tokens",
    (Protocol.RESPONSES, Endpoint.RESPONSES): "/responses",
    (Protocol.CHAT, Endpoint.CHAT): "/chat/completions",
}


@dataclass(slots=True)
class OutgoingRequest:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    upstream_model: str | None
    secrets: list[str] = field(default_factory=list)  # text to scrub from whatever comes back
    via: Via = field(default_factory=Via)              # its proxy and connection cap

    def every_secret(self, rules) -> list[str]:
        """Its own key texts (the client's under `auth: client` too) and every key of `rules`: what
        an upstream's words are scrubbed of before they are cut (they may quote another's key,
        one a client pasted into its prompt)."""
        return self.secrets + rules.secret_texts()

    def sent_for_good(self) -> None:
        """Its answer reached the client: it will not be sent again, and only `secrets` is still
        read (to scrub the rest of the answer)."""
        self.headers, self.body = [], b""


def upstream_url(upstream: Upstream, req: ClientRequest) -> str:
    """The client's query string goes along, short of a key in it (`?key=`) unless `auth: client`."""
    query = req.query if upstream.auth == "client" else without_credential_params(req.query)
    if upstream.base_url == "original":
        url = req.url.partition("?")[0]
    else:
        suffix = _SUFFIX.get((upstream.protocol, _endpoint_for(upstream.protocol, req.endpoint)))
        if suffix is None:
            raise RenderError(f"{upstream.name} ({upstream.protocol}) has no {req.endpoint} endpoint")
        url = upstream.base_url + suffix
    return f"{url}?{query}" if query else url


def _endpoint_for(protocol: str, endpoint: str) -> str:
    if endpoint == Endpoint.COUNT_TOKENS:
        return endpoint
    return {Protocol.ANTHROPIC: Endpoint.MESSAGES, Protocol.RESPONSES: Endpoint.RESPONSES, Protocol.CHAT: Endpoint.CHAT}[protocol]


def render(upstream: Upstream, req: ClientRequest, body: dict[str, Any] | None = None, *,
           client_key: str | None = None) -> OutgoingRequest:
    """`body` is the (possibly converted) JSON to send; None keeps the client's body.  The
    ccswitch `client_key` the request came with is scrubbed from the answer too: it does not go
    upstream, but a prompt may carry it and an error quote it (one key, not all of them: each
    is one more search through every streamed event)."""
    payload = req.json if body is None else body
    # a conversion may name the model itself (e.g. without a `-thinking` suffix)
    model = payload.get("model") if body is not None and isinstance(payload.get("model"), str) else req.model
    upstream_model = model
    content = req.body
    if payload is not None and model is not None:
        upstream_model = upstream.map_model(model)
        if upstream_model != payload.get("model") or body is not None:
            payload = {**payload, "model": upstream_model}
            content = json_bytes(payload)
    if upstream.cache_breakpoints is not None and upstream.protocol == Protocol.ANTHROPIC \
            and isinstance(payload, dict):
        trimmed = keep_cache_breakpoints(payload, upstream.cache_breakpoints)
        if trimmed is not payload:
            payload = trimmed
            content = json_bytes(payload)
    headers = _headers(upstream, req)
    if upstream.protocol == Protocol.ANTHROPIC and not any(k == "anthropic-version" for k, _ in headers):
        headers.append(("anthropic-version", "2023-06-01"))
    if content:
        headers = [(k, v) for k, v in headers if k != "content-type"]
        headers.append(("content-type", "application/json"))
    secrets = _secrets(upstream, req) + (list(echo_forms(client_key)) if client_key else [])
    via = Via(upstream.proxy, upstream.name, upstream.max_connections)
    return OutgoingRequest(req.method, upstream_url(upstream, req), headers, content, upstream_model, secrets, via)


def _secrets(upstream: Upstream, req: ClientRequest) -> list[str]:
    """The key text an upstream may echo back, to scrub from its answer: its own (`secret_texts`),
    and under `auth: client` the client's (it must not reach the ledger's error text either)."""
    found = upstream.secret_texts()
    if upstream.auth == "client":
        found += [form for name, value in req.headers if name.lower() in CREDENTIAL_HEADERS
                  for form in echo_forms(credential_part(value))]
    return found


def _headers(upstream: Upstream, req: ClientRequest) -> list[tuple[str, str]]:
    keep_credentials = upstream.auth == "client"
    hop = _HOP_BY_HOP | named_by_connection(req.headers)
    out: list[tuple[str, str]] = []
    for name, value in req.headers:
        low = name.lower()
        if low in hop or low.startswith(OWN_PREFIX):
            continue
        if low in CREDENTIAL_HEADERS and (not keep_credentials or low == "proxy-authorization"
                                          or is_placeholder(value)):   # what a replayed flow shows instead
            continue
        out.append((low, value))
    key = upstream.api_key.get_secret_value() if upstream.api_key else None
    if upstream.auth == "x-api-key" and key:
        out.append(("x-api-key", key))
    elif upstream.auth == "bearer" and key:
        out.append(("authorization", f"Bearer {key}"))
    if req.endpoint == Endpoint.WEBSOCKET and not upstream.websocket:
        out = over_https(out)
    overrides = {k.lower(): v for k, v in upstream.headers.items()}
    out = [(k, v) for k, v in out if k not in overrides]
    out.extend(overrides.items())
    for name, value in out:
        # client headers always are (they are held as their bytes); a pasted key may not be
        if not sendable(value):
            raise RenderError(f"upstream {upstream.name}: the {name} header it sends has a character "
                              "beyond latin-1, which HTTP cannot carry (check its api_key and headers)", 500)
    return out


def over_https(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A bridged socket's turn sent as an HTTPS POST: without the beta its upgrade claimed
    (`openai-beta: responses_websockets=…`), which Codex's own HTTPS requests never carry."""
    out = []
    for name, value in headers:
        if name == "openai-beta":
            value = ", ".join(part.strip() for part in value.split(",")
                              if part.strip() and not part.strip().startswith("responses_websockets"))
            if not value:
                continue
        out.append((name, value))
    return out
