"""What is secret on the wire: the credential headers, the key a client presents, and
upstream key text an upstream echoes back (scrubbed before anything reaches a client or a log)."""

from __future__ import annotations

import base64
import html
import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, unquote_plus

#: headers that carry a client's identity; never forwarded unless `auth: client`
CREDENTIAL_HEADERS = frozenset({
    "authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie", "proxy-authorization",
    "chatgpt-account-id", "openai-organization", "openai-project",
})
#: query parameters that carry a key (Azure's and Google's `?key=`, `?api-key=`): treated alike
CREDENTIAL_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "access_token"})


def _query_without(query: str, drop) -> str:
    """A query string without the `name=value` pieces `drop` says, the rest exactly as written."""
    return "&".join(pair for pair in query.split("&") if not drop(pair))


def is_credential_param(pair: str) -> bool:
    """Whether a query's `name=value` piece is a key-carrying parameter."""
    return unquote_plus(pair.partition("=")[0]).strip().lower() in CREDENTIAL_PARAMS


def without_credential_params(query: str) -> str:
    """The query string without its key-carrying parameters."""
    if not query:
        return query
    return _query_without(query, is_credential_param)


def holding(headers: list[tuple[str, str]], texts: list[str]) -> list[bool]:
    """For each header, whether it carries one of `texts` (client keys): the headers to leave out."""
    texts = _worth_finding(texts)
    return [_holds(value, texts) for _, value in headers]


def path_without(target: str, texts: list[str]) -> str:
    """`target` (a URL or a path) without the query parameters that carry one of `texts`."""
    base, mark, query = target.partition("?")
    if not mark:
        return target
    texts = _worth_finding(texts)
    query = _query_without(query, lambda pair: _holds(pair, texts))
    return f"{base}?{query}" if query else base


def target_without(target: str, texts: list[str]) -> str:
    """`target` without the query parameters that carry one of `texts` (`path_without`), and each
    of them elsewhere in it (a path segment, `;key=…`) `<redacted>`; the whole path when one is
    there only in another percent-encoding."""
    texts = _worth_finding(texts)
    if not texts:
        return target
    target = path_without(target, texts)
    base, mark, query = target.partition("?")
    if "%" not in base and "+" not in base and not any(text in base for text in texts):
        return target       # a request's path, every time: looked at once, not split and decoded
    shown = quote(REDACTED)       # `<` and `>` stand in no request target
    for text in texts:
        for form in (text, quote(text, safe=""), quote(text)):
            base = base.replace(form, shown)
    if any(text in unquote_plus(base) for text in texts):     # spelt otherwise (`%2D` for `-`): all of it
        base = "/" + shown
    return base + mark + query


def _worth_finding(texts: list[str]) -> list[str]:
    return [text for text in texts if len(text) >= _SHORTEST_SECRET]


def _holds(value: str, texts: list[str]) -> bool:
    """Whether `value` carries one of `texts` in any spelling a client may use: as it is (`Bearer`,
    `Token`, a tab, a cookie's `key=...`), percent-encoded, or inside HTTP Basic's base64."""
    if any(text in value for text in texts):
        return True
    if ("%" in value or "+" in value) and any(text in unquote_plus(value) for text in texts):
        return True
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "basic" and rest:
        try:
            login = base64.b64decode(rest.strip(), validate=True).decode("utf-8", "replace")
        except ValueError:
            return False
        return any(text in login for text in texts)
    return False


REDACTED = "<redacted>"
#: a header whose name holds one of these carries a secret too (`x-relay-token`, `x-auth-key`)
CREDENTIAL_WORDS = ("key", "token", "secret", "auth", "pass")


def credential_part(value: str) -> str:
    """A credential header's secret part (`Bearer sk-…` echoes as `sk-…` as often as whole)."""
    scheme, _, rest = value.partition(" ")
    return rest.strip() if rest and scheme.lower() in ("bearer", "basic", "token") else value


