"""Upstream keys a client quotes: a prompt that read the rules file or an .env would hand them to
every upstream tried (the other relays' among them) and leave them on the flow (mitmweb, `-w`).
They go, and stand, as `[redacted]`; the log says so once.  Only the upstreams' keys proper: a
key of `client_keys` a client quotes is its own to send."""

from __future__ import annotations

import logging

from ccswitch.mitm.gateway import Gateway
from ccswitch.wire.redact import quoted_keys, scrub

log = logging.getLogger("ccswitch")


class QuotedKeys:
    def __init__(self, gateway: Gateway, what: str) -> None:
        self.gateway = gateway
        self.what = what          # "request", "Codex frame": for the log line
        self._told = False

    def without(self, content: bytes) -> bytes | None:
        """`content` without the keys it quotes, or None when it quotes none (one cheap look per key)."""
        found = quoted_keys(content, self.gateway.rules.upstream_key_texts())
        if not found or (scrubbed := scrub(content, found)) == content:
            return None
        if not self._told:
            self._told = True
            log.warning("ccswitch: a %s quoted an upstream's key from the rules: it is sent (and shown) as "
                        "[redacted], to no upstream as it is (said once)", self.what)
        return scrubbed
