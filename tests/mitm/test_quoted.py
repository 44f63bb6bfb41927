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
