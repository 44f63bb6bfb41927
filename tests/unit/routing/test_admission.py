"""Admission checks of a client request, before any upstream is chosen."""

import json

import pytest

from ccswitch.routing.admission import decoded_body
from tests.support.mock_upstream import StreamPacker


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_a_br_or_zstd_client_body_is_inflated_within_the_limit(encoding):
    """As gzip: decoded in bounded slices, so a small bomb never becomes its whole size in memory."""
    import tracemalloc

    plain = json.dumps({"model": "m", "messages": []}).encode()
    assert decoded_body(encoding, StreamPacker(encoding).whole(plain), 1 << 20) == plain
    packer, limit = StreamPacker(encoding), 4 << 20
    raw = b"".join(packer.part(bytes(1 << 20)) for _ in range(64)) + packer.end()
    tracemalloc.start()
    try:
        assert decoded_body(encoding, raw, limit) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * limit + len(raw), f"{peak} bytes allocated on the way"
