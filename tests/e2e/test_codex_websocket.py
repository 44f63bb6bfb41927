"""Codex CLI's Responses WebSocket carried by ccswitch (real `codex exec`, HTTPS_PROXY and
reverse mode): a multi-turn run with a tool call, failover mid-conversation with the full input
and no foreign previous_response_id, one ledger row per turn."""

import json
import sqlite3
import time

import pytest
from mitmproxy import io

from tests.e2e.test_cli_clients import CODEX, client_env, run
from tests.e2e.test_failover import wait_rows
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.mock_upstream import MockUpstream, ok, status
from tests.support.proxy_process import Proxy

pytestmark = pytest.mark.skipif(not CODEX.exists(), reason="run `npm ci --prefix tests/clients` to install the real CLIs")

RULES = f"""
failover: {{threshold: 3, hold_back: 2s}}
upstreams:
  - {{name: codex-a, protocol: openai-responses, base_url: '{{a}}/v1', api_key: '{KEY_A}'}}
  - {{name: codex-b, protocol: openai-responses, base_url: '{{b}}/v1', api_key: '{KEY_B}'}}
routes: {{codex: [codex-a, codex-b]}}
"""
TOOL = ("shell", {"command": ["echo", "hello"]})


def turns(mock):
    return [r.json for r in mock.requests if r.protocol]


def websocket_frames(flows_path):
    with open(flows_path, "rb") as f:
        flows = [fl for fl in io.FlowReader(f).stream() if fl.websocket]
    assert flows, "no WebSocket flow was recorded"
    sent = [json.loads(m.content) for fl in flows for m in fl.websocket.messages if m.from_client]
    return flows, sent


def test_a_bridged_run_with_a_tool_call_fails_over_mid_conversation_with_the_full_input(tmp_path):
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.replace("{a}", a.base_url).replace("{b}", b.base_url))
        flows = tmp_path / "flows.mitm"
        a.script(ok(tool=TOOL), status(503))            # turn 1 on a (a tool call), turn 2: a fails
        with Proxy(rules, tmp_path, extra_args=("--set", "ccswitch_offline=true", "-w", str(flows))) as proxy:
            env = {**client_env(proxy, tmp_path / "home"), "CODEX_API_KEY": CLIENT_KEY}
            began = time.monotonic()
            done, _ = run([str(CODEX), "exec", "--skip-git-repo-check", "-c", "analytics.enabled=false",
                           "run echo hello"], env, tmp_path)
            assert done.returncode == 0, done.stderr[-2000:]
            assert "Hello from mock B" in done.stdout
            wait_rows(proxy, 2)
            assert "codex websocket turn 2 " in proxy.log() and "failed over: codex-a: 503" in proxy.log()
        first_post = min(r.time for r in a.requests if r.protocol) - (time.time() - (time.monotonic() - began))
        first, second = turns(a)[0], turns(b)[0]
        # the second turn reached b as a full request: turn 1's input, its tool call and the tool's output
        kinds = [item.get("type") for item in second["input"]]
        assert "function_call" in kinds and "function_call_output" in kinds
        assert second["input"][: len(first["input"])] == first["input"]
        for body in (first, second):
            assert "previous_response_id" not in body and "generate" not in body and "type" not in body
            assert body["stream"] is True and body["store"] is False
        rows = sqlite3.connect(proxy.usage_db).execute(
            "SELECT endpoint, stream, status, upstream, attempts, input_tokens FROM requests ORDER BY id").fetchall()
        assert rows == [("websocket", 1, 200, "codex-a", 1, 25), ("websocket", 1, 200, "codex-b", 2, 25)]
        recorded, sent = websocket_frames(flows)
        creates = [f for f in sent if f.get("type") == "response.create"]
        assert any(f.get("previous_response_id") for f in creates), "Codex sent no incremental turn"
        assert "turn 2: codex-a: 503" in recorded[0].comment and "codex-b: 200" in recorded[0].comment
        # the URL Codex asked for, not the bridge's loopback address and ticket
        shown = recorded[0].request
        assert shown.pretty_host in ("api.openai.com", "chatgpt.com") and shown.path.endswith("/responses"), shown.url
        assert "x-ccswitch-socket" not in shown.headers and shown.headers["host"] == shown.pretty_host
    assert 0 < first_post < 10


