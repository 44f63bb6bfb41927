"""Key text is scrubbed in every form a JSON encoder may write it in."""

import json

import pytest

from ccswitch.wire.redact import plain_ascii, quoted_keys, scrub, scrub_headers, without_quoted_keys

KEY = "sk-E/ee&1\u00e9+b<x>Z'secret9\U0001f600"


@pytest.mark.parametrize("written", [
    KEY,
    json.dumps(KEY)[1:-1],                                   # Python, ensure_ascii
    json.dumps(KEY, ensure_ascii=False)[1:-1],
    json.dumps(KEY)[1:-1].replace("/", "\\/"),               # PHP
    json.dumps(KEY)[1:-1].replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"),   # Go
    "sk-E/ee\\u00261\\u00E9\\u002Bb\\u003Cx\\u003EZ\\u0027secret9\\uD83D\\uDE00",        # .NET: upper-case hex
])
def test_a_key_is_scrubbed_however_it_was_escaped(written):
    body = json.dumps({"error": {"message": "x"}}).replace('"x"', f'"bad key {written}!"').encode("utf-8")
    assert scrub(body, [KEY]) == b'{"error": {"message": "bad key [redacted]!"}}'


def test_a_plain_key_is_scrubbed_and_short_text_is_left_alone():
    assert scrub(b"sk-plain-0123456789 and sk-plai", ["sk-plain-0123456789", "sk-plai"]) == \
        b"[redacted] and sk-plai"


def _every_other_char(key: str, as_form) -> str:
    return "".join(c if c.isalnum() else as_form(c) for c in key)


ECHOED = "sk-a/b+c=SECRETCANARY/Zz+9="


@pytest.mark.parametrize("written", [
    ECHOED.replace("-", "\\u002D"),                          # an escape no common encoder writes, all the same
    _every_other_char(ECHOED, lambda c: f"\\u{ord(c):04x}"),  # every such character, lower-case hex
    _every_other_char(ECHOED, lambda c: f"%{ord(c):02x}"),      # percent-encoded, lower case, `-` too
    _every_other_char(ECHOED, lambda c: f"%{ord(c):02X}"),
    _every_other_char(ECHOED, lambda c: f"&#x{ord(c):X};"),     # HTML character references
    _every_other_char(ECHOED, lambda c: f"&#{ord(c)};"),
    ECHOED.replace("/", "&#x2f;").replace("=", "%3d").replace("+", "\\u002b"),   # mixed
])
def test_a_key_is_scrubbed_in_url_and_html_forms_and_any_json_escape(written):
    body = f'<p>bad key {written}!</p>'.encode()
    assert scrub(body, [ECHOED]) == b"<p>bad key [redacted]!</p>"



PLAIN_KEY = "sk-test-UP/SECRET+key=0123456789abcdef"


@pytest.mark.parametrize("key", [PLAIN_KEY, "abcdefGHIJ0123456789"])
@pytest.mark.parametrize("as_form", [lambda c: f"\\u{ord(c):04x}", lambda c: f"\\u{ord(c):04X}",
                                     lambda c: f"%{ord(c):02X}", lambda c: f"%{ord(c):02x}",
                                     lambda c: f"\\u{ord(c):04x}" if ord(c) % 2 else f"%{ord(c):02X}"],
                         ids=["json-lower", "json-upper", "percent-upper", "percent-lower", "mixed"])
def test_a_key_with_every_character_escaped_is_scrubbed_too(key, as_form):
    # an echo that escapes letters and digits as well (an upstream built to get past the scrub)
    # reached the client, the ledger's raw usage and mitmdump's decoded views whole
    written = "".join(as_form(c) for c in key)
    body = f'{{"text": "k={written}", "note": "50% off"}}'.encode()
    assert scrub(body, [key]) == b'{"text": "k=[redacted]", "note": "50% off"}'

def test_text_that_only_shares_the_key_s_plain_run_is_left_alone():
    body = b"SECRETCANARY is a word here, and so is sk-a/b"
    assert scrub(body, [ECHOED]) == body


def test_an_eight_character_key_is_the_shortest_scrubbed_and_found():
    from ccswitch.wire.redact import holds_secret
    assert scrub(b"xx12345678yy", ["12345678"]) == b"xx[redacted]yy"
    assert holds_secret("a 12345678 b", ["12345678"]) and not holds_secret("a 1234567 b", ["1234567"])


