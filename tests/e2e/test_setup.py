"""Setting up as a new user does: `ccswitch run` (the entry shipped in the package, mitmdump or
mitmweb), and a fresh Claude Code / Codex CLI given only what `ccswitch env` prints, against
relays that hold the keys."""

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support import TESTS
from tests.support.helpers import CLIENT_KEY, KEY_A
from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import CCSWITCH, Proxy

BIN = TESTS / "clients" / "node_modules" / ".bin"
CLAUDE, CODEX = BIN / "claude", BIN / "codex"
needs_clis = pytest.mark.skipif(not (CLAUDE.exists() and CODEX.exists()),
                                reason="run `npm ci --prefix tests/clients` to install the real CLIs")

RELAYS = """
{client_keys}
upstreams:
  - {{name: claude-a, protocol: anthropic, base_url: '{a}', api_key: '{key}'}}
  - {{name: codex-a, protocol: openai-responses, base_url: '{a}/v1', api_key: '{key}'}}
  - {{name: official, protocol: anthropic, base_url: 'https://api.anthropic.com', auth: client}}
routes:
  claude: [claude-a]
  codex: [codex-a]
"""
MESSAGE = {"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def relays_rules(tmp: Path, mock: MockUpstream, client_keys: str = "") -> Path:
    rules = tmp / "relays.yaml"
    rules.write_text(RELAYS.format(a=mock.base_url, key=KEY_A, client_keys=client_keys))
    return rules


# ----------------------------------------------------------------------------- ccswitch run

@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_ccswitch_run_is_mitmdump_with_the_packaged_entry(tmp_path):
    with MockUpstream("A") as a:
        with Proxy(relays_rules(tmp_path, a), tmp_path, launch="run") as proxy:
            argv = cmdline(proxy.proc.pid)
            # execv: the process started as `ccswitch run` *is* mitmdump now, no wrapper in between
            assert "mitmdump" in [Path(part).name for part in argv[:2]], argv
            assert str(Path("ccswitch") / "mitm" / "entry.py") in " ".join(argv) and "addon.py" not in " ".join(argv)
            r = httpx.post(proxy.reverse_url + "/v1/messages", json=MESSAGE, headers={"x-api-key": "k"},
                           timeout=30, trust_env=False)
            assert r.status_code == 200 and "Hello from mock A" in r.text
            assert a.last().headers.get("x-api-key") == KEY_A
            proxy.proc.send_signal(signal.SIGTERM)       # as a supervisor stops it
            assert proxy.proc.wait(30) == 0
        log = proxy.log()
        assert "rules loaded from" in log and str(tmp_path / "relays.yaml") in log
        assert "Traceback" not in log


def test_ccswitch_run_web_is_mitmweb_with_ccswitch(tmp_path):
    with MockUpstream("A") as a:
        with Proxy(relays_rules(tmp_path, a), tmp_path, launch="run --web") as proxy:
            r = httpx.post(proxy.reverse_url + "/v1/messages", json=MESSAGE, headers={"x-api-key": "k"},
                           timeout=30, trust_env=False)
            assert r.status_code == 200 and "Hello from mock A" in r.text
            deadline = time.monotonic() + 20
            while f"listening at http://127.0.0.1:{proxy.web_port}/" not in proxy.log():   # mitmweb's UI
                assert time.monotonic() < deadline, proxy.log()
                time.sleep(0.1)
            ui = httpx.get(f"http://127.0.0.1:{proxy.web_port}/", timeout=5, trust_env=False)
            assert ui.status_code in (200, 403)      # 403: the UI wants the token its log line shows
            assert "mitmweb" in [Path(part).name for part in cmdline(proxy.proc.pid)[:2]]


# ----------------------------------------------------------------------------- ccswitch env, then the real CLIs

def fresh_client(proxy: Proxy, home: Path, rules: Path, then: str) -> subprocess.CompletedProcess:
    """A shell with an empty HOME and only the basics, which evals `ccswitch env` and runs `then`."""
    home.mkdir(parents=True)
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TERM", "TMPDIR")}
    env = {**keep, "HOME": str(home), "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    script = (f'eval "$({CCSWITCH} env --rules {rules} --confdir {proxy.confdir} --port {proxy.regular_port})"'
              f" || exit 99\n{then}")
    return subprocess.run(["bash", "-c", script], env=env, cwd=home, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def relay_proxy(tmp_path, request):
    client_keys = getattr(request, "param", "")
    with MockUpstream("A") as a:
        rules = relays_rules(tmp_path, a, client_keys)
        with Proxy(rules, tmp_path, extra_args=("--set", "ccswitch_offline=true")) as proxy:
            yield proxy, a, rules
            assert KEY_A not in proxy.log() and CLIENT_KEY not in proxy.log()


def assert_upstream_saw_only_its_key(mock: MockUpstream, protocol: str) -> None:
    routed = [r for r in mock.requests if r.protocol == protocol]
    assert routed, f"the upstream saw no {protocol} request"
    for r in routed:
        sent = r.headers.get("x-api-key") or r.headers.get("authorization", "")
        assert sent in (KEY_A, f"Bearer {KEY_A}"), sent
        assert CLIENT_KEY not in str(r.headers) and "placeholder" not in str(r.headers)


@needs_clis
def test_fresh_claude_code_with_only_ccswitch_env_succeeds(relay_proxy, tmp_path):
    proxy, a, rules = relay_proxy
    done = fresh_client(proxy, tmp_path / "claude-home", rules, f'exec {CLAUDE} -p "say hi"')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Hello from mock A" in done.stdout
    assert_upstream_saw_only_its_key(a, "anthropic")
    # without the key `ccswitch env` added it is the old failure: Claude Code never asks ccswitch
    a.clear()
    bare = fresh_client(proxy, tmp_path / "claude-bare", rules, f'unset ANTHROPIC_API_KEY; exec {CLAUDE} -p "say hi"')
    assert bare.returncode != 0 and "Not logged in" in bare.stdout + bare.stderr
    assert not [r for r in a.requests if r.protocol]


@needs_clis
@pytest.mark.parametrize("relay_proxy", [f"client_keys: ['{CLIENT_KEY}']"], indirect=True)
def test_fresh_claude_code_and_codex_present_the_client_key_env_printed(relay_proxy, tmp_path):
    proxy, a, rules = relay_proxy
    shown = fresh_client(proxy, tmp_path / "show", rules, 'echo "$ANTHROPIC_API_KEY|$CODEX_API_KEY"')
    assert shown.stdout.strip() == f"{CLIENT_KEY}|{CLIENT_KEY}"
    done = fresh_client(proxy, tmp_path / "claude-home", rules, f'exec {CLAUDE} -p "say hi"')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Hello from mock A" in done.stdout
    assert_upstream_saw_only_its_key(a, "anthropic")
    codex = fresh_client(proxy, tmp_path / "codex-home", rules,
                         f'exec {CODEX} exec --skip-git-repo-check -c analytics.enabled=false "say hi"')
    assert codex.returncode == 0, codex.stdout + codex.stderr
    assert "Hello from mock A" in codex.stdout
    assert_upstream_saw_only_its_key(a, "responses")


def first_answer(port: int, path: str, timeout: float = 20.0) -> bytes:
    """A GET sent the moment the port takes a connection, as fast as a client can; the answer."""
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except OSError:
            time.sleep(0.001)
            continue
        with conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
            return answer
    raise AssertionError(f"port {port} never took a connection")


def test_requests_that_come_as_the_listeners_open_are_answered_and_the_start_goes_on(tmp_path):
    """Claude Code's first request (not one ccswitch routes) can come while ccswitch is still
    starting: mitmproxy's TLS settings are made ready at its start after ccswitch's, the request
    found them unset, and the error that made during the start made mitmdump exit."""
    with MockUpstream("A") as a:
        for attempt in range(3):
            workdir = tmp_path / str(attempt)
            workdir.mkdir()
            proxy = Proxy(relays_rules(workdir, a), workdir, launch="run")
            at = proxy.args.index(f"confdir={proxy.confdir}")
            del proxy.args[at - 1:at + 1]      # mitmproxy's own ~/.mitmproxy, as a user's start has it
            proxy.log_file = open(proxy.log_path, "wb")
            proxy.proc = subprocess.Popen(proxy.args, cwd=workdir, stdout=proxy.log_file, stderr=subprocess.STDOUT,
                                          env=proxy.env)
            try:
                passed = first_answer(proxy.reverse_port, "/api/hello")   # to api.anthropic.com: the guard refuses
                assert passed.startswith(b"HTTP/1.1 502") and b"loopback" in passed, passed
                time.sleep(0.5)
                assert proxy.proc.poll() is None, proxy.log()
                routed = httpx.post(proxy.reverse_url + "/v1/messages", json=MESSAGE, headers={"x-api-key": "k"},
                                    timeout=30, trust_env=False)
                assert routed.status_code == 200
            finally:
                proxy.stop()
            assert "Traceback" not in proxy.log() and "Error logged during startup" not in proxy.log()


def test_a_base_url_given_with_the_clients_own_v1_or_without_it_is_named_in_the_offline_answer(relay_proxy):
    """ANTHROPIC_BASE_URL=http://127.0.0.1:PORT/v1 makes Claude Code post to /v1/v1/messages:
    the answer says which path ccswitch routes instead of only that the host is not reachable, as a
    400, which Claude Code shows (a 404 it reads as a model the account lacks)."""
    proxy, a, _ = relay_proxy
    r = httpx.post(proxy.reverse_url + "/v1/v1/messages?beta=true", json=MESSAGE, headers={"x-api-key": "k"},
                   timeout=10, trust_env=False)
    assert r.status_code == 400 and r.headers["x-should-retry"] == "false"
    message = r.json()["error"]["message"]
    assert "ccswitch routes /v1/messages, not /v1/v1/messages" in message and "base URL" in message
    # a base URL without the /v1 (as an OpenAI client's would need it), on a route with upstreams
    r = httpx.post(proxy.reverse_url + "/messages", json=MESSAGE, headers={"x-api-key": "k"}, timeout=10,
                   trust_env=False)
    assert r.status_code == 400
    assert "ccswitch routes /v1/messages, not /messages: the client's base URL likely lacks its /v1" \
        in r.json()["error"]["message"]
    # the chat route lists no upstream here: /chat/completions is named for nothing
    r = httpx.post(proxy.reverse_url + "/chat/completions", json={"model": "m", "messages": []},
                   headers={"authorization": "Bearer k"}, timeout=10, trust_env=False)
    assert r.status_code == 404 and "routes" not in r.text
    r = httpx.post(proxy.reverse_url + "/api/hello", json=MESSAGE, timeout=10, trust_env=False)
    assert r.status_code == 404 and "routes" not in r.text           # no near path: no hint
    assert not [req for req in a.requests if req.protocol]


def test_a_base_url_at_the_regular_listener_is_told_at_once_which_url_it_meant(relay_proxy):
    """ANTHROPIC_BASE_URL at the HTTPS_PROXY port: mitmproxy's HTML 502 "destination unknown" had
    Claude Code retry for three minutes and call it a server-side issue."""
    import anthropic
    import openai
    proxy, a, _ = relay_proxy
    client = anthropic.Anthropic(base_url=proxy.proxy_url, api_key="k")
    with pytest.raises(anthropic.APIStatusError) as refused:
        client.messages.create(**MESSAGE)
    assert refused.value.status_code == 421 and refused.value.response.headers["x-should-retry"] == "false"
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    said = refused.value.body["error"]["message"]
    assert f"{proxy.proxy_url} is ccswitch's regular proxy listener, not a base URL" in said
    assert f"HTTPS_PROXY={proxy.proxy_url}" in said and proxy.reverse_url in said
    chat = openai.OpenAI(base_url=proxy.proxy_url + "/v1", api_key="k")
    with pytest.raises(openai.APIStatusError) as refused:
        chat.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 421 and proxy.reverse_url in refused.value.body["message"]
    assert not [req for req in a.requests if req.protocol]
    assert proxy.log().count("came to the regular listener as if it were a base URL") == 1


def test_a_misspelt_ccswitch_option_is_told_at_start_with_the_one_meant(tmp_path):
    # mitmproxy keeps an option no addon declares aside without a word; ccswitch names its own
    with MockUpstream("A") as a, Proxy(relays_rules(tmp_path, a), tmp_path, launch="run",
                                       extra_args=("--set", "ccswitch_rule=elsewhere.yaml")) as proxy:
        r = httpx.post(proxy.reverse_url + "/v1/messages", json=MESSAGE, headers={"x-api-key": "k"},
                       timeout=30, trust_env=False)
        assert r.status_code == 200          # started all the same, on the rules it found
        assert "no option is called ccswitch_rule, so it does nothing: did you mean ccswitch_rules?" in proxy.log()


def test_ccswitch_run_on_rules_it_cannot_load_stops_before_it_listens(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("upstreams:\n  - {name: a, protocol: anthropic, base_url: 'https://a.example', "
                     "api_key: '${CCSW_E2E_UNSET}'}\nroutes: {claude: [a]}\n")
    env = {k: v for k, v in os.environ.items() if k != "CCSW_E2E_UNSET"}
    done = subprocess.run([str(CCSWITCH), "run", "--set", f"ccswitch_rules={rules}", "--mode", "regular@0"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert "environment variable CCSW_E2E_UNSET is not set" in done.stderr
    assert "listening" not in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr
