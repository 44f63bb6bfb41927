"""Bad input through the real proxy: each gets a clear error in the client's API
format, nothing crashes, nothing reaches an upstream, and no key leaks anywhere."""

import gzip
import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mitmproxy import io

from tests.support.mock_upstream import MockUpstream, ok, status
from tests.support.proxy_process import Proxy

# distinctive fake keys: the secrets scan looks for them everywhere afterwards
UPSTREAM_KEY = "fake-ant-UPSTREAMKEY-7f3a9c1e5b"
CHAT_KEY = "fake-CHATUPSTREAM-2d8e4f6a1c"
CLIENT_KEY = "ccsw-FAKECLIENTKEY-9b1d3f5e7a"
SECRETS = (UPSTREAM_KEY, CHAT_KEY, CLIENT_KEY)
GOOD = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    with MockUpstream("A") as a:
        rules = tmp / "rules.yaml"
        rules.write_text(f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{UPSTREAM_KEY}',
     headers: {{x-relay-user: "José"}}}}
  - {{name: c, protocol: openai-chat, base_url: '{a.base_url}/v1', api_key: '{CHAT_KEY}'}}
routes: {{claude: [a], chat: [a]}}
""")
        proxy = Proxy(rules, tmp, extra_args=("-w", str(tmp / "flows.mitm")))
        with proxy:
            yield proxy, a, tmp


@pytest.fixture(autouse=True)
def clean(world):
    world[1].clear()


def post(proxy, path="/v1/messages", content=None, headers=None, key=CLIENT_KEY):
    h = {"content-type": "application/json", **({"x-api-key": key} if key else {}), **(headers or {})}
    return httpx.post(proxy.reverse_url + path, content=content if content is not None else json.dumps(GOOD),
                      headers=h, timeout=30)


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)
        s.settimeout(10)
        out = b""
        while b"\r\n\r\n" not in out or len(out.split(b"\r\n\r\n", 1)[1]) < 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def anthropic_error(r: httpx.Response, status: int, needle: str):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and needle in body["error"]["message"], body


@pytest.mark.parametrize("content,needle", [
    (b"{not json", "not valid JSON"),
    ('{"model": "caf\xe9"}'.encode("latin-1"), "not UTF-8 JSON"),
    (b'{"model":"m","x":' + b"[" * 50000 + b"]" * 50000 + b"}", "nested too deeply"),
    (b"[]", "JSON object"),
    (json.dumps({"max_tokens": 5, "messages": []}).encode(), "names no model"),
])
def test_bad_bodies(world, content, needle):
    proxy, a, _ = world
    anthropic_error(post(proxy, content=content), 400, needle)
    assert not [r for r in a.requests if r.protocol]


def test_wrong_content_type(world):
    proxy, a, _ = world
    anthropic_error(post(proxy, headers={"content-type": "text/plain"}), 415, "content-type")


def test_fifty_megabyte_body(world):
    proxy, a, _ = world
    big = json.dumps({**GOOD, "pad": "x" * (50 * 1024 * 1024)}).encode()
    anthropic_error(post(proxy, content=big), 413, "too large")


def test_gzip_bomb_is_judged_by_its_decoded_size(world):
    proxy, _, _ = world
    bomb = gzip.compress(json.dumps({**GOOD, "pad": "0" * (40 * 1024 * 1024)}).encode())
    assert len(bomb) < 1024 * 1024
    anthropic_error(post(proxy, content=bomb, headers={"content-encoding": "gzip"}), 413, "decoded")


def test_bad_and_missing_client_keys(world):
    proxy, a, _ = world
    anthropic_error(post(proxy, key="sk-wrong"), 401, "client key")
    anthropic_error(post(proxy, key=None), 401, "client key")
    r = post(proxy, path="/v1/chat/completions", key="sk-wrong",
             content=json.dumps({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}))
    assert r.status_code == 401 and "client key" in r.json()["error"]["message"]   # OpenAI format


@pytest.mark.parametrize("body,needle", [
    # valid Chat requests an Anthropic upstream cannot express; they once raised inside the
    # converter, and mitmproxy then sent them, client key and all, to the host named
    ({"reasoning_effort": "high", "messages": [{"role": "system", "content": "Be brief."}]}, "non-empty"),
    ({"model": "claude-x-thinking", "messages": [{"role": "user", "content": ""}]}, "non-empty"),
    ({"messages": [{"role": "assistant", "tool_calls": ["x"]}, {"role": "user", "content": "hi"}]}, "tool calls"),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": "s"}},
     "json_schema must be an object"),
])
def test_chat_bodies_no_upstream_can_take_are_400_in_openai_format(world, body, needle):
    proxy, a, _ = world
    r = post(proxy, path="/v1/chat/completions", content=json.dumps({"model": "claude-x", **body}),
             key=None, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and needle in error["message"], error
    assert not a.requests


def test_a_lone_surrogate_escape_is_routed_as_it_came(world):
    # a JavaScript client that cuts text inside an emoji sends "\ud83d" alone: valid JSON, no UTF-8
    proxy, a, _ = world
    content = b'{"model": "claude-x", "messages": [{"role": "user", "content": "a\\ud83db"}]}'
    r = post(proxy, path="/v1/chat/completions", content=content, key=None,
             headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 200, r.text
    assert b"a\\ud83db" in a.last().body      # converted to Anthropic's shape, escaped as it came


@pytest.mark.parametrize(("target", "header", "needle"), [
    (b"/v1/messages", b"X-Bad: a\rb", b"control character"),
    (b"/v1/messages", b"X-Bad: a\x01b", b"control character"),
    (b"/v1/messages", b"X-Bad: a\x0bb", b"control character"),
    (b"/v1/messages", b"X-Bad: a\x1b[31mb", b"control character"),
    (b"/v1/messages", b"X-Bad: a\x7fb", b"control character"),
    (b"/v1/messages?a=\x7f", b"X-Good: tab\tinside", b"path or query"),
    (b"/v1/messages?a=\x85", b"X-Good: a", b"not ASCII"),
])
def test_a_control_character_in_the_head_is_refused_not_blamed_on_the_upstream(world, target, header, needle):
    """The client's own bad request: a 400, nothing sent, and no failure counted against the
    upstream (any client could otherwise put every upstream into cooldown)."""
    proxy, a, _ = world
    body = json.dumps(GOOD).encode()
    for _ in range(6):                  # past any failure threshold
        out = raw_request(proxy.reverse_port, b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nx-api-key: " +
                          CLIENT_KEY.encode() + b"\r\n" + header + b"\r\ncontent-type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head, _, payload = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and needle in payload, out
    assert not a.requests
    r = post(proxy)                     # the upstream was not put into cooldown by it
    assert r.status_code == 200 and r.headers["x-ccswitch-attempts"] == "1"


def test_oversized_headers(world):
    proxy, a, _ = world
    r = post(proxy, headers={f"x-pad-{i}": "v" * 1000 for i in range(100)})
    anthropic_error(r, 431, "headers too large")


def test_unknown_paths_pass_untouched(world):
    proxy, a, _ = world
    r = httpx.get(proxy.reverse_url + "/v1/unknown", headers={"x-api-key": CLIENT_KEY})
    assert r.status_code == 502 and not a.requests     # went to the original host (refused by the guard)


def test_upstream_echoing_its_key_never_reaches_the_client(world):
    proxy, a, _ = world
    a.script(status(401, body={"type": "error", "error": {"type": "authentication_error",
                                                          "message": f"invalid key {UPSTREAM_KEY}"}}))
    r = post(proxy)
    assert r.status_code == 401 and UPSTREAM_KEY not in r.text and "[redacted]" in r.text


@pytest.mark.parametrize("behaviour", [ok, lambda headers: status(400, headers=headers)], ids=["ok", "error"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_upstream_echoing_its_key_in_a_header_never_reaches_the_client(world, stream, behaviour):
    """Nor the log or the saved flows: test_zz_secrets_appear_nowhere looks there afterwards."""
    proxy, a, _ = world
    a.script(behaviour(headers={"x-echo": f"key={UPSTREAM_KEY}; ok"}))
    with httpx.stream("POST", proxy.reverse_url + "/v1/messages", json={**GOOD, "stream": stream}, timeout=30,
                      headers={"x-api-key": CLIENT_KEY}) as r:
        body = r.read()
    assert a.requests and r.headers["x-echo"] == "key=[redacted]; ok"
    assert UPSTREAM_KEY.encode() not in b"".join(k + v for k, v in r.headers.raw) + body
    assert UPSTREAM_KEY not in proxy.log()


def _one_letter_escaped(key: str) -> str:
    """The key as JSON may spell it with one letter of its longest run escaped (`\\u0042`):
    any JSON reader, the upstream's among them, reads the key."""
    at = max(range(len(key)), key=lambda i: key[i].isalnum() and i)
    return key[:at] + f"\\u{ord(key[at]):04X}" + key[at + 1:]


