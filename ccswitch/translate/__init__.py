"""Translation between the client's protocol and the upstream's.

The dialer asks `translation_for(client, upstream)` and uses the result (a `Translation`)
for every body that crosses: the request, a whole response, an error, each stream event.
Same protocol on both sides is a pass-through that only checks and scrubs; the chat
route's conversions (`translate.chat`) serve a Chat Completions client from an Anthropic
Messages or OpenAI Responses upstream.
"""

from __future__ import annotations

from functools import cache

from ccswitch.translate.base import ChatPassthrough, Passthrough, Translation, Unsupported
from ccswitch.translate.chat.anthropic import ChatToAnthropic
from ccswitch.translate.chat.responses import ChatToResponses
from ccswitch.vocab import Protocol
from ccswitch.wire.exchange import ClientRequest, RenderError
from ccswitch.wire.redact import REDACTED, withheld_credential

_PASSTHROUGH = Passthrough()
_CHAT_PASSTHROUGH = ChatPassthrough()


@cache
def translation_for(client_protocol: str, upstream_protocol: str) -> Translation:
    """The translation for a pair (stateless, so one instance each)."""
    if client_protocol == upstream_protocol:
        return _CHAT_PASSTHROUGH if client_protocol == Protocol.CHAT else _PASSTHROUGH
    if client_protocol == Protocol.CHAT and upstream_protocol == Protocol.ANTHROPIC:
        return ChatToAnthropic()
    if client_protocol == Protocol.CHAT and upstream_protocol == Protocol.RESPONSES:
        return ChatToResponses()
    return Unsupported(client_protocol, upstream_protocol)


def convert_for_candidates(req: ClientRequest, candidates, rules) -> tuple[dict, dict[str, RenderError]]:
    """Convert the body for each candidate of another protocol before any upstream call (the
    dialer reuses what was converted), and say which candidates cannot take it, and why: an
    Anthropic upstream cannot return `n` choices where a Chat one can; an `auth: client` one
    cannot take a replay whose key shows `<redacted>`."""
    converted: dict[str, dict] = {}
    refused: dict[str, RenderError] = {}
    withheld = withheld_credential(req.headers, req.query) if any(u.auth == "client" for u in candidates) else None
    for upstream in candidates:
        if withheld is not None and upstream.auth == "client":
            # it would get the placeholder as the client's key: a 401 for the user to puzzle over
            refused[upstream.name] = RenderError(
                f"the request's {withheld} shows as {REDACTED} (a replay: ccswitch keeps no client's key), and "
                f"{upstream.name} takes the client's own (auth: client): put the key back in the flow to replay "
                "it there", 401)
            continue
        if upstream.protocol == req.client_protocol:
            continue
        try:
            body = translation_for(req.client_protocol, upstream.protocol).request(req, upstream, rules)
        except RenderError as exc:
            refused[upstream.name] = exc
            continue
        if body is not None:
            converted[upstream.name] = body
    return converted, refused
