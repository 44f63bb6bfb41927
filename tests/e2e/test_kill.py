"""A flow killed in mitmweb mid-request: its client's request goes nowhere (the connection
dropped, never an answer of mitmproxy's own that a client SDK would retry), the flow says
`Connection killed.`, and the ledger `killed`, before the answer's first byte and after."""

import sqlite3

import httpx
import pytest
from mitmproxy import io

from tests.e2e.test_failover import wait_rows
from tests.support import REPO
from tests.support.helpers import CLIENT_KEY, KEY_A
from tests.support.mock_upstream import MockUpstream, slow_stream, stall_after
from tests.support.proxy_process import Proxy

KILLER = REPO / "tests" / "support" / "flow_killer.py"
BODY = {"model": "claude-x", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("behaviour", "bytes_first"), [
    (stall_after(1, 5), False),      # held back: nothing reached the client yet
    (slow_stream(40, 0.1), True),    # committed: the answer's first events are the client's
])
def test_a_stream_killed_in_mitmproxy_goes_nowhere_and_says_so(tmp_path, behaviour, bytes_first):
    with MockUpstream("A") as a:
        a.default = behaviour
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
failover: {{hold_back: 10s}}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
""")
        flows = tmp_path / "flows.mitm"
        proxy = Proxy(rules, tmp_path, extra_args=("-s", str(KILLER), "-w", str(flows)))
        received = b""
        with proxy, httpx.Client(timeout=10) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                with client.stream("POST", proxy.reverse_url + "/v1/messages", json=BODY,
                                   headers={"x-api-key": CLIENT_KEY, "x-test-kill-after": "1"}) as r:
                    for piece in r.iter_raw():
                        received += piece
            wait_rows(proxy, 1)
            conn = sqlite3.connect(proxy.usage_db)
            rows = conn.execute("SELECT r.error, a.error FROM requests r JOIN attempts a USING (request_id)").fetchall()
            conn.close()
        with open(flows, "rb") as f:
            (killed,) = list(io.FlowReader(f).stream())
    assert bool(received) == bytes_first and b"502" not in received
    assert killed.error is not None and killed.error.msg == "Connection killed."
    assert rows == [("killed", "killed")]
    assert "killed" in killed.comment