def sealed_reasoning(body) -> list:
    return [item.get("encrypted_content") for item in body["input"]
            if item.get("type") == "reasoning" and item.get("encrypted_content")]


def test_a_conversation_back_from_a_failover_takes_its_upstream_s_own_reasoning_again(tmp_path):
    """a → b → a in one `codex exec`: each account's sealed reasoning goes only to that account,
    and a's own comes back to it after b served a turn."""
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.replace("{a}", a.base_url).replace("{b}", b.base_url))
        a.script(ok(tool=TOOL, sealed="ENC-A-1"), status(503), ok(sealed="ENC-A-2"))
        # the session is bound to b once b serves it: b's failure sends turn 3 back to a
        b.script(ok(tool=("shell", {"command": ["echo", "again"]}), sealed="ENC-B-1"), status(503))
        with Proxy(rules, tmp_path, extra_args=("--set", "ccswitch_offline=true")) as proxy:
            env = {**client_env(proxy, tmp_path / "home"), "CODEX_API_KEY": CLIENT_KEY}
            done, _ = run([str(CODEX), "exec", "--skip-git-repo-check", "-c", "analytics.enabled=false",
                           "run echo hello"], env, tmp_path)
            assert done.returncode == 0, done.stderr[-2000:]
            assert "Hello from mock A" in done.stdout
            wait_rows(proxy, 3)
        assert [sealed_reasoning(body) for body in turns(a)] == [[], ["ENC-A-1"], ["ENC-A-1"]]
        assert [sealed_reasoning(body) for body in turns(b)] == [[], ["ENC-B-1"]]
        rows = sqlite3.connect(proxy.usage_db).execute(
            "SELECT status, upstream, attempts FROM requests ORDER BY id").fetchall()
        assert rows == [(200, "codex-a", 1), (200, "codex-b", 2), (200, "codex-a", 2)]


def provider_env(proxy: Proxy, home, settings: str) -> dict:
    """Codex pointed at the reverse listener as a provider of its own (no HTTPS_PROXY), with
    `settings` for that provider."""
    env = {**client_env(proxy, home), "CODEX_API_KEY": CLIENT_KEY}
    env.pop("HTTPS_PROXY")
    (home / ".codex" / "config.toml").write_text(
        'model_provider = "ccswitch"\n[model_providers.ccswitch]\nname = "ccswitch"\n'
        f'base_url = "{proxy.reverse_url}/v1"\nwire_api = "responses"\nenv_key = "CODEX_API_KEY"\n' + settings)
    return env


def test_reverse_mode_with_a_websocket_provider(tmp_path):
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.replace("{a}", a.base_url).replace("{b}", b.base_url))
        with Proxy(rules, tmp_path) as proxy:
            env = provider_env(proxy, tmp_path / "home", "supports_websockets = true\n")
            done, _ = run([str(CODEX), "exec", "--skip-git-repo-check", "-c", "analytics.enabled=false", "say hi"],
                          env, tmp_path)
            assert done.returncode == 0, done.stderr[-2000:]
            assert "Hello from mock A" in done.stdout
            wait_rows(proxy, 1)
            assert "WebSocket text message" in proxy.log()     # it came over the socket, not a POST
        rows = sqlite3.connect(proxy.usage_db).execute("SELECT endpoint, upstream FROM requests").fetchall()
        assert rows == [("websocket", "codex-a")]


