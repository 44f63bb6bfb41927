"""Incremental Server-Sent Events parser.

Upstream bodies arrive in arbitrary chunks: an event, a line, even a CRLF pair
can be split across reads.  The parser keeps the raw bytes of every event so the
proxy can forward exactly what the upstream sent while still understanding it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_MAX_PENDING = 16 * 1024 * 1024  # one event larger than this is not SSE we can trust


class SSEError(ValueError):
    pass


# `{"type": "content_block_delta", ...`: a plain name, closed, then the next member or the end
_LEADING_TYPE = re.compile(r'\{\s*"type"\s*:\s*"([A-Za-z0-9_.\-]+)"\s*[,}]')


@dataclass(slots=True)
class Event:
    event: str = "message"
    data: str = ""
    raw: bytes = b""
    _json: Any = field(default=None, repr=False)
    _parsed: bool = field(default=False, repr=False)
    _type: str | None = field(default=None, repr=False)

    def json(self) -> Any:
        """The data field as JSON, or None when it is not JSON (e.g. `[DONE]`)."""
        if not self._parsed:
            self._parsed = True
            try:
                self._json = json.loads(self.data) if self.data else None
            except ValueError:
                self._json = None
        return self._json

    def not_json(self) -> bool:
        """Its data is surely not the JSON an API stream sends (a relay's cut line, or garbage):
        parsed and found not to be, or, never parsed (a delta passed on as it is), not ending as
        an object or an array does.  No data at all is not counted."""
        data = self.data
        if not data:
            return False
        if self._parsed:
            return self._json is None and data.strip() != "[DONE]"
        last = data[-1]
        if last == "}" or last == "]":
            return False
        return not data.rstrip().endswith(("}", "]"))     # trailing blanks: rare, looked at whole

    @property
    def type(self) -> str:
        """The event's type: the JSON `type` field if present, else the `event:` name.

        Anthropic and Responses streams carry the type in both places; some relays
        drop the `event:` line, so the JSON wins.  Their data begins with it, and
        read from there it costs no parse: most events of a stream are text deltas
        that nothing else reads the JSON of.
        """
        if self._type is None:   # asked by the usage tap and by the judge of every event: once
            leading = None if self._parsed else _LEADING_TYPE.match(self.data)
            if leading is not None:
                self._type = leading.group(1)
            else:
                body = self.json()
                self._type = body["type"] if isinstance(body, dict) and isinstance(body.get("type"), str) \
                    else self.event
        return self._type


def _split_block(block: bytes) -> tuple[str, str] | None:
    if b"\r" not in block:
        # the blocks of every API stream, `event: NAME` and `data: JSON` or `data: JSON` alone: no
        # loop over lines (each event of a stream passes here); anything else is read in full below
        first, sep, second = block.partition(b"\n")
        if not sep:
            if first.startswith(b"data: "):
                return "message", first[6:].decode("utf-8", errors="replace")
        elif first.startswith(b"event: ") and second.startswith(b"data: ") and b"\n" not in second:
            return (first[7:].decode("utf-8", errors="replace") or "message",
                    second[6:].decode("utf-8", errors="replace"))
    return _split_lines(block)


def _split_lines(block: bytes) -> tuple[str, str] | None:
    name = "message"
    data_lines: list[str] = []
    seen_field = False
    # split as bytes: SSE lines end at CR, LF or CRLF only, where `str.splitlines` would also cut
    # at U+2028, U+2029 and U+0085, which JSON strings carry unescaped (a model's text can hold them)
    for raw_line in block.splitlines():
        line = raw_line.decode("utf-8", errors="replace")
        if not line or line.startswith(":"):
            continue
        key, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        seen_field = True
        if key == "event":
            name = value or "message"   # an empty name dispatches as "message", as the SSE spec says
        elif key == "data":
            data_lines.append(value)
    if not seen_field:
        return None
    return name, "\n".join(data_lines)


# a line ends at CRLF, LF or CR, and an empty line ends the event: every pair of line ends.  A CR
# after a line end may be the start of a CRLF, so it is a boundary only once the next byte is in
# (spelled out, no optional `\r?` in front: that would cost the scan of every byte threefold)
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\r\n|\r\n\n|\n\n|\r\r|\r\n\r(?=[^\n])|\n\r(?=[^\n])")


#: how a comment or an Anthropic `ping` event begins (its `event:` line, or its data without one)
_HEARTBEAT_STARTS = (b":", b"event: ping", b"event:ping", b'data: {"type": "ping"', b'data: {"type":"ping"')


class SSEParser:
    """Feed bytes, get complete events.  Comment-only blocks are reported as
    events with `event == ""` so their raw bytes can still be forwarded."""

    __slots__ = ("_buf", "_scanned")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scanned = 0   # bytes of _buf known to hold no boundary (so each byte is searched once)

    @property
    def holds_part(self) -> bool:
        """Whether a piece of an event is waiting for the rest (line ends alone are none)."""
        return bool(self._buf.strip(b"\r\n"))

    @property
    def holds_heartbeat_part(self) -> bool:
        """Whether what waits for the rest is the start of a comment or of a `ping` event (a relay
        that writes an event's lines apart)."""
        head = self._buf.lstrip(b"\r\n")[:40]
        return head.startswith(_HEARTBEAT_STARTS)

    def feed(self, chunk: bytes) -> list[Event]:
        if not self._buf and b"\r" not in chunk:
            return self._feed_lf(chunk)
        self._buf += chunk
        events: list[Event] = []
        start = 0
        # a separator may straddle the old end: look back 3 bytes
        pos = max(0, self._scanned - 3)
        while True:
            match = _BOUNDARY.search(self._buf, pos)
            if match is None:
                break
            end = match.end()
            raw = bytes(self._buf[start:end])
            events.append(_event(raw, _split_block(raw[: match.start() - start])))
            start = pos = end
        if start:
            del self._buf[:start]
        self._scanned = len(self._buf)
        self._check_pending()
        return events

    def _feed_lf(self, chunk: bytes) -> list[Event]:
        """A chunk that starts a block and has no CR (most of any stream): its blank lines are
        exactly its LF pairs, so one split finds its events, without the scan or the buffer."""
        *blocks, rest = chunk.split(b"\n\n")
        if rest:
            self._buf += rest
            self._scanned = len(rest)
            self._check_pending()
        return [_event(block + b"\n\n", _split_block(block)) for block in blocks]

    def _check_pending(self) -> None:
        if len(self._buf) > _MAX_PENDING:
            raise SSEError("an SSE event exceeded 16 MiB without ending")

    def flush(self) -> list[Event]:
        """End of body: whatever is left is a final event without its blank line."""
        raw = bytes(self._buf)
        self._buf.clear()
        self._scanned = 0
        if not raw.strip():
            return [Event(event="", raw=raw)] if raw else []
        return [_event(raw, _split_block(raw))]

    def end(self) -> list[Event]:
        """A stream's clean end.  Its unterminated final event is kept only when whole (its data is
        JSON, or OpenAI's `[DONE]`) and then given its blank line: whatever is passed on is complete
        events.  A fragment is dropped, so an error event sent after it stays a separate event."""
        whole = []
        for event in self.flush():
            if event.event and (event.data == "[DONE]" or event.json() is not None):
                whole.append(Event(event.event, event.data, event.raw.rstrip(b"\r\n") + b"\n\n"))
        return whole

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)


def _event(raw: bytes, parsed: tuple[str, str] | None) -> Event:
    """The event of a block as `_split_block` read it (None: only comments, passed on as they are)."""
    return Event(event="", raw=raw) if parsed is None else Event(event=parsed[0], data=parsed[1], raw=raw)


def is_event_stream(content_type: str | None) -> bool:
    """A media type is case-insensitive: `Text/Event-Stream; charset=utf-8` is a stream too."""
    return content_type is not None and "text/event-stream" in content_type.lower()


def format_event(data: Any, event: str | None = None) -> bytes:
    """One SSE event; `data` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    return (head + lines + "\n").encode()


def parse_all(body: bytes) -> list[Event]:
    """Every event of a whole SSE body, the last one even without its blank line."""
    parser = SSEParser()
    return parser.feed(body) + parser.flush()
