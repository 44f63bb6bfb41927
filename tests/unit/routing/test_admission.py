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


@pytest.mark.parametrize("origin,refused", [
    (None, False), ("http://localhost:5173", False), ("http://127.0.0.1:8082", False), ("http://[::1]:3000", False),
    ("http://localhost.:8082", False), ("http://[::ffff:127.0.0.1]:8082", False), ("http://0.0.0.0:8082", False),
    ("http://app.localhost", False), ("https://ccswitch", False),
    ("https://evil.example", True), ("null", True), ("http://127.0.0.1.evil.example", True),
    ("http://localhost.evil.example", True), ("file://", True), ("chrome-extension://abc", True), ("", True),
])
def test_a_page_of_another_site_is_told_from_this_machines(origin, refused):
    from ccswitch.routing.admission import origin_problem
    headers = [("content-type", "application/json")] + ([("Origin", origin)] if origin is not None else [])
    problem = origin_problem(headers, frozenset({"ccswitch"}))
    assert (problem is not None) is refused
    if refused:
        assert problem[0] == 403 and "client_keys" in problem[1]


@pytest.mark.parametrize(("target", "headers", "refused"), [
    ("/v1/messages?beta=true", [("x-a", "plain"), ("x-b", "a\ttab inside"), ("x-c", "José")], None),
    ("/v1/messages", [("x-a", "a\x01b")], "control character"),
    ("/v1/messages", [("x-a", "a\x7f")], "control character"),
    ("/v1/messages", [("x-a", "a\nb")], "control character"),
    ("/v1/messages", [("x a", "b")], "control character"),          # a blank inside a name
    ("/v1/messages?q=a b", [], "path or query"),
    ("/v1/messages?q=\x1b", [], "path or query"),
    ("/v1/messages?q=\udc85", [], "not ASCII"),          # a raw byte that is no UTF-8, as mitmproxy reads it
    ("/v1/messages?q=é", [], "not ASCII"),
    ("/v1/messages?q=%C3%A9", [], None),
])
def test_a_head_http_cannot_carry_is_the_client_s_400(target, headers, refused):
    from ccswitch.routing.admission import head_problem
    problem = head_problem(target, headers)
    assert (problem is None) if refused is None else (problem[0] == 400 and refused in problem[1])


@pytest.mark.parametrize(("content_type", "size", "refused"), [
    ("", 10, None),                                   # none said: the JSON parser judges the body
    ("application/json; charset=utf-8", 10, None),
    ("application/vnd.api+json", 10, None),
    ("text/plain", 10, 415),
    ("application/json", 100, None),                  # exactly the limit
    ("application/json", 101, 413),
])
def test_content_type_and_size(content_type, size, refused):
    from ccswitch.routing.admission import body_problem
    problem = body_problem(content_type, size, 100)
    assert (problem is None) if refused is None else problem[0] == refused


def test_headers_of_exactly_the_limit_pass_and_one_byte_more_is_431():
    from ccswitch.routing.admission import MAX_HEADER_BYTES, head_problem
    exact = [("x-pad", "v" * (MAX_HEADER_BYTES - len("x-pad")))]
    assert head_problem("/v1/messages", exact) is None
    assert head_problem("/v1/messages", [("x-pad", exact[0][1] + "v")])[0] == 431