def test_a_bridged_socket_gets_a_close_frame_when_the_proxy_stops(tmp_path):
    # the bridge's 1001 must pass through mitmproxy before it closes its client connections:
    # Codex reconnects on a close frame; a cut socket (1006) is an error to it
    import socket

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.replace("{a}", a.base_url).replace("{b}", b.base_url))
        proxy = Proxy(rules, tmp_path).start()
        try:
            ws = WSConnection(ConnectionType.CLIENT)
            with socket.create_connection(("127.0.0.1", proxy.reverse_port), timeout=10) as sock:
                sock.sendall(ws.send(Request(host="127.0.0.1", target="/v1/responses")))
                events = []
                while not any(isinstance(e, AcceptConnection) for e in events):
                    ws.receive_data(sock.recv(65536))
                    events += list(ws.events())
                proxy.stop()                        # SIGTERM, and waits for the process to end
                while data := sock.recv(65536):
                    ws.receive_data(data)
                    events += list(ws.events())
                closes = [e for e in events if isinstance(e, CloseConnection)]
        finally:
            proxy.stop()
    assert [(c.code, c.reason) for c in closes] == [(1001, "ccswitch is shutting down")]


@pytest.mark.parametrize("websocket", [True, False])
def test_codex_shows_why_a_stream_broke_after_its_first_events(tmp_path, websocket):
    """Codex reads a failed stream's reason from `response.failed` only: an `error` event left it
    saying "stream closed before response.completed", on either transport."""
    from tests.support.mock_upstream import cut_after
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.replace("{a}", a.base_url).replace("{b}", b.base_url).replace("hold_back: 2s",
                                                                                              "hold_back: 0s"))
        a.default = cut_after(4)        # response.created … the first text, then the connection drops
        with Proxy(rules, tmp_path) as proxy:
            env = provider_env(proxy, tmp_path / "home", f"supports_websockets = {str(websocket).lower()}\n"
                               "stream_max_retries = 1\nrequest_max_retries = 0\n")
            done, _ = run([str(CODEX), "exec", "--skip-git-repo-check", "-c", "analytics.enabled=false", "say hi"],
                          env, tmp_path)
        # (its retry may find b: what matters is the reason it printed for the break)
        assert "stream disconnected before completion: upstream codex-a: " in done.stderr, done.stderr[-3000:]
        assert "stream closed before response.completed" not in done.stderr


def test_codex_waits_out_a_short_rate_limit_told_in_band_and_goes_on(tmp_path):
    """An in-band error carries the headers its HTTPS answer would have (`retry-after`): without
    them Codex stopped at once on a 429 ("exceeded retry limit") where over HTTPS it waits."""
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.replace("{a}", a.base_url).replace("{b}", b.base_url))
        a.script(status(429, headers={"retry-after": "2"}))
        b.script(status(429, headers={"retry-after": "2"}))
        with Proxy(rules, tmp_path, extra_args=("--set", "ccswitch_offline=true")) as proxy:
            env = {**client_env(proxy, tmp_path / "home"), "CODEX_API_KEY": CLIENT_KEY}
            done, _ = run([str(CODEX), "exec", "--skip-git-repo-check", "-c", "analytics.enabled=false", "say hi"],
                          env, tmp_path)
            assert done.returncode == 0, done.stderr[-2000:]
            assert "Hello from mock A" in done.stdout
            wait_rows(proxy, 2)
        rows = sqlite3.connect(proxy.usage_db).execute("SELECT endpoint, status FROM requests ORDER BY id").fetchall()
        assert rows == [("websocket", 429), ("websocket", 200)]


