"""Incremental gzip/deflate/br/zstd decoding of bodies, bounded and strict about truncation."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import brotli

try:
    from compression import zstd  # Python 3.14+
except ImportError:
    from backports import zstd

ACCEPT_ENCODING = "gzip, deflate"     # what we ask for; br and zstd are decoded when sent anyway
_MAX_DECODED = 256 * 1024 * 1024      # a compressed body may not inflate past this
_SLICE = 1 << 20                      # decoded bytes per step, checked against the limit in between
# RFC 9659: zstd content coding needs no window over 8 MiB (the library would allow 128 MiB)
_ZSTD_WINDOW_LOG_MAX = 23


INFLATABLE = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd"})


class DecodeError(ValueError):
    pass


class TooLarge(DecodeError):
    pass


class _Zlib:
    errors = (zlib.error,)

    def __init__(self, encoding: str) -> None:
        self._raw_fallback = encoding == "deflate"   # some servers send raw deflate, no zlib header
        self._head = b""    # while that is open: zlib judges its 2-byte header only once it has both
        self._gzip = "gzip" in encoding
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS)

    def pieces(self, data: bytes) -> Iterator[bytes]:
        if self._raw_fallback and len(self._head) + len(data) < 2:
            self._head += data
            return
        data, self._head = self._head + data, b""
        while data:
            try:
                piece = self._z.decompress(data, _SLICE)
            except zlib.error:
                if not self._raw_fallback:
                    raise
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                piece = self._z.decompress(data, _SLICE)
            self._raw_fallback = False
            yield piece
            data = self._z.unconsumed_tail
            if self._gzip and self._z.eof and not data:
                # a gzip body may hold several members, one after another (RFC 1952 §2.2), and be
                # padded with zeros; anything else after a member is no gzip: its header is refused
                data = self._z.unused_data.lstrip(b"\0")
                if data:
                    self._z = zlib.decompressobj(zlib.MAX_WBITS | 16)

    def finish(self) -> tuple[bytes, bool]:
        if self._head:      # a body of one byte: no stream of either kind
            return b"", False
        return self._z.flush(), self._z.eof


class _Brotli:
    errors = (brotli.error,)

    def __init__(self, encoding: str) -> None:
        self._d = brotli.Decompressor()

    def pieces(self, data: bytes) -> Iterator[bytes]:
        yield self._d.process(data, output_buffer_limit=_SLICE)
        while not self._d.can_accept_more_data():     # output held back by the limit
            yield self._d.process(b"", output_buffer_limit=_SLICE)

    def finish(self) -> tuple[bytes, bool]:
        return b"", self._d.is_finished()


class _Zstd:
    errors = (zstd.ZstdError, EOFError)

    def __init__(self, encoding: str) -> None:
        self._d = self._frame_decoder()

    @staticmethod
    def _frame_decoder():
        return zstd.ZstdDecompressor(options={zstd.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG_MAX})

    def pieces(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self._d.eof:            # a body may hold several frames, one after another
                data = self._d.unused_data + data
                if not data:
                    return
                self._d = self._frame_decoder()
            elif not data and self._d.needs_input:
                return
            piece = self._d.decompress(data, _SLICE)
            data = b""
            yield piece

    def finish(self) -> tuple[bytes, bool]:
        return b"", self._d.eof


_CODECS = {"gzip": _Zlib, "x-gzip": _Zlib, "deflate": _Zlib, "br": _Brotli, "zstd": _Zstd}


class Inflater:
    def __init__(self, encoding: str, limit: int | None = None) -> None:
        if encoding not in INFLATABLE:
            raise DecodeError(f"unsupported content-encoding {encoding!r} (asked for {ACCEPT_ENCODING})")
        self.encoding = encoding
        self._codec = _CODECS[encoding](encoding)
        self._fed = False
        self._total = 0
        self.limit = _MAX_DECODED if limit is None else limit

    def feed(self, data: bytes) -> bytes:
        """Decoded in slices, so that a small bomb cannot allocate its whole size before the check."""
        if not data:
            return b""
        self._fed = True
        out = []
        try:
            for piece in self._codec.pieces(data):
                out.append(self._counted(piece))
        except self._codec.errors as exc:
            raise DecodeError(f"corrupt {self.encoding} body: {exc}") from exc
        return b"".join(out)

    def flush(self) -> bytes:
        try:
            tail, complete = self._codec.finish()
        except self._codec.errors as exc:
            raise DecodeError(f"corrupt {self.encoding} body: {exc}") from exc
        if self._fed and not complete:   # (an empty body, e.g. a 204, is no stream at all)
            raise DecodeError(f"truncated {self.encoding} body")
        return self._counted(tail)

    def _counted(self, piece: bytes) -> bytes:
        self._total += len(piece)
        if self._total > self.limit:
            raise TooLarge(f"{self.encoding} body inflates past {self.limit} bytes")
        return piece
