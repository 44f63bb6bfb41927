"""JSON ccswitch writes (to upstreams, clients, hooks, the live page) always encodes to UTF-8."""

import json

import pytest

from ccswitch.wire.exchange import json_bytes, json_text


@pytest.mark.parametrize("write", [lambda v: json_text(v).encode(), json_bytes], ids=["text", "bytes"])
def test_other_scripts_stay_as_they_are_and_a_lone_surrogate_is_escaped(write):
    assert write({"t": "Tōkyō 🌤"}) == '{"t":"Tōkyō 🌤"}'.encode()
    out = write({"t": "Tōkyō a\ud83db"})
    assert out == b'{"t":"T\\u014dky\\u014d a\\ud83db"}' and json.loads(out) == {"t": "Tōkyō a\ud83db"}


def test_the_readable_form_keeps_json_dumps_spacing():
    assert json_bytes({"a": [1, 2]}, compact=False) == b'{"a": [1, 2]}'