#: ccswitch's refusal of a request without one of the rules' client keys: how to send one too
NO_CLIENT_KEY = ("missing or invalid ccswitch client key: set your client's API key to one of the client_keys "
                 "in ccswitch's rules")


def client_credential(headers: list[tuple[str, str]]) -> str | None:
    """The key a client presented (x-api-key, or a Bearer token)."""
    for name, value in headers:
        low = name.lower()
        if low == "x-api-key":
            return value.strip()
        if low == "authorization" and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


#: the credential headers that carry a client's key (the others name a session or an account)
KEY_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key"})


def is_placeholder(value: str) -> bool:
    """A credential header's value as a flow shows it: `<redacted>`, not a key."""
    return credential_part(value) == REDACTED


def withheld_credential(headers: list[tuple[str, str]], query: str) -> str | None:
    """The credential a request shows as `<redacted>` in place of its client's, by name: a
    replay of a routed flow carries no client's key (ccswitch keeps none), only what the flow
    showed.  None when a key it holds is real text (the user put it back), or it holds none:
    the credentials still shown so (another key header, a cookie, an account id) are left out on
    the way, never sent as the placeholder."""
    keys = [(name, value) for name, value in headers if name.lower() in KEY_HEADERS]
    params = ([(f"?{name}", value) for name, value in parse_qsl(query, keep_blank_values=True)
               if name.strip().lower() in CREDENTIAL_PARAMS] if query else [])
    shown = [name for name, value in [*keys, *params] if is_placeholder(value)]
    real = len(shown) < len(keys) + len(params)
    return shown[0] if shown and not real else None


_SHORTEST_SECRET = 8   # shorter text is too likely to occur by chance to be worth replacing


# letters and digits go as themselves in every form a key is echoed in (a JSON, URL or HTML
# encoder that escapes them too is unheard of); any other character may be escaped
_PLAIN = frozenset(string.ascii_letters + string.digits)


def _hex(value: int, width: int) -> bytes:
    """A regex for `value` in hex, its digits in either case."""
    return b"".join(f"[{d}{d.upper()}]".encode() if d.isalpha() else d.encode() for d in f"{value:0{width}x}")


def _forms_of(c: str) -> list[bytes]:
    r"""Regexes for one character as an echo may write it: itself; `\uXXXX` (ensure_ascii, Go's
    `\u0026`, .NET's `\u002B`, in either case); `\/`, `\"`, `\\` (PHP and every JSON encoder);
    and an ASCII one also as `%XX` and as an HTML character reference (`&#x2F;`, `&#47;`)."""
    units = c.encode("utf-16-be")
    forms = [re.escape(c.encode()),
             b"".join(rb"\\u" + _hex(int.from_bytes(units[i:i + 2]), 4) for i in range(0, len(units), 2))]
    if c in '/"\\':
        forms.append(re.escape(b"\\" + c.encode()))
    if c.isascii():
        forms += [b"%" + _hex(ord(c), 2), b"&#[xX]0*" + _hex(ord(c), 1) + b";", b"&#0*" + str(ord(c)).encode() + b";"]
    return forms


@dataclass(frozen=True)
class _Escaped:
    pattern: re.Pattern[bytes] | None   # None for a key of letters and digits only: no such form
    anchor: bytes       # the key's longest run of letters and digits: no echo of it lacks this
    every: re.Pattern[bytes]            # every character escaped, as `\uXXXX` or `%XX`
    every_anchors: tuple[bytes, ...]    # the first character so escaped, in each case of its hex


