"""Header text as wire bytes: `sendable` is exactly "every character below U+0100"."""

import pytest

from ccswitch.wire.headers import sendable, to_wire


@pytest.mark.parametrize("text", ["", "sk-ant-123", "café", "\x00\x7f\x80\xff", "caf\u00e9\u0100", "key\u2019",
                                  "\ud800", "emoji \U0001f600", "ÿ" * 50])
def test_sendable_is_every_character_below_u0100(text):
    assert sendable(text) == all(ord(c) < 256 for c in text)
    if sendable(text):
        assert to_wire([("x", text)]) == [(b"x", text.encode("latin-1"))]