def test_a_key_holding_a_backslash_is_found_json_escaped():
    assert scrub(json.dumps({"m": "ab\\cdefgh12"}).encode(), ["ab\\cdefgh12"]) == b'{"m": "[redacted]"}'


def test_credentials_are_read_whatever_the_letter_case_of_their_scheme():
    import base64

    from ccswitch.wire.redact import client_credential, credential_part, holding
    basic = base64.b64encode(b"u:sk-secret123").decode()
    assert holding([("authorization", f"BASIC {basic}")], ["sk-secret123"]) == [True]
    assert credential_part("Token sk-abcdef12") == "sk-abcdef12"
    assert client_credential([("authorization", "bearer sk-abcdef12")]) == "sk-abcdef12"


def test_a_credential_shown_as_the_placeholder_is_one_under_its_scheme_too():
    # an Authorization header put back as `Bearer <redacted>` still carries no key
    from ccswitch.wire.redact import is_placeholder
    assert is_placeholder("<redacted>") and is_placeholder("Bearer <redacted>")
    assert not is_placeholder("Bearer sk-abcdef12") and not is_placeholder("sk-<redacted>-x")


def test_the_withheld_credential_of_a_replay_is_named_by_header_whatever_its_case():
    from ccswitch.wire.redact import withheld_credential
    assert withheld_credential([("Authorization", "<redacted>")], "") == "Authorization"
    assert withheld_credential([("X-Api-Key", "<redacted>")], "") == "X-Api-Key"
    # a cookie or an account id shown so is left out on the way, not a missing key
    assert withheld_credential([("cookie", "<redacted>"), ("x-api-key", "sk-abcdef12")], "") is None
    assert withheld_credential([("cookie", "<redacted>"), ("chatgpt-account-id", "<redacted>")], "") is None


@pytest.mark.parametrize("query, withheld", [
    ("key=%3Credacted%3E", "?key"),                # as mitmproxy writes the redacted query
    ("api_key=<redacted>&x=1", "?api_key"),        # as a URL edited by hand may show it
    ("note=<redacted>", None),                     # no credential parameter
    ("key=sk-abcdef12&note=%3Credacted%3E", None),  # the key is real text
])
def test_the_withheld_credential_of_a_replay_in_its_query(query, withheld):
    from ccswitch.wire.redact import withheld_credential
    assert withheld_credential([], query) == withheld


def test_a_key_in_a_path_segment_is_redacted_however_it_is_encoded():
    from ccswitch.wire.redact import target_without
    key = "sk-test-client-Alice+/=42"
    assert target_without(f"/_ccswitch/status.json;key={key}", [key]) == "/_ccswitch/status.json;key=%3Credacted%3E"
    assert target_without("/a/sk-test-client-Alice%2B%2F%3D42/b?x=1", [key]) == "/a/%3Credacted%3E/b?x=1"
    assert target_without("/a/sk%2Dtest%2Dclient%2DAlice%2B%2F%3D42/b?x=1", [key]) == "/%3Credacted%3E?x=1"
    assert target_without(f"/v1/messages?key={key}&beta=true", [key]) == "/v1/messages?beta=true"
    assert target_without("/v1/messages?beta=true", [key]) == "/v1/messages?beta=true"


@pytest.mark.parametrize("body", [b'{"p": "KEY"}', b'{"p": "sk%2Dtest%2DRelay%2B9f8e7d6c5b4a"}',
                                  '{"p": "sk\\u002dtest-Relay+9f8e7d6c5b4a, \u00e9"}'.encode()])
def test_the_keys_a_request_may_quote_are_told_by_one_look_each_and_only_they_are_scrubbed(body):
    key, other = "sk-test-Relay+9f8e7d6c5b4a", "sk-test-Other-0a1b2c3d4e5f"
    body = body.replace(b"KEY", key.encode())
    keys = (key, other, "short")
    assert quoted_keys(body, keys) == [key]
    assert b"9f8e7d6c5b4a" not in scrub(body, quoted_keys(body, keys))
    assert quoted_keys(b'{"p": "sk-test-Relay"}', keys) == [] and quoted_keys(b"", keys) == []


