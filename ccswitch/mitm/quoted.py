"""Upstream keys a client quotes: a prompt that read the rules file or an .env would hand them to
every upstream tried (the other relays' among them) and leave them on the flow (mitmweb, `-w`).
They go, and stand, as `[redacted]`; the log says so once.  Only the upstreams' keys proper: a
key of `client_keys` a client quotes is its own to send."""

from __future__ import annotations

import logging

from mitmproxy import http

from ccswitch.mitm.gateway import Gateway
from ccswitch.routing.admission import decoded_body
from ccswitch.wire.redact import (
    CREDENTIAL_HEADERS,
    is_credential_param,
    might_be_spelt,
    quoted_keys,
    scrub_text,
    spelt_out,
    without_quoted_keys,
)

log = logging.getLogger("ccswitch")

#: what a key quoted in a request's path or query reads instead (`[` and `]` stand in no URL)
_IN_URL = "%5Bredacted%5D"


class QuotedKeys:
    def __init__(self, gateway: Gateway, what: str) -> None:
        self.gateway = gateway
        self.what = what          # "request", "Codex frame": for the log line
        self._told = False

    def without(self, content: bytes) -> bytes | None:
        """`content` (JSON) without the keys it quotes, or None when it quotes none (one cheap look
        per key).  A key with a letter escaped is one to a JSON reader (the upstream): it is looked
        for, and scrubbed, with the escapes of ASCII characters written plain."""
        if (scrubbed := without_quoted_keys(content, self.gateway.rules.upstream_key_texts())) is not None:
            self._tell()
        return scrubbed

    def off_head(self, flow: http.HTTPFlow, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """`headers` (those to go upstream) and the flow's path and headers without the keys they
        quote (an `x-debug` header, a `?dbg=` parameter).  Not the credentials: they are the
        client's own for an `auth: client` upstream, left out for the others."""
        keys = self.gateway.rules.upstream_key_texts()
        if not keys:
            return headers
        # the credentials are neither looked through nor scrubbed: a client's own key that holds
        # an upstream key's text (the same key in both) would send every request the slow way
        head = "\n".join([flow.request.path,
                          *(value for name, value in headers if name.lower() not in CREDENTIAL_HEADERS)])
        found = quoted_keys(head.encode("utf-8", "surrogatepass"), keys)
        if not found and might_be_spelt(head):     # letters percent-encoded or escaped: read as decoded
            found = quoted_keys(spelt_out(head).encode("utf-8", "surrogatepass"), keys)
        if not found:
            return headers
        kept = [(name, value if name.lower() in CREDENTIAL_HEADERS else _header_without(value, found))
                for name, value in headers]
        path = _path_without(flow.request.path, found)
        if kept == headers and path == flow.request.path:
            return headers
        flow.request.path = path
        request_headers = flow.request.headers
        for name in {name for (name, value), (_, was) in zip(kept, headers, strict=True) if value != was}:
            # as bytes: a str would be written as UTF-8, another byte beside the key changed on the flow
            request_headers.set_all(name, [value.encode("latin-1") for n, value in kept if n.lower() == name.lower()])
        self._tell()
        return kept

    def off_refused(self, flow: http.HTTPFlow, max_body: int, *, read: bool = True) -> None:
        """A refused request's body sent nowhere, without the keys it quotes, as the flow shows it
        (mitmweb, `-w`): decoded as a routed one's is, if it decodes within `max_body`.  One
        refused unread (for its client key: anyone may send one, a small one inflating to the
        limit among them) or past the limit is not looked through, nor left on the flow."""
        raw = flow.request.raw_content
        if not raw:
            return
        encoding = flow.request.headers.get("content-encoding", "")
        content = decoded_body(encoding, raw, max_body) if read and len(raw) <= max_body else None
        if content is None:
            flow.request.headers.pop("content-encoding", None)
            flow.request.raw_content = b""
        elif (scrubbed := self.without(content)) is not None:
            flow.request.headers.pop("content-encoding", None)
            flow.request.content = scrubbed

    def _tell(self) -> None:
        if not self._told:
            self._told = True
            log.warning("ccswitch: a %s quoted an upstream's key from the rules: it is sent (and shown) as "
                        "[redacted], to no upstream as it is (said once)", self.what)


def _still_in(text: str, keys: list[str]) -> bool:
    """A key `scrub` left because no encoder writes it so (its letters percent-encoded)."""
    return might_be_spelt(text) and any(key in spelt_out(text) for key in keys)


def _header_without(value: str, keys: list[str]) -> str:
    value = scrub_text(value, keys, "surrogatepass")
    return "[redacted]" if _still_in(value, keys) else value


def _path_without(path: str, keys: list[str]) -> str:
    """A request's path and query without `keys`, a credential parameter's value left as it is."""
    base, mark, query = path.partition("?")
    pairs = [pair if is_credential_param(pair) else _pair_without(pair, keys) for pair in query.split("&")] if mark else []
    base = _scrubbed(base, keys)
    return ("/" + _IN_URL if _still_in(base, keys) else base) + mark + "&".join(pairs)


def _pair_without(pair: str, keys: list[str]) -> str:
    pair = _scrubbed(pair, keys)
    return f"{pair.partition('=')[0]}={_IN_URL}" if _still_in(pair, keys) else pair


def _scrubbed(text: str, keys: list[str]) -> str:
    return scrub_text(text, keys, "surrogatepass").replace("[redacted]", _IN_URL)