@lru_cache(maxsize=4096)     # every form of every key a large rules file holds (scrub asks per call)
def _escaped(secret: str) -> _Escaped:
    """The key as an encoder may write it when it echoes one: `_forms_of` each character other
    than a letter or digit; or every character escaped (an echo built to get past this)."""
    runs = re.findall(r"[A-Za-z0-9]+", secret)
    pattern = None if all(c in _PLAIN for c in secret) else re.compile(b"".join(
        re.escape(c.encode()) if c in _PLAIN else b"(?:" + b"|".join(_forms_of(c)) + b")" for c in secret))
    every = re.compile(b"".join(b"(?:" + b"|".join(_forms_of(c)[1:]) + b")" for c in secret))
    first = ord(secret[0])
    anchors = {f"\\u{first:04x}".encode(), f"\\u{first:04X}".encode()}
    if secret[0].isascii():
        anchors |= {f"%{first:02x}".encode(), f"%{first:02X}".encode()}
    return _Escaped(pattern, max(runs, key=len, default="").encode(), every, tuple(sorted(anchors)))


def scrub(body: bytes, secrets: list[str]) -> bytes:
    """Replace any upstream key text an upstream echoed back (e.g. in an error), as it is or in
    any form an encoder may have written it (looked for only where its longest plain run is, or
    where its first character stands escaped)."""
    escapes = None     # whether anything in the body is escaped at all: asked once, if a key is long enough
    for secret in secrets:
        if len(secret) < _SHORTEST_SECRET:
            continue
        raw = secret.encode()
        if raw in body:
            body = body.replace(raw, b"[redacted]")
        escaped = _escaped(secret)
        if escaped.pattern is not None and escaped.anchor in body:
            body = escaped.pattern.sub(b"[redacted]", body)
        if escapes is None:
            escapes = b"\\u" in body or b"%" in body
        if escapes and any(anchor in body for anchor in escaped.every_anchors):
            body = escaped.every.sub(b"[redacted]", body)
    return body


def quoted_keys(body: bytes, keys: tuple[str, ...]) -> list[str]:
    """The keys `scrub` may find in a client's `body`: one look per key for its longest run of
    letters and digits (its echo forms share it), so that a large body quoting one is scrubbed of
    that one only.  A letter of that run escaped (`\\u0042`) hides it: `plain_ascii` first."""
    return [key for anchor, group in _by_anchor(keys) if anchor in body for key in group]


#: an escape of an ASCII character from space to `~` (`\u0042`): led by a literal, found at C
#: speed; a Python call only for one found
_ASCII_ESCAPE = re.compile(rb"\\u00([2-7][0-9A-Fa-f])")
_KEPT_ESCAPED = frozenset((0x22, 0x5C, 0x7F))      # `"` and `\` would end or begin a string; DEL


def plain_ascii(text: bytes) -> bytes:
    """JSON text with its escapes of printable ASCII characters written as the characters: the
    same JSON to any reader, in which a key spelt with an escaped letter shows as it is.  An
    escape follows an even run of backslashes (`\\\\u0042` is a backslash and the letters u0042)."""
    if b"\\u00" not in text:
        return text

    def written(match: re.Match[bytes]) -> bytes:
        value, at = int(match.group(1), 16), match.start()
        before = at
        while before and text[before - 1] == 0x5C:
            before -= 1
        return match.group(0) if (at - before) % 2 or value in _KEPT_ESCAPED else bytes((value,))
    return _ASCII_ESCAPE.sub(written, text)


@lru_cache(maxsize=4096)
def _spellings(secret: str) -> tuple[tuple[bytes, ...], re.Pattern[bytes]]:
    """Texts of which one stands whole in any JSON spelling of the key with one character escaped
    (its ends, its two longest runs) or every one (its first so escaped); and a pattern of the key
    as JSON inside a JSON string (a tool call's `arguments`) may spell it, each printable
    character plain or escaped one level down (`\\\\u0066` in the body, an `f` to a reader of
    that string as JSON)."""
    runs = sorted(re.findall(r"[A-Za-z0-9]+", secret), key=len, reverse=True)[:2]
    gates = {gate.encode() for gate in (secret[:8], secret[-8:], *runs) if gate} | set(_escaped(secret).every_anchors)
    pattern = b"".join(b"(?:" + re.escape(c.encode()) + rb"|\\\\u00" + _hex(ord(c), 2) + b")"
                       if 0x20 <= ord(c) < 0x7F and ord(c) not in _KEPT_ESCAPED else re.escape(c.encode())
                       for c in secret)
    return tuple(sorted(gates)), re.compile(pattern)


