"""The client request as captured by the proxy, and a whole reply, as plain data that
the translations, the dialer and the probes pass around."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ccswitch.vocab import Protocol


@dataclass(slots=True)
class ClientRequest:
    """What the client sent, captured before the flow is handed to the dialer."""
    route: str
    endpoint: str
    method: str
    url: str                                  # the original URL, query included
    headers: list[tuple[str, str]]            # as sent, credentials included
    body: bytes
    json: dict[str, Any] | None = None
    model: str | None = None
    stream: bool = False
    client_protocol: str = Protocol.ANTHROPIC

    @property
    def query(self) -> str:
        return urlsplit(self.url).query


class RenderError(ValueError):
    """The client request cannot be expressed for this upstream (another one may take it).
    `status` is what the client gets when no upstream could."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def object_at(value: Any, where: str) -> dict:
    """A client's value that must be a JSON object when given (absent: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RenderError(f"{where} must be an object")
    return value


def function_name(value: Any) -> str | None:
    """The name in a Chat client's `{"function": {"name": …}}` (a tool, a call, a choice), or
    None for any other shape."""
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def array_at(value: Any, where: str) -> list:
    """A client's value that must be a JSON array when given (absent: empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RenderError(f"{where} must be an array")
    return value


_COMPACT = (",", ":")


def json_text(value: Any, *, compact: bool = True) -> str:
    """JSON text that encodes to UTF-8: other scripts kept as they are, unless a lone surrogate
    is in it (a client cut a character in two, and JSON allows its escape), then everything
    escaped, that one as the client sent it."""
    separators = _COMPACT if compact else None
    text = json.dumps(value, ensure_ascii=False, separators=separators)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=separators)
    return text


def encodable(text: str) -> str:
    """`text` as UTF-8 can hold it: a lone surrogate (a Python string holds no pairs; JSON
    allows one alone) becomes U+FFFD."""
    if text.isascii():      # most text, and no copy made to find it out
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text


def json_bytes(value: Any, *, compact: bool = True) -> bytes:
    """`json_text` as UTF-8 (one encode when there is no lone surrogate)."""
    separators = _COMPACT if compact else None
    try:
        return json.dumps(value, ensure_ascii=False, separators=separators).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=separators).encode()


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


#: a client's JSON read as the standard has it: Python's reader also takes `NaN` and `Infinity`,
#: and reads 1e400 as infinity, each of which a renamed body would send upstream as `NaN` or
#: `Infinity`, which no API reads
_CLIENT_JSON = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def client_json(data: bytes | str) -> Any:
    """A client's JSON text, as `json.loads` reads it but for those: ValueError if it is not JSON
    (UnicodeDecodeError, a ValueError, if its bytes are not text)."""
    if isinstance(data, bytes):   # UTF-8 only (RFC 8259 §8.1; a BOM is let be): UTF-16 would go upstream as it came
        data = data.decode("utf-8-sig", "surrogatepass")
    return _CLIENT_JSON.decode(data)


@dataclass(slots=True)
class Reply:
    """A complete answer for the client (success, `pass` status, or the last failure)."""
    upstream: str | None
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    translated: bool = False   # already in the client's protocol
    reason: str | None = None


#: a `parsed=` default meaning "not parsed yet: parse the body here" (None is a parse: not JSON)
UNPARSED: Any = object()


def json_or_none(body: bytes, parsed: Any = UNPARSED) -> object:
    """The body as JSON, or None when it is not JSON; `parsed`, when the caller has it already."""
    if parsed is not UNPARSED:
        return parsed
    try:
        return json.loads(body)
    except ValueError:
        return None


def not_json_kind(body: bytes) -> str:
    """What a body that `json_or_none` refused is, for a failure reason: bad bytes or bad JSON."""
    try:
        json.loads(body)
    except UnicodeDecodeError:
        return "not UTF-8"
    except ValueError:
        pass
    return "not JSON"
