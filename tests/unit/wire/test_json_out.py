"""JSON ccswitch writes (to upstreams, clients, hooks, the live page) always encodes to UTF-8."""

import json

import pytest

from ccswitch.wire.exchange import client_json, json_bytes, json_text


@pytest.mark.parametrize("write", [lambda v: json_text(v).encode(), json_bytes], ids=["text", "bytes"])
def test_other_scripts_stay_as_they_are_and_a_lone_surrogate_is_escaped(write):
    assert write({"t": "Tōkyō 🌤"}) == '{"t":"Tōkyō 🌤"}'.encode()
    out = write({"t": "Tōkyō a\ud83db"})
    assert out == b'{"t":"T\\u014dky\\u014d a\\ud83db"}' and json.loads(out) == {"t": "Tōkyō a\ud83db"}


def test_the_readable_form_keeps_json_dumps_spacing():
    assert json_bytes({"a": [1, 2]}, compact=False) == b'{"a": [1, 2]}'


@pytest.mark.parametrize("text,why", [
    ('{"t": NaN}', "NaN is not a JSON value"), ('{"t": -Infinity}', "-Infinity is not a JSON value"),
    ('{"t": 1e400}', "the number 1e400 is out of range"), ('{"t": -2.5E+999}', "out of range"),
])
def test_a_clients_json_is_read_as_the_standard_has_it(text, why):
    # Python's reader takes these; a renamed body would then go upstream as `NaN` / `Infinity`
    with pytest.raises(ValueError, match=why):
        client_json(text.encode())


def test_a_clients_json_is_otherwise_read_as_json_loads_reads_it():
    for raw in (b'{"t": 1e300, "n": 12345678901234567890123, "s": "\\ud83d", "x": 0.5}',
                '\ufeff{"caf\u00e9": 1}'.encode("utf-8")):
        assert client_json(raw) == json.loads(raw)
    for other in ('{"model": "caf\xe9"}'.encode("latin-1"), '{"a": [1]}'.encode("utf-16")):
        with pytest.raises(UnicodeDecodeError):      # UTF-8 only: json.loads reads UTF-16 too
            client_json(other)


def test_a_clients_raw_surrogate_bytes_and_long_numbers_are_read_as_json_loads_reads_them():
    # json.loads takes a surrogate encoded in the bytes themselves, and reads a number whole
    for raw in (b'{"s": "\xed\xa0\x80"}', b'{"n": 1' + b"0" * 60 + b'.5}'):
        assert client_json(raw) == json.loads(raw)