@pytest.mark.parametrize(("text", "plain"), [
    (b'"sk-\\u0042ee"', b'"sk-Bee"'),
    (b'"\\u0073\\u006B-x"', b'"sk-x"'),
    (b'"a\\\\u0042"', b'"a\\\\u0042"'),               # an escaped backslash, then the letters u0042
    (b'"a\\\\\\u0042"', b'"a\\\\B"'),                 # an escaped backslash, then an escaped B
    (b'"\\u0022 \\u005C \\u007f \\u001b \\u00e9 \\ud83d\\ude00"',    # what must stay escaped
     b'"\\u0022 \\u005C \\u007f \\u001b \\u00e9 \\ud83d\\ude00"'),
    (b'"no escapes \\n"', b'"no escapes \\n"'),
    (b'"\\\\\\\\\\u0041 \\\\\\\\u0041"', b'"\\\\\\\\A \\\\\\\\u0041"'),   # 5 backslashes then u: 2 escaped, one escape
])
def test_plain_ascii_writes_escaped_printable_ascii_as_itself_and_means_the_same(text, plain):
    assert plain_ascii(text) == plain
    assert json.loads(plain) == json.loads(text)


def test_plain_ascii_calls_no_python_for_backslashes_and_escapes_it_keeps(monkeypatch):
    # Claude Code writes a terminal colour as \u001b and Windows paths as \\: a Python call
    # each, on the event loop, took ~50 ms a megabyte
    from ccswitch.wire import redact
    calls = []

    class Counted:
        def __init__(self, pattern):
            self.pattern = pattern

        def sub(self, write, text):
            return self.pattern.sub(lambda match: calls.append(match) or write(match), text)
    monkeypatch.setattr(redact, "_ASCII_ESCAPE", Counted(redact._ASCII_ESCAPE))
    body = json.dumps({"content": "C:\\Users\\dev\\src\\a.py \x1b[31merror\x1b[0m\n" * 1000}).encode()
    assert b"\\u001b" in body and body.count(b"\\\\") == 4000
    assert plain_ascii(body) == body and calls == []


def test_a_quoted_key_with_an_escaped_letter_is_found_once_written_plain():
    key = "sk-test-Relay+9f8e7d6c5b4a"
    body = b'{"p": "sk-test-Relay+9f8e7\\u0064" "6c5b4a"}'.replace(b'" "', b"")
    assert json.loads(body)["p"] == key and quoted_keys(body, (key,)) == []
    assert quoted_keys(plain_ascii(body), (key,)) == [key]


def test_an_upstreams_key_echoed_in_a_header_is_scrubbed_in_its_escaped_forms_too():
    key = "sk-charlie-CCCC5555cccc6666"
    sent = [("link", "<https://x.example/?k=sk%2dcharlie%2dCCCC5555cccc6666>"),
            ("x-echo", "sk%2Dcharlie%2DCCCC5555cccc6666"), ("x-own", key),
            ("x-escaped", "".join(f"\\u{ord(c):04x}" for c in key)), ("x-other", "plain 100%")]
    assert scrub_headers(sent, [key]) == [("link", "<https://x.example/?k=[redacted]>"), ("x-echo", "[redacted]"),
                                          ("x-own", "[redacted]"), ("x-escaped", "[redacted]"),
                                          ("x-other", "plain 100%")]


NESTED_KEY = "sk-upstream-secret-0002"


def test_a_key_escaped_one_level_down_is_scrubbed_and_the_rest_of_the_body_kept_as_written():
    # the nested pass wrote every `\\u00XX` of the body plain: a user's code quoting "\u0041"
    # reached the upstream as "A"
    code = 'print("\\u0041")'
    arguments = '{"cmd": "echo sk-upstream-secret-000\\u0032"}'
    body = json.dumps({"input": [{"role": "user", "content": code},
                                 {"type": "function_call", "arguments": arguments}]}).encode()
    out = json.loads(without_quoted_keys(body, (NESTED_KEY,)))
    assert out["input"][0]["content"] == code
    assert json.loads(out["input"][1]["arguments"])["cmd"] == "echo [redacted]"


def test_a_body_holding_no_text_of_any_key_is_read_no_further(monkeypatch):
    # Claude Code's bodies hold \u001b and Windows paths: no rewriting, no regex, for nothing
    from ccswitch.wire import redact
    monkeypatch.setattr(redact, "plain_ascii", lambda text: pytest.fail("read further"))
    body = json.dumps({"content": "C:\\src\\a.py \x1b[31m\\u0041" * 100}).encode()
    assert without_quoted_keys(body, (NESTED_KEY, "another-key-0123456789")) is None
