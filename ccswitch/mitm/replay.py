"""A replay of a flow ccswitch routed (mitmweb's replay, `client_replay`): the client's request
again, as it came, not the upstream's view the flow shows."""

from __future__ import annotations

import json

from mitmproxy import http

from ccswitch.mitm.flows import body_digest, unmark
from ccswitch.routing.admission import parse_body


def as_the_client_sent(flow: http.HTTPFlow) -> str | None:
    """A replay of a flow ccswitch routed is the client's request, routed again: the flow shows
    the URL and the body the upstream got, and the client's come back, unless edited since.
    An edit of a body the upstream got under its own model name gets the client's name back
    (unless the edit renamed it); an edit of one converted to the upstream's API is no request
    of the client's API: why it cannot be replayed (ccswitch would read it in the client's API
    and lose what does not fit, a Chat request's system prompt among them), else None."""
    meta, request = flow.metadata["ccswitch"], flow.request
    upstream, shown_model = meta.get("upstream"), meta.get("upstream_model")
    unmark(flow)
    for key in ("upstream", "upstream_model", "attempts", "error"):    # the original's, not the replay's
        meta.pop(key, None)
    if (url := meta.get("client_url")) and meta.get("shown_url", request.url) == request.url:
        request.url = url
    body = meta.get("client_body")
    if body is not None:
        if meta.get("shown_body") == body_digest(request.raw_content or b""):
            request.text = body
        elif (api := meta.get("shown_protocol")) is not None:
            return (f"this flow shows the {api} request {upstream or 'the upstream'} got, converted from the "
                    "client's: an edit of it is not the client's request; replay the flow unedited, or send the "
                    "change from the client")
        else:
            _client_model_back(request, shown_model, meta.get("model"))
    return None


def replayed_request(flow: http.HTTPFlow) -> tuple[dict | None, str | None]:
    """(the client's body, its client key's name) of the request a replay replays: what the row
    of a replay refused before it was read (an edited converted body) knows of it."""
    meta = flow.metadata["ccswitch"]
    body, problem = parse_body((meta.get("client_body") or "").encode("utf-8", "replace"))
    return (None if problem else body), meta.get("client")


def _client_model_back(request: http.Request, shown: str | None, client_model: str | None) -> None:
    """The client's model name in an edited body still naming the upstream's (`models:` renamed
    it): the replay is routed afresh, and another upstream knows no model by that name."""
    body, problem = parse_body(request.raw_content or b"")
    if problem:
        return      # the router answers it with that problem
    if shown and client_model and shown != client_model and body.get("model") == shown:
        body["model"] = client_model
        request.headers.pop("content-encoding", None)
        request.content = json.dumps(body).encode()     # ASCII: a lone surrogate (JSON allows one) encodes
