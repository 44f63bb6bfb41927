"""The bounded, incremental body decoder on its own: every encoding streams event by event,
a bomb is stopped before it is allocated, and a zstd frame may not ask for a huge window."""

from __future__ import annotations

import gzip
import tracemalloc

import brotli
import pytest

from ccswitch.net.inflate import DecodeError, Inflater, TooLarge, zstd
from tests.support.mock_upstream import StreamPacker

EVENTS = [b"event: delta\ndata: {\"text\": \"part %d\"}\n\n" % i for i in range(5)]
ENCODINGS = ["gzip", "deflate", "br", "zstd"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_flushed_event_comes_out_as_soon_as_it_arrives(encoding):
    packer, inflater = StreamPacker(encoding), Inflater(encoding)
    for event in EVENTS:
        assert inflater.feed(packer.part(event)) == event
    assert inflater.feed(packer.end()) + inflater.flush() == b""


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_bomb_is_stopped_before_it_is_allocated(encoding):
    packer = StreamPacker(encoding)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.part(zeros) for _ in range(96)) + packer.end()   # 96 MiB of zeros
    assert len(bomb) < 1 << 20
    limit = 4 << 20
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge, match=f"{encoding} body inflates past {limit}"):
            Inflater(encoding, limit).feed(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * limit + len(bomb), f"{peak} bytes allocated on the way"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_stream_cut_short_is_truncated_not_ended(encoding):
    packer, inflater = StreamPacker(encoding), Inflater(encoding)
    assert inflater.feed(packer.part(EVENTS[0])) == EVENTS[0]    # no end of stream follows
    with pytest.raises(DecodeError, match=f"truncated {encoding} body"):
        inflater.flush()


def test_zstd_frames_that_need_a_window_over_8_mib_are_refused():
    """RFC 9659 caps the zstd content coding's window at 8 MiB; the library alone would allow 128."""
    wide = zstd.compress(bytes(range(256)) * 65536, options={zstd.CompressionParameter.window_log: 26})
    with pytest.raises(DecodeError, match=r"corrupt zstd body.*memory"):
        Inflater("zstd").feed(wide)


def test_data_after_the_end_of_a_br_stream_is_corrupt():
    with pytest.raises(DecodeError, match="corrupt br body"):
        Inflater("br").feed(brotli.compress(b"{}") + b"trailing")


@pytest.mark.parametrize("damage", ["a block", "the checksum"])
def test_a_deflate_stream_corrupt_part_way_is_an_error_not_what_decoded_so_far(damage):
    """Past its first piece a deflate stream is not taken for raw deflate again: corruption part-way
    is named, never passed over with what decoded so far (nor with text decoded afresh after it)."""
    packer, inflater = StreamPacker("deflate"), Inflater("deflate")
    assert inflater.feed(packer.part(EVENTS[0])) + inflater.feed(packer.part(EVENTS[1])) == EVENTS[0] + EVENTS[1]
    if damage == "a block":
        spoilt, problem = b"\x06" + packer.part(EVENTS[2]), "invalid block type"    # BTYPE 11: reserved
    else:
        # well-formed blocks to the end (text that stands alone, as a fresh raw stream would read
        # it), then an Adler-32 that does not match: only the zlib trailer tells
        whole = packer.part(b"Q7#") + packer.end()
        spoilt, problem = whole[:-1] + bytes([whole[-1] ^ 0xFF]), "incorrect data check"
    with pytest.raises(DecodeError, match=f"corrupt deflate body: .*{problem}"):
        inflater.feed(spoilt)


@pytest.mark.parametrize("wbits", [-15, 15], ids=["raw deflate", "zlib deflate"])
@pytest.mark.parametrize("first", [1, 2, 3])
def test_a_deflate_body_decodes_however_few_bytes_its_first_read_holds(wbits, first):
    """zlib judges its 2-byte header only once it has both: a raw deflate body (no header, some
    servers send it) must not be taken for a zlib one on the strength of one byte."""
    import zlib
    plain = b"data: " + b"x" * 500 + b"\n\n"
    packer = zlib.compressobj(wbits=wbits)
    packed = packer.compress(plain) + packer.flush()
    inflater = Inflater("deflate")
    out = inflater.feed(packed[:first]) + inflater.feed(packed[first:first + 1]) + inflater.feed(packed[first + 1:])
    assert out + inflater.flush() == plain


def test_a_deflate_body_of_one_byte_is_truncated():
    inflater = Inflater("deflate")
    assert inflater.feed(b"\x78") == b""
    with pytest.raises(DecodeError, match="truncated"):
        inflater.flush()


@pytest.mark.parametrize("split", [None, 5, 26], ids=["whole", "inside-the-first", "at-the-second-s-start"])
def test_a_gzip_body_of_several_members_decodes_whole(split):
    # only the first member came out, the rest dropped without a word (RFC 1952 allows several)
    body = gzip.compress(b"first-") + gzip.compress(b"second") + b"\0\0"       # zeros: padding
    inflater = Inflater("gzip")
    pieces = [body] if split is None else [body[:split], body[split:]]
    assert b"".join(inflater.feed(piece) for piece in pieces) + inflater.flush() == b"first-second"


@pytest.mark.parametrize("tail", [b"junk after it", gzip.compress(b"cut short")[:-4]], ids=["junk", "truncated-member"])
def test_what_follows_a_gzip_member_must_be_another_whole_one(tail):
    inflater = Inflater("gzip")
    with pytest.raises(DecodeError):
        inflater.feed(gzip.compress(b"first-") + tail)
        inflater.flush()