def without_quoted_keys(content: bytes, keys: tuple[str, ...]) -> bytes | None:
    """JSON `content` without the `keys` it quotes however JSON spells them (its escapes of ASCII
    characters written plain, `plain_ascii`; a character escaped in JSON inside a string, only
    where a key stands so), or None when it quotes none.  Only a key some text of which stands in
    `content` is looked for so (a substring search per text): most bodies are read no further."""
    if not keys or not content:
        return None
    near = tuple(key for key in keys if len(key) >= _SHORTEST_SECRET
                 and any(gate in content for gate in _spellings(key)[0]))
    if not near:
        return None
    scrubbed = content
    read = plain_ascii(content)
    if (found := quoted_keys(read, near)) and (without := scrub(read, found)) != read:
        scrubbed = without
    if b"\\\\u00" in scrubbed:
        for key in near:
            scrubbed = _spellings(key)[1].sub(b"[redacted]", scrubbed)
    return scrubbed if scrubbed != content else None


_ESCAPED_UNIT = re.compile(r"\\u([0-9A-Fa-f]{4})")


def might_be_spelt(text: str) -> bool:
    """Whether `text` may hold a character written otherwise (`%73`, `\\u0073`, `\\/`, `&#115;`)."""
    return "%" in text or "\\" in text or "&#" in text


def spelt_out(text: str) -> str:
    """`text` (a URL, a header's value) as a reader may decode it: percent-encoding, JSON's
    `\\uXXXX` and HTML's character references undone, to look for a key in (not to send)."""
    text = _ESCAPED_UNIT.sub(lambda m: chr(int(m.group(1), 16)), unquote(text))
    return html.unescape(text)


@lru_cache(maxsize=8)       # one tuple per rules object
def _by_anchor(keys: tuple[str, ...]) -> tuple[tuple[bytes, tuple[str, ...]], ...]:
    groups: dict[bytes, list[str]] = {}
    for key in keys:
        if len(key) >= _SHORTEST_SECRET:
            groups.setdefault(_escaped(key).anchor, []).append(key)
    return tuple((anchor, tuple(group)) for anchor, group in groups.items())


@lru_cache(maxsize=256)
def echo_forms(secret: str) -> tuple[str, ...]:
    """A key and the form an echo may carry it in besides: percent-encoded, as an upstream
    quoting a key that holds `/ + =` in a URL or a form field would write it."""
    forms = [secret]
    for encoded in (quote(secret, safe=""), quote(secret)):   # every byte, or all but `/` (a URL's path)
        for form in (encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)):   # %2F, %2f
            if form not in forms:
                forms.append(form)
    return tuple(forms)


def holds_secret(text: str, secrets: list[str]) -> bool:
    """Whether `scrub_text` would change `text` as written (not escaped): the cheap look first."""
    return any(len(secret) >= _SHORTEST_SECRET and secret in text for secret in secrets)


def scrub_text(text: str, secrets: list[str], errors: str = "replace") -> str:
    """`scrub` for text (an error message, a model name); `errors="surrogatepass"` keeps a client's
    lone surrogates as they are."""
    return scrub(text.encode("utf-8", errors), secrets).decode("utf-8", errors)


def scrub_json(value: Any, secrets: list[str]) -> Any:
    """JSON data (an upstream's usage object) with key text scrubbed from its strings (written
    ASCII-only: `scrub` knows a key in its escaped forms)."""
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
        if might_be_spelt(value):    # maybe an escaped form (`sk%2D…`)
            value = scrub_text(value, secrets)
        else:
            for secret in secrets:
                value = value.replace(secret, "[redacted]")
        kept.append((name, value))
    return kept
