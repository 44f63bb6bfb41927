"""What is secret on the wire: the credential headers, the key a client presents, and
upstream key text an upstream echoes back (scrubbed before anything reaches a client or a log)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

#: headers that carry a client's identity; never forwarded unless `auth: client`
CREDENTIAL_HEADERS = frozenset({
    "authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie", "proxy-authorization",
    "chatgpt-account-id", "openai-organization", "openai-project",
})
#: query parameters that carry a key (Azure's and Google's `?key=`, `?api-key=`): treated alike
CREDENTIAL_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "access_token"})


def param_name(pair: str) -> str:
    """The name of one `name=value` piece of a query string, decoded, in lower case."""
    return unquote_plus(pair.partition("=")[0]).strip().lower()


def without_credential_params(query: str) -> str:
    """The query string without its key-carrying parameters, the rest exactly as written."""
    if not query:
        return query
    return "&".join(pair for pair in query.split("&") if param_name(pair) not in CREDENTIAL_PARAMS)


REDACTED = "<redacted>"
#: a header whose name holds one of these carries a secret too (`x-relay-token`, `x-auth-key`)
CREDENTIAL_WORDS = ("key", "token", "secret", "auth", "pass")


def credential_part(value: str) -> str:
    """A credential header's secret part (`Bearer sk-…` echoes as `sk-…` as often as whole)."""
    scheme, _, rest = value.partition(" ")
    return rest.strip() if rest and scheme.lower() in ("bearer", "basic", "token") else value


def client_credential(headers: list[tuple[str, str]]) -> str | None:
    """The key a client presented (x-api-key, or a Bearer token)."""
    for name, value in headers:
        low = name.lower()
        if low == "x-api-key":
            return value.strip()
        if low == "authorization" and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


_SHORTEST_SECRET = 8   # shorter text is too likely to occur by chance to be worth replacing


def with_escaped_forms(secrets: list[str]) -> list[str]:
    """`secrets` and the forms a JSON encoder may write them in when it echoes one: `\\/` for `/`
    (PHP), `\\u0026` for `&` (Go), `\\u00e9` for `é` (ensure_ascii).  Most keys have none."""
    out = list(secrets)
    for secret in secrets:
        if len(secret) < _SHORTEST_SECRET:
            continue
        plain = json.dumps(secret, ensure_ascii=False)[1:-1]
        ascii_only = json.dumps(secret)[1:-1]
        forms = {plain, ascii_only, plain.replace("/", "\\/"), ascii_only.replace("/", "\\/")}
        forms |= {form.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e") for form in forms}
        out += sorted(form for form in forms if form != secret)
    return out


def scrub(body: bytes, secrets: list[str]) -> bytes:
    """Replace any upstream key text an upstream echoed back (e.g. in an error)."""
    for secret in secrets:
        if len(secret) >= _SHORTEST_SECRET and secret.encode() in body:
            body = body.replace(secret.encode(), b"[redacted]")
    return body


def scrub_json(value: Any, secrets: list[str]) -> Any:
    """JSON data (an upstream's usage object) with key text scrubbed from its strings.  Written
    ASCII-only: a key with other characters is among `secrets` in that form too."""
    text = json.dumps(value).encode()
    scrubbed = scrub(text, secrets)
    return value if scrubbed == text else json.loads(scrubbed)


def scrub_headers(headers: list[tuple[str, str]], secrets: list[str]) -> list[tuple[str, str]]:
    """`scrub` for response headers.  A header whose name holds key text is dropped: a name
    cannot carry the `[redacted]` mark."""
    secrets = [s for s in secrets if len(s) >= _SHORTEST_SECRET]
    if not secrets:
        return headers
    kept = []
    for name, value in headers:
        if any(s.lower() in name.lower() for s in secrets):
            continue
        for secret in secrets:
            value = value.replace(secret, "[redacted]")
        kept.append((name, value))
    return kept
