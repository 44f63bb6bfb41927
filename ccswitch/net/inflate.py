"""Incremental gzip/deflate decoding of upstream bodies, bounded and strict about truncation."""

from __future__ import annotations

import zlib

ACCEPT_ENCODING = "gzip, deflate"
_MAX_DECODED = 256 * 1024 * 1024      # a compressed body may not inflate past this


INFLATABLE = frozenset({"gzip", "x-gzip", "deflate"})


class DecodeError(ValueError):
    pass


class TooLarge(DecodeError):
    pass


class Inflater:
    def __init__(self, encoding: str, limit: int | None = None) -> None:
        if encoding not in INFLATABLE:
            raise DecodeError(f"unsupported content-encoding {encoding!r} (asked for {ACCEPT_ENCODING})")
        self.encoding = encoding
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 16 if "gzip" in encoding else zlib.MAX_WBITS)
        self._first = True
        self._total = 0
        self.limit = _MAX_DECODED if limit is None else limit

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        try:
            return self._inflate(data)
        except zlib.error as exc:
            if not (self._first and self.encoding == "deflate"):
                raise DecodeError(f"corrupt {self.encoding} body: {exc}") from exc
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)   # some servers send raw deflate
            self._first = False
            return self.feed(data)
        finally:
            self._first = False

    def _inflate(self, data: bytes) -> bytes:
        """In slices, so that a small bomb cannot allocate its whole size before the check."""
        pieces = []
        while data:
            piece = self._z.decompress(data, 1 << 20)
            self._total += len(piece)
            if self._total > self.limit:
                raise TooLarge(f"{self.encoding} body inflates past {self.limit} bytes")
            pieces.append(piece)
            data = self._z.unconsumed_tail
        return b"".join(pieces)

    def flush(self) -> bytes:
        tail = self._z.flush()
        if not self._first and not self._z.eof:   # (an empty body, e.g. a 204, is no stream at all)
            raise DecodeError(f"truncated {self.encoding} body")
        return tail