@pytest.mark.parametrize("spelling", ["plain", "escaped"])
@pytest.mark.parametrize("encoding", [None, "gzip"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_prompt_quoting_the_upstreams_keys_sends_them_to_no_upstream(world, stream, encoding, spelling):
    """A client that read the rules file (or an .env) and quotes it: each relay would get every
    other relay's key.  Nor do they stand on the saved flow (test_zz_secrets_appear_nowhere)."""
    proxy, a, _ = world
    quoted = {**GOOD, "stream": stream, "messages": [
        {"role": "user", "content": f"my .env has A={UPSTREAM_KEY} and C={CHAT_KEY}; what do they do?"}]}
    content = json.dumps(quoted).encode()
    if spelling == "escaped":
        content = content.replace(CHAT_KEY.encode(), _one_letter_escaped(CHAT_KEY).encode())
        assert json.loads(content) == quoted and CHAT_KEY.encode() not in content
    headers = {"content-encoding": encoding} if encoding else {}
    r = post(proxy, content=gzip.compress(content) if encoding else content, headers=headers)
    assert r.status_code == 200, r.text
    said = a.last().json["messages"][0]["content"]
    assert said == "my .env has A=[redacted] and C=[redacted]; what do they do?"
    assert "quoted an upstream's key" in proxy.log()


def test_an_upstreams_key_in_a_header_or_the_query_goes_to_no_upstream(world):
    proxy, a, _ = world
    pct = "".join(f"%{ord(c):02X}" for c in UPSTREAM_KEY)       # every character percent-encoded
    r = post(proxy, path=f"/v1/messages?dbg={CHAT_KEY}&pct={pct}&beta=true",
             headers={"x-debug": f"Bearer {UPSTREAM_KEY}", "x-pct": pct, "x-note": "plain"})
    assert r.status_code == 200, r.text
    seen = a.last()
    assert seen.path == "/v1/messages" and seen.query == {"dbg": "[redacted]", "pct": "[redacted]", "beta": "true"}
    assert seen.headers["x-debug"] == "Bearer [redacted]" and seen.headers["x-note"] == "plain"
    assert seen.headers["x-pct"] == "[redacted]"


def test_a_key_in_a_tool_calls_arguments_goes_to_no_upstream_once_converted(world):
    """The arguments are JSON inside a JSON string: a key escaped there (`\\/` as PHP writes a
    slash, a letter as `\\u0073`) was read plain only by the conversion, and sent so."""
    proxy, a, _ = world
    escaped = _one_letter_escaped(UPSTREAM_KEY)
    arguments = json.dumps({"path": "x"}).replace('"x"', f'"{escaped}"')
    assert json.loads(arguments)["path"] == UPSTREAM_KEY
    body = {"model": "claude-x", "max_tokens": 5, "messages": [
        {"role": "user", "content": "read it"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"}],
        "tools": [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}]}
    r = post(proxy, path="/v1/chat/completions", content=json.dumps(body))
    assert r.status_code == 200, r.text
    [tool_use] = [b for m in a.last().json["messages"] if isinstance(m["content"], list)
                  for b in m["content"] if b.get("type") == "tool_use"]
    assert tool_use["input"] == {"path": "[redacted]"}


def test_a_head_refused_for_its_size_quoting_a_key_keeps_it_off_its_flow(world):
    proxy, a, _ = world
    answer = raw_request(proxy.reverse_port, (
        f"POST /v1/messages?dbg={UPSTREAM_KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {CLIENT_KEY}\r\n"
        f"x-debug: {CHAT_KEY}\r\ncontent-type: application/json\r\ncontent-length: 40000000\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 413") and a.requests == []    # test_zz_secrets_appear_nowhere: its flow


@pytest.mark.parametrize(("key", "content_type", "status"), [
    ("ccsw-not-a-client-key-0000", "application/json", 401), (CLIENT_KEY, "text/plain", 415)])
def test_a_refused_request_quoting_an_upstreams_key_keeps_it_off_its_flow(world, key, content_type, status):
    """Sent nowhere, but on the flow mitmweb shows and `-w` saves (test_zz_secrets_appear_nowhere)."""
    proxy, a, _ = world
    quoting = json.dumps({**GOOD, "messages": [{"role": "user", "content": f"A={UPSTREAM_KEY}"}]})
    r = post(proxy, content=quoting, key=key, headers={"content-type": content_type,
                                                       "x-debug": CHAT_KEY})
    assert r.status_code == status and a.requests == []


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_non_ascii_header_bytes_cross_the_proxy_as_they_are(world, stream):
    """Client headers reach the upstream, and upstream headers the client, byte for byte;
    a rules header goes out in latin-1 (the only text a header line can carry)."""
    proxy, a, _ = world
    a.script(ok(headers={"x-note": "caf\xc3\xa9 \xe9t\xe9"}))   # sent as latin-1: UTF-8 then latin-1 bytes
    sent = {"x-user": "café".encode(), "x-latin": "café".encode("latin-1"), "x-api-key": CLIENT_KEY.encode()}
    with httpx.stream("POST", proxy.reverse_url + "/v1/messages", json={**GOOD, "stream": stream}, timeout=30,
                      headers=sent) as r:
        r.read()
    assert r.status_code == 200, r.text
    seen = {k: v.encode("latin-1") for k, v in a.last().headers.items()}   # http.server reads latin-1
    assert seen["x-user"] == "café".encode() and seen["x-latin"] == "café".encode("latin-1")
    assert seen["x-relay-user"] == "José".encode("latin-1")
    assert (b"x-note", b"caf\xc3\xa9 \xe9t\xe9") in r.headers.raw


def test_zz_secrets_appear_nowhere(world):
    """Runs last: logs, the ledger, a report, saved flows and error bodies hold no key."""
    proxy, a, tmp = world
    assert post(proxy).status_code == 200
    proxy.stop()
    places = {"mitmdump log": proxy.log().encode()}
    for path in proxy.usage_db.parent.glob("usage.db*"):
        places[path.name] = path.read_bytes()
    with open(tmp / "flows.mitm", "rb") as f:
        flows = list(io.FlowReader(f).stream())
    places["saved flows"] = json.dumps([fl.get_state() for fl in flows], default=repr).encode()
    places["saved flows file"] = (tmp / "flows.mitm").read_bytes()
    out = tmp / "report"
    done = subprocess.run([str(Path(sys.executable).with_name("ccswitch")), "report", "--db", str(proxy.usage_db),
                           "--rules", str(proxy.rules_path), "--out", str(out)], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    places["report stdout"] = done.stdout + done.stderr
    for path in out.iterdir():
        places[f"report {path.name}"] = path.read_bytes()
    assert len(flows) >= 10 and any(p.startswith("report ") for p in places)
    for where, data in places.items():
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} found in {where}"
    assert b"Traceback" not in places["mitmdump log"]