def test_a_compressed_message_cannot_inflate_past_its_size_in_ccswitch_s_memory(tmp_path):
    """permessage-deflate was agreed on the client's side: mitmproxy inflated a 300 KB message to
    300 MB (and 1 MB to 5 GB under mitmweb) before the 413. No compression is agreed now: the
    101 says none, and a compressed frame is a protocol error, answered by a close, not inflated."""
    import contextlib
    import socket
    import zlib

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request
    from wsproto.extensions import PerMessageDeflate
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.replace("{a}", a.base_url).replace("{b}", b.base_url))
        with Proxy(rules, tmp_path) as proxy:
            ws = WSConnection(ConnectionType.CLIENT)
            with socket.create_connection(("127.0.0.1", proxy.reverse_port), timeout=10) as sock:
                sock.sendall(ws.send(Request(host="127.0.0.1", target="/v1/responses",
                                             extensions=[PerMessageDeflate()])))
                events = []
                while not any(isinstance(e, AcceptConnection) for e in events):
                    ws.receive_data(sock.recv(65536))
                    events += list(ws.events())
                accepted = next(e for e in events if isinstance(e, AcceptConnection))
                squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
                bomb = squeeze.compress(b'{"type":"response.create","model":"gpt-5","input":"' + b"a" * (64 << 20))
                bomb += squeeze.flush(zlib.Z_SYNC_FLUSH)[:-4]
                assert len(bomb) < 200_000
                # one final text frame, RSV1 set (compressed), masked as a client's must be
                mask = b"\x01\x02\x03\x04"
                size = (bytes([0x80 | 126]) + len(bomb).to_bytes(2, "big") if len(bomb) < 1 << 16
                        else bytes([0x80 | 127]) + len(bomb).to_bytes(8, "big"))
                head = bytes([0x80 | 0x40 | 0x1]) + size + mask
                sock.sendall(head + bytes(c ^ mask[i % 4] for i, c in enumerate(bomb)))
                sock.settimeout(10)
                with contextlib.suppress(TimeoutError):    # inflated, the message is refused, the socket kept
                    while data := sock.recv(65536):
                        ws.receive_data(data)
                        events += list(ws.events())
                closes = [e for e in events if isinstance(e, CloseConnection)]
            rss_kb = int(next(line.split()[1] for line in open(f"/proc/{proxy.proc.pid}/status")
                              if line.startswith("VmHWM:")))
    assert accepted.extensions == []
    assert [c.code for c in closes] == [1002]                   # protocol error: RSV1 without the extension
    assert rss_kb < 250_000, rss_kb     # its peak: ~95 MB; 490 MB when the 64 MB message was inflated


def test_a_socket_closed_on_its_last_event_is_saved_with_that_turn_s_line(tmp_path):
    """Codex closes the socket on `response.completed`, before the turn has ended (its upstream's
    body end, its row): the flow mitmproxy's `-w` saves at the socket's end had no line for it."""
    import socket

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

    from tests.support.mock_upstream import stall_after
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.replace("{a}", a.base_url).replace("{b}", b.base_url))
        a.script(stall_after(1000, 1.0))      # every event, then a second before the body's end
        flows = tmp_path / "flows.mitm"
        with Proxy(rules, tmp_path, extra_args=("-w", str(flows))) as proxy:
            ws = WSConnection(ConnectionType.CLIENT)
            with socket.create_connection(("127.0.0.1", proxy.reverse_port), timeout=10) as sock:
                sock.sendall(ws.send(Request(host="127.0.0.1", target="/v1/responses")))
                events: list = []
                while not any(isinstance(e, AcceptConnection) for e in events):
                    ws.receive_data(sock.recv(65536))
                    events += list(ws.events())
                sock.sendall(ws.send(TextMessage(json.dumps({"type": "response.create", "model": "gpt-5",
                                                             "input": "hi"}))))
                texts = ""
                while '"response.completed"' not in texts:
                    ws.receive_data(sock.recv(65536))
                    texts += "".join(e.data for e in ws.events() if isinstance(e, TextMessage))
                sock.sendall(ws.send(CloseConnection(code=1000)))
                ws.receive_data(sock.recv(65536))
            wait_rows(proxy, 1)
        with open(flows, "rb") as f:
            [saved] = [fl for fl in io.FlowReader(f).stream() if fl.websocket]
    assert "turn 1: codex-a: 200" in saved.comment, saved.comment
