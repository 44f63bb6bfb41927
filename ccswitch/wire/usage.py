"""Token usage from each protocol's bodies and streams, in one convention.

`input_tokens` counts prompt tokens neither read from nor written to cache, so
input + cache_creation + cache_read is always the whole prompt:
* Anthropic already reports it that way (1:1);
* OpenAI's `cached_tokens` / `cache_write_tokens` are subsets of its input and
  are subtracted.
Streams report usage cumulatively (Anthropic's `message_delta` repeats totals):
later numbers overwrite earlier ones, they are never added, and never lower them (some
Anthropic-compatible servers send a `message_delta` whose input counts are 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from ccswitch.vocab import Protocol
from ccswitch.wire.exchange import UNPARSED
from ccswitch.wire.numbers import as_number
from ccswitch.wire.sse import Event


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_creation_1h_tokens: int = 0   # a subset of cache_creation_tokens
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    raw: dict | None = None

    def columns(self) -> dict[str, Any]:
        """The ledger's columns, `raw` as compact JSON (built field by field: `asdict` would
        deep-copy `raw` only for it to be serialised, on every row)."""
        out = {name: getattr(self, name) for name in _COUNTS}
        out["raw_usage"] = json.dumps(self.raw, separators=(",", ":")) if self.raw else None
        return out


_COUNTS = tuple(f.name for f in fields(Usage) if f.name != "raw")


#: more tokens than any request has: a count past it is nonsense (and past 2**63 no ledger could
#: store it, while the live page and the budgets would count it)
MAX_TOKENS = 2**53


def token_count(value: Any) -> int:
    """A token count as an upstream wrote it: a whole number, also as `25.0` or `"42"` (a
    fraction rounds); anything else, negative, or past MAX_TOKENS counts as 0."""
    if type(value) is int:      # what upstreams send: the one check on a stream's path
        return value if 0 < value <= MAX_TOKENS else 0
    number = None if isinstance(value, bool) else as_number(value)
    count = 0 if number is None else round(number)
    return count if 0 < count <= MAX_TOKENS else 0


def from_anthropic(usage: dict) -> Usage:
    creation = usage.get("cache_creation")
    one_hour = token_count(creation.get("ephemeral_1h_input_tokens")) if isinstance(creation, dict) else 0
    details = usage.get("output_tokens_details") or {}
    return Usage(input_tokens=token_count(usage.get("input_tokens")), output_tokens=token_count(usage.get("output_tokens")),
                 cache_creation_tokens=token_count(usage.get("cache_creation_input_tokens")),
                 cache_creation_1h_tokens=one_hour,
                 cache_read_tokens=token_count(usage.get("cache_read_input_tokens")),
                 reasoning_tokens=token_count(details.get("thinking_tokens") if isinstance(details, dict) else 0),
                 raw=usage)


def _openai(total_in: int, output: int, in_details: Any, out_details: Any, raw: dict) -> Usage:
    in_details = in_details if isinstance(in_details, dict) else {}
    out_details = out_details if isinstance(out_details, dict) else {}
    cached = token_count(in_details.get("cached_tokens"))
    written = token_count(in_details.get("cache_write_tokens") or in_details.get("cache_creation_tokens"))
    return Usage(input_tokens=max(0, total_in - cached - written), output_tokens=output,
                 cache_creation_tokens=written, cache_read_tokens=cached,
                 reasoning_tokens=token_count(out_details.get("reasoning_tokens")), raw=raw)


def from_responses(usage: dict) -> Usage:
    return _openai(token_count(usage.get("input_tokens")), token_count(usage.get("output_tokens")),
                   usage.get("input_tokens_details"), usage.get("output_tokens_details"), usage)


def from_chat(usage: dict) -> Usage:
    return _openai(token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens")),
                   usage.get("prompt_tokens_details"), usage.get("completion_tokens_details"), usage)


_FROM = {Protocol.ANTHROPIC: from_anthropic, Protocol.RESPONSES: from_responses, Protocol.CHAT: from_chat}


def from_body(protocol: str, body: Any) -> Usage | None:
    """Usage of a whole (non-streamed) response body of `protocol`."""
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    if protocol == Protocol.RESPONSES and usage is None and isinstance(body.get("response"), dict):
        usage = body["response"].get("usage")
    return _FROM[protocol](usage) if isinstance(usage, dict) else None


_ANTHROPIC_WITHOUT_USAGE = frozenset({"content_block_delta", "content_block_start", "content_block_stop", "ping"})


def _without_usage(protocol: str, event: Event) -> bool:
    """Events that are most of a stream and never carry usage: passed by on their type alone,
    which costs no JSON parse (`Event.type`)."""
    if protocol == Protocol.ANTHROPIC:
        return event.type in _ANTHROPIC_WITHOUT_USAGE
    return protocol == Protocol.RESPONSES and event.type.endswith(".delta")


def later_totals(known: dict | None, later: dict) -> dict:
    """Usage as a stream's later event gives it, over what earlier ones said: each field
    overwritten, except that a count is never lowered (the totals only grow)."""
    merged = dict(known or {})
    for key, value in later.items():
        if value is None:
            continue
        before = merged.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            merged[key] = later_totals(before, value)     # `cache_creation`'s counts as the others
            continue
        if before is not None and not isinstance(value, dict | bool):
            # as numbers: some servers write a count as text ("1500")
            earlier, later_count = as_number(before), as_number(value)
            if earlier is not None and later_count is not None and earlier > later_count:
                continue
        merged[key] = value
    return merged


class UsageTap:
    """Watches one upstream stream's events and keeps the latest usage seen."""

    __slots__ = ("_raw", "protocol", "response_id")

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self._raw: dict | None = None
        self.response_id: str | None = None     # a Responses answer's id (`response.created` on)

    def feed(self, event: Event) -> None:
        if not event.event or _without_usage(self.protocol, event):
            return
        body = event.json()
        if not isinstance(body, dict):
            return
        if self.protocol == Protocol.ANTHROPIC:
            kind = event.type
            if kind == "message_start" and isinstance(body.get("message"), dict):
                usage = body["message"].get("usage")
                if isinstance(usage, dict):
                    self._raw = dict(usage)
            elif kind == "message_delta" and isinstance(body.get("usage"), dict):
                self._raw = later_totals(self._raw, body["usage"])
        elif self.protocol == Protocol.RESPONSES:
            response = body.get("response")
            if isinstance(response, dict):
                if isinstance(response.get("usage"), dict):
                    self._raw = response["usage"]
                if isinstance(response.get("id"), str):
                    self.response_id = response["id"]
        elif isinstance(body.get("usage"), dict):
            self._raw = body["usage"]

    @property
    def usage(self) -> Usage | None:
        return _FROM[self.protocol](self._raw) if self._raw is not None else None


def answer_of_body(protocol: str, body: bytes, is_sse: bool, parsed: Any = UNPARSED) -> tuple[Usage | None, str | None]:
    """The usage of a whole response and, for a Responses one, its id: a JSON body, or an SSE body
    read to its end (once for both); `parsed`: the JSON body as the caller parsed it already
    (`json_or_none`), so it is parsed once."""
    if is_sse:
        from ccswitch.wire.sse import parse_all
        tap = UsageTap(protocol)
        for event in parse_all(body):
            tap.feed(event)
        return tap.usage, tap.response_id
    if parsed is UNPARSED:
        try:
            parsed = json.loads(body)
        except ValueError:
            return None, None
    found = parsed.get("id") if protocol == Protocol.RESPONSES and isinstance(parsed, dict) else None
    return from_body(protocol, parsed), found if isinstance(found, str) else None

