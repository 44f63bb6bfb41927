"""Whether a client request can be routed at all: its headers, content type, size, encoding
and JSON body, judged before any upstream is chosen.  Each check gives the status and the
message ccswitch answers with, or None."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from ccswitch.net.addresses import is_loopback
from ccswitch.net.inflate import INFLATABLE, DecodeError, Inflater, TooLarge
from ccswitch.vocab import Endpoint
from ccswitch.wire.exchange import client_json

MAX_HEADER_BYTES = 64 * 1024
# HTTP carries none of these in a header (a tab only inside a value), nor a blank in the target
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_IN_NAMES = _NOT_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")


def head_problem(target: str, headers: list[tuple[str, str]]) -> tuple[int, str] | None:
    """A request head no upstream should see: control characters (or a blank in the target,
    which is not quoted here: it may hold a key), or far too many bytes of headers."""
    if _NOT_IN_TARGET.search(target) or not target.isascii():
        return 400, "the request's path or query contains a space, a control character or a byte that is not ASCII"
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
        if _CONTROL.search(value) or _NOT_IN_NAMES.search(name):
            return 400, f"header {name[:64]!r} contains a control character (a line break, NUL or the like)"
    if size > MAX_HEADER_BYTES:
        return 431, f"request headers too large ({size} bytes; the limit is {MAX_HEADER_BYTES})"
    return None


def streamed(body: dict, endpoint: str) -> bool:
    """Whether the answer streams: as the body says, but count_tokens answers whole whatever its
    body says (a client's `stream` there, or a user's edit of a copied flow, must not make each
    upstream's count a failure), and a WebSocket streams whatever it carries (its refused
    upgrade's row is a streamed request's, as its turns' are)."""
    if endpoint == Endpoint.WEBSOCKET:
        return True
    return body.get("stream") is True and endpoint != Endpoint.COUNT_TOKENS


def origin_problem(headers: list[tuple[str, str]], ours: frozenset[str] = frozenset()) -> tuple[int, str] | None:
    """A request a browser sent for a web page of another site (its `Origin` is not this machine):
    a page may post to, or open a WebSocket on, a loopback gateway as freely as any client, and
    spend its keys.  API clients send no `Origin`; the rules' `client_keys` let a browser in.
    `ours`: host names of pages ccswitch serves itself."""
    origin = next((value.strip() for name, value in headers if name.lower() == "origin"), None)
    if origin is None:
        return None
    try:
        host = (urlsplit(origin).hostname or "").rstrip(".")    # `localhost.` is localhost
    except ValueError:
        host = ""
    if _this_machine(host) or host.endswith(".localhost") or host in ours:
        return None
    return 403, (f"ccswitch does not serve web pages of other sites (Origin: {origin[:100]}); "
                 "set client_keys in rules.yaml to let a browser client in with a key")


def _this_machine(host: str) -> bool:
    """Loopback, also as an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`), or `0.0.0.0`, which
    browsers send to this machine."""
    if is_loopback(host):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_unspecified or (mapped is not None and mapped.is_loopback)


def body_problem(content_type: str, size: int, max_body: int) -> tuple[int, str] | None:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        return 415, f"content-type must be application/json, not {ctype[:100]!r}"
    if size > max_body:
        return 413, f"request body too large ({size} bytes; the limit is {max_body})"
    return None


def decoded_body(content_encoding: str, raw: bytes, limit: int) -> bytes | None:
    """The request body decoded, or None when it would exceed `limit` bytes decoded.

    gzip, deflate, br and zstd are inflated incrementally with a cap (a 32 MB bomb must not
    become 32 GB in memory); a body that does not decode is passed on as it is, for the JSON
    parser to name; any other encoding (identity) is the body itself.
    """
    encoding = content_encoding.strip().lower()
    if encoding in INFLATABLE:
        inflater = Inflater(encoding, limit)
        try:
            return inflater.feed(raw) + inflater.flush()
        except TooLarge:
            return None
        except DecodeError:
            return raw
    return None if len(raw) > limit else raw


def undecodable(content_encoding: str) -> str | None:
    """Why a body whose content-encoding `decoded_body` could not undo (handed back as sent) and
    that is not JSON as it is either was refused: the encoding, not the JSON, is at fault.  None
    for a body sent as it is."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in INFLATABLE:
        return f"the request body does not decode as {encoding} (its content-encoding)"
    return f"the request body's content-encoding {encoding[:40]!r} is not supported (gzip, deflate, br, zstd are)"


def parse_body(raw: bytes) -> tuple[dict, str | None]:
    """The body as a JSON object, or the reason it is not one."""
    if not raw:
        return {}, "the request has no body"
    try:
        body = client_json(raw)
    except UnicodeDecodeError:
        return {}, "the request body is not UTF-8 JSON"
    except ValueError as exc:
        return {}, f"the request body is not valid JSON ({exc})"
    except RecursionError:
        return {}, "the request body is nested too deeply"
    if not isinstance(body, dict):
        return {}, "the request body must be a JSON object"
    return body, None
