"""What a person inspecting flows sees (mitmweb and `mitmdump -w` show the same flow objects):
the streamed answer kept on the flow, the body the upstream really got, a converted request
named so, one console line per failover, and Codex's WebSocket upgrade not counted as an error."""

import json
import sqlite3

import httpx
from mitmproxy import io

from tests.e2e.test_failover import wait_rows
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, status
from tests.support.proxy_process import Proxy

BODY = {"model": "claude-client", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def test_flows_show_the_stream_the_sent_body_conversions_and_failovers(tmp_path):
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        rules.write_text(f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}', models: {{"claude-client": "claude-upstream"}}}}
  - {{name: b, protocol: anthropic, base_url: '{b.base_url}', api_key: '{KEY_B}'}}
  - {{name: codex-a, protocol: openai-responses, base_url: '{a.base_url}/v1', api_key: '{KEY_A}'}}
routes: {{claude: [a, b], chat: [a], codex: [codex-a]}}
codex_websocket: refuse
""")
        flows = tmp_path / "flows.mitm"
        proxy = Proxy(rules, tmp_path, extra_args=("-w", str(flows), "--set", "ccswitch_keep_stream=300"))
        with proxy, httpx.Client(timeout=10) as client:
            headers = {"x-api-key": CLIENT_KEY}
            streamed = client.post(proxy.reverse_url + "/v1/messages", json=BODY, headers=headers).text
            a.script(status(529))
            client.post(proxy.reverse_url + "/v1/messages", json={**BODY, "stream": False}, headers=headers)
            client.post(proxy.reverse_url + "/v1/chat/completions", headers=headers,
                        json={"model": "claude-client", "messages": [{"role": "user", "content": "hi"}]})
            upgrade = client.get(proxy.reverse_url + "/v1/responses",
                                 headers={**headers, "upgrade": "websocket", "connection": "Upgrade"})
            assert upgrade.status_code == 426
            wait_rows(proxy, 3)
            log = proxy.log()
        with open(flows, "rb") as f:
            saved = list(io.FlowReader(f).stream())
    first, failed_over, chat, websocket = saved
    # the streamed answer is on the flow (the first 300 bytes of it), not "Content is missing"
    assert first.response.content == streamed.encode()[:300]
    assert first.response.headers["x-ccswitch-kept"] == f"first 300 of {len(streamed.encode())} bytes"
    # the request tab shows what the upstream got; the client's body is kept in the metadata
    assert json.loads(first.request.content)["model"] == "claude-upstream"
    assert json.loads(first.metadata["ccswitch"]["client_body"])["model"] == "claude-client"
    # the comment: no "529 HTTP 529"; one console line per failover
    assert "a: 529 (" in failed_over.comment and "HTTP 529" not in failed_over.comment
    assert "failed over: a: 529" in log and "b: 200" in log
    # a converted request says so
    assert "chat → anthropic" in chat.comment
    # Codex's WebSocket upgrade: answered, named, and not a request in the ledger
    assert "WebSocket declined" in websocket.comment
    conn = sqlite3.connect(proxy.usage_db)
    assert conn.execute("SELECT count(*) FROM requests WHERE endpoint = 'websocket'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM requests WHERE error IS NOT NULL").fetchone()[0] == 0
    conn.close()
