"""In-process throughput figures for scripts/bench.py: what the stream pump does per upstream
event (same protocol, and converted to Chat) and the ledger writer."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _upstream_stream(protocol: str, events: int) -> tuple[int, list[bytes]]:
    """(how many events, the upstream's SSE body in 4 KiB reads) of a streamed answer of `events` deltas."""
    from tests.support import mock_payloads as P
    reply = P.Reply("bench-model", [f"tok{i} " for i in range(events)])
    stream = P.anthropic_events(reply) if protocol == "anthropic" else P.responses_events(reply)
    raw = b"".join(P.sse(e) for e in stream)
    return len(stream), [raw[i:i + 4096] for i in range(0, len(raw), 4096)]


def converter_events_per_second(protocol: str, events: int = 20_000) -> float:
    """One core: parse an upstream SSE stream and convert it to Chat chunks, in 4 KiB reads."""
    from ccswitch.config.load import parse_rules
    from ccswitch.translate import translation_for
    from ccswitch.wire.exchange import ClientRequest
    from ccswitch.wire.sse import SSEParser
    count, reads = _upstream_stream(protocol, events)
    upstream = parse_rules(f"upstreams: [{{name: u, protocol: {protocol}, base_url: 'http://x', "
                           "api_key: 'sk-bench-0000'}]").upstreams[0]
    body = {"model": "bench-model", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
    req = ClientRequest("chat", "chat", "POST", "", [], b"", body, "bench-model", True, "openai-chat")
    converter, parser = translation_for("openai-chat", protocol).stream(req, upstream), SSEParser()
    start = time.perf_counter()
    out = 0
    for read in reads:
        for event in parser.feed(read):
            out += len(converter.feed(event))
    out += len(converter.finish())
    return count / (time.perf_counter() - start)


def judged_events_per_second(protocol: str, events: int = 20_000) -> float:
    """One core: what the pump does with each event of a stream the client reads in the
    upstream's own protocol (Claude Code on Anthropic, Codex on Responses): parse, check it is
    JSON, judge (content, error, end), tap the usage and pass the bytes on, in 4 KiB reads."""
    from ccswitch.translate.base import StreamPassthrough
    from ccswitch.wire import protocols
    from ccswitch.wire.sse import SSEParser
    from ccswitch.wire.usage import UsageTap
    count, reads = _upstream_stream(protocol, events)
    parser, tap, passthrough = SSEParser(), UsageTap(protocol), StreamPassthrough()
    start = time.perf_counter()
    out = 0
    for read in reads:
        for event in parser.feed(read):
            if event.event and event.not_json():     # the pump's check that an event is the protocol's
                raise AssertionError("the benchmark's stream holds an event that is not JSON")
            tap.feed(event)
            protocols.classify_event(protocol, event)
            out += len(passthrough.feed(event))
    elapsed = time.perf_counter() - start
    assert out == sum(map(len, reads)) and tap.usage is not None
    return count / elapsed


def ledger_rows_per_second(rows: int = 50_000, usage_db: str | None = None) -> float:
    """How fast the writer thread drains a burst of request rows into SQLite (or ``usage_db``:
    e.g. a PostgreSQL URL)."""
    from ccswitch.ledger.writer import Ledger
    row = {"request_id": "r", "ts": "2026-11-25T10:00:00.000+00:00", "route": "claude", "endpoint": "messages",
           "upstream": "a", "model": "m", "status": 200, "stream": 1, "attempts": 1, "input_tokens": 10,
           "output_tokens": 5, "cache_creation_tokens": 0, "cache_creation_1h_tokens": 0, "cache_read_tokens": 0,
           "reasoning_tokens": 0, "raw_usage": '{"input_tokens":10,"output_tokens":5}'}
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(usage_db or Path(tmp) / "usage.db").start()
        start = time.perf_counter()
        for i in range(rows):      # each its own request: a request_id seen already is skipped, not inserted
            ledger.add("requests", {**row, "request_id": f"r{i}"})
        ledger.close()
        return rows / (time.perf_counter() - start)
