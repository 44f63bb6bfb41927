"""A client's unfinished head: bounded, and never quoted in mitmproxy's log."""

import logging

import pytest

from ccswitch.mitm.head_guard import HeadsNotLogged


@pytest.mark.parametrize("said", ["Client closed connection before completing request headers",
                                  "Unexpected data from server", "unexpected server response"])
def test_mitmproxys_lines_quoting_a_heads_bytes_keep_their_words_not_the_bytes(said):
    record = logging.LogRecord("mitmproxy.proxy.server", logging.INFO, __file__, 1,
                               f"{said}: " + repr(b"POST / HTTP/1.1\r\nx-api-key: sk-secret-0001\r\n"), None, None)
    assert HeadsNotLogged().filter(record)
    assert record.getMessage().startswith(f"{said}: ") and "sk-secret" not in record.getMessage()
    assert record.getMessage().endswith("characters of bytes, not shown (a head holds credentials)")


def test_other_lines_pass_as_they_are():
    record = logging.LogRecord("mitmproxy.proxy.server", logging.INFO, __file__, 1, "client connect %s", ("x",), None)
    assert HeadsNotLogged().filter(record) and record.getMessage() == "client connect x"
