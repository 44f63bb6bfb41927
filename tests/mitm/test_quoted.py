"""Upstream keys a client quotes in a request's head: scrubbed from what goes upstream and from
the flow, its credentials left as they are (an `auth: client` upstream's are the client's own)."""

import pytest
from mitmproxy.test import tflow

from ccswitch.mitm.quoted import QuotedKeys
from ccswitch.wire.headers import from_wire
from tests.mitm.conftest import open_gateway
from tests.support.helpers import KEY_A, KEY_B

RULES = f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: b, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_B}'}}
  - {{name: own, protocol: anthropic, base_url: 'http://127.0.0.1:9', auth: client}}
routes: {{claude: [own, a, b]}}
"""


def test_a_key_in_the_head_goes_as_redacted_but_the_credentials_stay_the_clients(tmp_path):
    quoted = QuotedKeys(open_gateway(tmp_path, RULES), "request")
    flow = tflow.tflow()
    flow.request.path = f"/v1/messages?key={KEY_A}&dbg={KEY_B}&beta=true"
    flow.request.headers["x-api-key"] = KEY_A       # the client's own, the same key as a's
    flow.request.headers["x-debug"] = f"see {KEY_B}"
    headers = quoted.off_head(flow, from_wire(flow.request.headers.fields))
    assert dict(headers)["x-api-key"] == KEY_A and dict(headers)["x-debug"] == "see [redacted]"
    assert flow.request.headers["x-debug"] == "see [redacted]" and flow.request.headers["x-api-key"] == KEY_A
    assert flow.request.path == f"/v1/messages?key={KEY_A}&dbg=%5Bredacted%5D&beta=true"


@pytest.mark.parametrize("spelt", [
    lambda key: "".join(f"%{ord(c):02X}" for c in key),                  # every character percent-encoded
    lambda key: key[:3] + "%" + f"{ord(key[3]):02x}" + key[4:],           # one letter
    lambda key: "".join(f"\\u{ord(c):04x}" for c in key),               # JSON escapes in a header
    lambda key: "".join(f"&#{ord(c)};" for c in key)])                    # HTML references (in a header)
def test_a_key_in_the_head_spelt_otherwise_goes_as_redacted_too(tmp_path, spelt):
    quoted = QuotedKeys(open_gateway(tmp_path, RULES), "request")
    flow = tflow.tflow()
    in_url = "&" not in spelt(KEY_B)      # `&` and `#` part a URL: no query holds a key so
    flow.request.path = f"/v1/messages?dbg={spelt(KEY_B) if in_url else 'x'}&beta=true"
    flow.request.headers["x-debug"] = spelt(KEY_A)
    headers = quoted.off_head(flow, from_wire(flow.request.headers.fields))
    assert dict(headers)["x-debug"] == "[redacted]" == flow.request.headers["x-debug"]
    assert flow.request.path == f"/v1/messages?dbg={'%5Bredacted%5D' if in_url else 'x'}&beta=true"


def test_a_refused_body_that_inflates_past_the_limit_is_not_left_on_its_flow(tmp_path):
    import gzip
    quoted = QuotedKeys(open_gateway(tmp_path, RULES), "request")
    flow = tflow.tflow()
    flow.request.headers["content-encoding"] = "gzip"
    flow.request.raw_content = gzip.compress(f'{{"p": "{KEY_A}", "x": "'.encode() + b" " * 200_000 + b'"}')
    quoted.off_refused(flow, max_body=100_000)
    assert flow.request.raw_content == b"" and "content-encoding" not in flow.request.headers


def test_a_head_quoting_no_key_is_left_as_it_is(tmp_path):
    quoted = QuotedKeys(open_gateway(tmp_path, RULES), "request")
    flow = tflow.tflow()
    before = from_wire(flow.request.headers.fields)
    assert quoted.off_head(flow, before) is before


def test_a_key_with_a_letter_escaped_inside_a_tool_calls_arguments_goes_as_redacted(tmp_path):
    # `arguments` is JSON in a JSON string: `\\u0066` there is an escaped `f` to a relay that
    # reads it (as ccswitch's conversion does), sent to an upstream of the client's own API too
    import json
    quoted = QuotedKeys(open_gateway(tmp_path, RULES), "request")
    at = next(i for i, c in enumerate(KEY_A) if c.isalpha())
    inner = json.dumps({"token": KEY_A[:at] + f"\\u{ord(KEY_A[at]):04x}" + KEY_A[at + 1:], "path": "C:\\\\u0041"})
    inner = inner.replace("\\\\u", "\\u", 1)      # the key's escape one level down, as a JSON writer wrote it
    assert json.loads(inner)["token"] == KEY_A
    body = json.dumps({"model": "m", "tools_said": {"arguments": inner}, "other": KEY_B}).encode()
    sent = json.loads(quoted.without(body))
    assert sent["other"] == "[redacted]" and json.loads(sent["tools_said"]["arguments"])["token"] == "[redacted]"
    assert json.loads(sent["tools_said"]["arguments"])["path"] == json.loads(inner)["path"]


@pytest.mark.parametrize("read", [True, False])
def test_a_refused_body_past_the_limit_or_refused_unread_is_not_looked_through_nor_kept(tmp_path, monkeypatch, read):
    # refused for its client key, anyone may send one: a small body inflating to the limit held
    # the event loop for seconds
    import gzip

    from ccswitch.mitm import quoted as module
    monkeypatch.setattr(module, "decoded_body", lambda *_: pytest.fail("inflated"))
    quoted = QuotedKeys(open_gateway(tmp_path, RULES), "request")
    flow = tflow.tflow()
    if read:
        flow.request.raw_content = f'{{"p": "{KEY_A}", "x": "'.encode() + b" " * 200_000 + b'"}'
    else:
        flow.request.headers["content-encoding"] = "gzip"
        flow.request.raw_content = gzip.compress(f'{{"p": "{KEY_A}"}}'.encode())
    quoted.off_refused(flow, max_body=100_000, read=read)
    assert flow.request.raw_content == b"" and "content-encoding" not in flow.request.headers


def test_a_headers_other_bytes_stay_as_they_were_on_the_flow(tmp_path):
    quoted = QuotedKeys(open_gateway(tmp_path, RULES), "request")
    flow = tflow.tflow()
    flow.request.headers.fields = (*flow.request.headers.fields, (b"x-debug", b"caf\xe9 " + KEY_A.encode()))
    quoted.off_head(flow, from_wire(flow.request.headers.fields))
    assert dict(flow.request.headers.fields)[b"x-debug"] == b"caf\xe9 [redacted]"     # not UTF-8's \xc3\xa9


def test_a_client_whose_own_key_is_an_upstreams_has_its_head_left_as_it_is(tmp_path, caplog):
    """The credentials are not looked through: a client that sends an upstream's key as its own
    (the same key in its environment and the rules) costs no scrub of every header."""
    quoted = QuotedKeys(open_gateway(tmp_path, RULES), "request")
    flow = tflow.tflow()
    flow.request.headers["x-api-key"] = KEY_A
    flow.request.headers["authorization"] = f"Bearer {KEY_B}"
    before = from_wire(flow.request.headers.fields)
    path = flow.request.path
    assert quoted.off_head(flow, before) is before
    assert flow.request.path == path and flow.request.headers["x-api-key"] == KEY_A
    assert "quoted an upstream's key" not in caplog.text


def test_a_key_spelt_otherwise_beside_an_upstreams_key_as_the_credential_goes_as_redacted(tmp_path):
    quoted = QuotedKeys(open_gateway(tmp_path, RULES), "request")
    flow = tflow.tflow()
    flow.request.headers["x-api-key"] = KEY_A
    flow.request.headers["x-debug"] = "".join(f"%{ord(c):02X}" for c in KEY_B)
    headers = quoted.off_head(flow, from_wire(flow.request.headers.fields))
    assert dict(headers)["x-debug"] == "[redacted]" == flow.request.headers["x-debug"]
    assert dict(headers)["x-api-key"] == KEY_A == flow.request.headers["x-api-key"]
