import os
import shlex
import shutil
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ccswitch.cli import env as clienv
from ccswitch.cli.env import env_lines, write_ca_bundle
from ccswitch.config.load import parse_rules

MITM_PEM = b"-----BEGIN CERTIFICATE-----\nMITMCA\n-----END CERTIFICATE-----\n"
SYS_PEM = b"-----BEGIN CERTIFICATE-----\nSYSTEMROOT\n-----END CERTIFICATE-----"   # no final newline on purpose


@pytest.fixture
def confdir(tmp_path):
    d = tmp_path / "mitm conf"              # a space, so quoting matters
    d.mkdir()
    (d / "mitmproxy-ca-cert.pem").write_bytes(MITM_PEM)
    return d


@pytest.fixture
def system_ca(tmp_path):
    p = tmp_path / "system.pem"
    p.write_bytes(SYS_PEM)
    return p


def exports(text):
    """Parse `export NAME=value` lines the way a POSIX shell would."""
    out = {}
    for line in text.splitlines():
        assert line == "" or line.startswith("#") or line.startswith("export "), line
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            out[name] = " ".join(shlex.split(value))
    return out


def shell_env(text):
    """eval the text in a real shell and return the resulting environment."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    env = {"PATH": os.environ.get("PATH", "")}
    res = subprocess.run([sh, "-c", 'eval "$CCSW_TEXT" && env -0'], env={**env, "CCSW_TEXT": text},
                         capture_output=True, check=True)
    return dict(item.split("=", 1) for item in res.stdout.decode().split("\0") if "=" in item)


def test_proxy_exports_and_bundle(confdir, system_ca, tmp_path):
    bundle_dir = tmp_path / "bundles"
    text = env_lines(confdir=confdir, port=8080, reverse=False, codex_toml=False, bundle_dir=bundle_dir,
                     system_ca=system_ca, environ={})
    ex = exports(text)
    bundle = bundle_dir / "ccswitch-ca-bundle.pem"
    assert ex["HTTPS_PROXY"] == "http://127.0.0.1:8080"
    assert ex["NO_PROXY"].split(",")[:2] == ["localhost", "127.0.0.1"]
    assert ex["NODE_EXTRA_CA_CERTS"] == str(confdir / "mitmproxy-ca-cert.pem")
    assert ex["SSL_CERT_FILE"] == ex["CODEX_CA_CERTIFICATE"] == str(bundle)
    assert "ANTHROPIC_BASE_URL" not in ex and "OPENAI_BASE_URL" not in ex
    data = bundle.read_bytes()
    assert data.startswith(SYS_PEM + b"\n") and data.endswith(MITM_PEM)


def test_proxy_text_evals_in_a_shell(confdir, system_ca, tmp_path):
    text = env_lines(confdir=confdir, port=18080, reverse=False, codex_toml=False, bundle_dir=confdir,
                     system_ca=system_ca)
    env = shell_env(text)
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:18080"
    assert env["NODE_EXTRA_CA_CERTS"] == str(confdir / "mitmproxy-ca-cert.pem")   # path with a space survived
    assert env["CODEX_CA_CERTIFICATE"] == str(confdir / "ccswitch-ca-bundle.pem")


def test_bundle_is_idempotent_and_follows_a_new_ca(confdir, system_ca, tmp_path):
    b1 = write_ca_bundle(confdir, tmp_path / "b", system_ca=system_ca)
    os.utime(b1, (1_000_000, 1_000_000))
    b2 = write_ca_bundle(confdir, tmp_path / "b", system_ca=system_ca)
    assert b1 == b2 and b2.stat().st_mtime == 1_000_000          # unchanged content: not rewritten
    (confdir / "mitmproxy-ca-cert.pem").write_bytes(MITM_PEM.replace(b"MITMCA", b"NEWCA"))
    b3 = write_ca_bundle(confdir, tmp_path / "b", system_ca=system_ca)
    assert b"NEWCA" in b3.read_bytes() and b"MITMCA" not in b3.read_bytes()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["ccswitch-ca-bundle.pem"]   # no temp files left


def test_bundle_without_ca_raises(tmp_path, system_ca):
    with pytest.raises(FileNotFoundError):
        write_ca_bundle(tmp_path / "nothing", tmp_path / "b", system_ca=system_ca)
    assert not (tmp_path / "b").exists()


def test_missing_ca_gives_hint_and_stays_evalable(tmp_path, system_ca):
    confdir = tmp_path / "fresh"
    text = env_lines(confdir=confdir, port=8080, reverse=False, codex_toml=False, bundle_dir=confdir,
                     system_ca=system_ca)
    assert "# start ccswitch once (ccswitch run) to create" in text and str(confdir / "mitmproxy-ca-cert.pem") in text
    ex = exports(text)
    assert ex["HTTPS_PROXY"] == "http://127.0.0.1:8080"
    assert not {"NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "CODEX_CA_CERTIFICATE"} & set(ex)
    assert not confdir.exists()
    assert shell_env(text)["HTTPS_PROXY"] == "http://127.0.0.1:8080"


def test_reverse_mode_needs_no_ca(tmp_path):
    text = env_lines(confdir=tmp_path / "none", port=8082, reverse=True, codex_toml=False,
                     bundle_dir=tmp_path / "none", rules=rules_of("routes: {claude: [relay-a], chat: [relay-c]}\n"))
    ex = exports(text)
    assert ex["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8082"
    assert ex["OPENAI_BASE_URL"] == "http://127.0.0.1:8082/v1"
    assert not {"HTTPS_PROXY", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "CODEX_CA_CERTIFICATE"} & set(ex)
    assert "run mitmdump" not in text
    assert not (tmp_path / "none").exists()
    assert shell_env(text)["OPENAI_BASE_URL"] == "http://127.0.0.1:8082/v1"


@pytest.mark.parametrize("reverse, base_url", [(True, "http://127.0.0.1:8082/v1"),
                                               (False, "https://api.openai.com/v1")])
@pytest.mark.parametrize("codex_websocket, websockets", [(None, True), ("bridge", True), ("refuse", False)])
def test_codex_toml(tmp_path, reverse, base_url, codex_websocket, websockets):
    rules = None if codex_websocket is None else parse_rules(f"codex_websocket: {codex_websocket}\n")
    text = env_lines(confdir=tmp_path, port=8082, reverse=reverse, codex_toml=True, bundle_dir=tmp_path, rules=rules)
    assert "export " not in text
    doc = tomllib.loads(text)
    assert doc["model_provider"] == "ccswitch"
    # Codex opens its WebSocket when ccswitch bridges it; with refuse it goes straight to HTTPS
    assert doc["model_providers"]["ccswitch"] == {
        "name": "ccswitch", "base_url": base_url, "wire_api": "responses",
        "env_key": "OPENAI_API_KEY", "supports_websockets": websockets,
    }


@pytest.mark.parametrize("codex_websocket", ["bridge", "refuse"])
def test_codex_toml_one_liner_is_valid_toml(tmp_path, codex_websocket):
    text = env_lines(confdir=tmp_path, port=9000, reverse=True, codex_toml=True, bundle_dir=tmp_path,
                     rules=parse_rules(f"codex_websocket: {codex_websocket}\n"))
    line = next(x for x in text.splitlines() if x.startswith("# One-off"))
    words = shlex.split(line[1:])
    key, _, value = words[words.index("-c") + 1].partition("=")
    assert key == "model_providers.ccswitch"
    provider = tomllib.loads(f"x = {value}")["x"]
    assert provider["base_url"] == "http://127.0.0.1:9000/v1"
    assert provider["supports_websockets"] is (codex_websocket == "bridge")


@pytest.mark.parametrize("port", [0, 65536, -1, True])
def test_bad_port(tmp_path, port):
    with pytest.raises(ValueError):
        env_lines(confdir=tmp_path, port=port, reverse=True, codex_toml=False, bundle_dir=tmp_path)


def test_the_systems_bundle_comes_before_certifis(monkeypatch, tmp_path):
    # the system's holds CAs added locally (a company's); certifi's only the public ones
    openssl, debian, fedora = (tmp_path / name for name in ("openssl.pem", "debian.crt", "fedora.crt"))
    monkeypatch.setattr(clienv, "openssl_default_bundle", lambda: openssl)
    monkeypatch.setattr(clienv, "SYSTEM_BUNDLES", (debian, fedora))
    fedora.write_bytes(SYS_PEM)
    assert clienv.system_ca_file() == fedora
    debian.write_bytes(SYS_PEM)
    assert clienv.system_ca_file() == debian
    openssl.write_bytes(SYS_PEM)
    assert clienv.system_ca_file() == openssl


def test_certifi_when_the_system_has_no_bundle(monkeypatch, tmp_path):
    import certifi
    monkeypatch.setattr(clienv, "openssl_default_bundle", lambda: None)
    monkeypatch.setattr(clienv, "SYSTEM_BUNDLES", (tmp_path / "absent.crt",))
    assert clienv.system_ca_file() == Path(certifi.where())
    monkeypatch.setitem(sys.modules, "certifi", None)          # import certifi -> ImportError
    assert clienv.system_ca_file() is None


def test_the_openssl_default_is_not_ssl_cert_file(monkeypatch, tmp_path):
    # once `ccswitch env` is in effect SSL_CERT_FILE is its own bundle: built on it, it would grow
    bundle = tmp_path / "ccswitch-ca-bundle.pem"
    bundle.write_bytes(SYS_PEM)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert ssl.get_default_verify_paths().cafile == str(bundle)      # what reading SSL_CERT_FILE gives
    assert clienv.openssl_default_bundle() != bundle


def test_no_system_ca_still_writes_bundle(monkeypatch, confdir, tmp_path):
    monkeypatch.setattr(clienv, "system_ca_file", lambda: None)
    text = env_lines(confdir=confdir, port=8080, reverse=False, codex_toml=False, bundle_dir=tmp_path)
    assert "no system CA bundle found" in text
    assert (tmp_path / "ccswitch-ca-bundle.pem").read_bytes().endswith(MITM_PEM)


# ----------------------------------------------------------------------------- the clients' API keys

RELAYS = """
upstreams:
  - {name: relay-a, protocol: anthropic, base_url: 'https://a.example', api_key: '${RELAY_A_KEY}'}
  - {name: relay-r, protocol: openai-responses, base_url: 'https://r.example/v1', api_key: sk-upstream-r-0000}
  - {name: relay-c, protocol: openai-chat, base_url: 'https://c.example/v1', api_key: sk-upstream-c-0000}
  - {name: official, protocol: anthropic, base_url: 'https://api.anthropic.com', auth: client}
  - {name: openai-official, protocol: openai-chat, base_url: 'https://api.openai.com/v1', auth: client}
"""


def rules_of(routes: str, client_keys: str = ""):
    from ccswitch.config.load import parse_rules
    return parse_rules(client_keys + RELAYS + routes, env={"RELAY_A_KEY": "sk-upstream-a-0000"})


def test_relays_holding_the_keys_get_a_placeholder_for_every_client(tmp_path):
    rules = rules_of("routes: {claude: [relay-a], codex: [relay-r], chat: [relay-c, relay-a]}\n")
    text = env_lines(confdir=tmp_path, port=8080, reverse=False, codex_toml=False, bundle_dir=tmp_path, rules=rules)
    env = shell_env(text)
    assert env["ANTHROPIC_API_KEY"] == env["CODEX_API_KEY"] == env["OPENAI_API_KEY"] == clienv.PLACEHOLDER_KEY
    assert "placeholder" in clienv.PLACEHOLDER_KEY and not clienv.PLACEHOLDER_KEY.startswith("sk-")
    assert "sk-upstream" not in text                               # an upstream's key is never printed


def test_client_keys_are_what_clients_present(tmp_path):
    rules = rules_of("routes: {claude: [relay-a], codex: [relay-r]}\n", "client_keys: ['ck one', ck-two]\n")
    text = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=False, bundle_dir=tmp_path, rules=rules)
    env = shell_env(text)
    assert env["ANTHROPIC_API_KEY"] == env["CODEX_API_KEY"] == env["OPENAI_API_KEY"] == "ck one"   # the first
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8082"
    assert "sk-upstream" not in text and "ck-two" not in text


def test_a_route_with_an_auth_client_upstream_keeps_the_clients_own_key(tmp_path):
    rules = rules_of("routes: {claude: [relay-a, official], codex: [relay-r], chat: [openai-official]}\n")
    lines = clienv.client_key_lines(rules)
    ex = exports("\n".join(lines))
    # Codex's own variable is free; OPENAI_API_KEY serves the chat route too, whose upstream needs the user's key
    assert ex == {"CODEX_API_KEY": clienv.PLACEHOLDER_KEY}
    assert any(line.startswith("# ANTHROPIC_API_KEY left as it is") and "official (claude)" in line for line in lines)
    assert any(line.startswith("# OPENAI_API_KEY left as it is") and "openai-official (chat)" in line for line in lines)


def test_empty_routes_export_no_key_and_shipped_rules_none(tmp_path):
    from ccswitch.config.load import default_rules_text, parse_rules
    assert clienv.client_key_lines(rules_of("routes: {claude: [relay-a]}\n")) == [
        "# ANTHROPIC_API_KEY: a placeholder for Claude Code (the claude route's upstreams hold the real keys)",
        f"export ANTHROPIC_API_KEY={clienv.PLACEHOLDER_KEY}"]
    assert exports("\n".join(clienv.client_key_lines(parse_rules(default_rules_text(), env={})))) == {}


def test_keys_follow_the_exports_even_without_a_ca_and_never_go_into_toml(tmp_path):
    rules = rules_of("routes: {claude: [relay-a]}\n")
    text = env_lines(confdir=tmp_path / "fresh", port=8080, reverse=False, codex_toml=False,
                     bundle_dir=tmp_path, rules=rules)
    assert "# start ccswitch once" in text and exports(text)["ANTHROPIC_API_KEY"] == clienv.PLACEHOLDER_KEY
    toml = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=True, bundle_dir=tmp_path, rules=rules)
    assert "export" not in toml and "ANTHROPIC_API_KEY" not in toml


@pytest.mark.parametrize("routes, why", [
    (None, "auth: client upstream(s) codex-original (codex) keep the client's own key"),   # the shipped rules
    ("routes: {claude: [relay-a], chat: [relay-c, openai-official], codex: [relay-r]}\n", "openai-official (chat)"),
    ("routes: {claude: [relay-a]}\n", "no upstream of the chat or codex route takes these requests"),
    ("routes: {chat: [relay-c]}\n", "${CCSWITCH_TEST_UNSET_TEAM_KEY} of your client key is not set in this shell"),
])
def test_a_reverse_listener_gets_no_openai_base_url_where_the_users_own_openai_key_would_reach_its_target(
        tmp_path, monkeypatch, routes, why):
    # the README's listener targets Anthropic: an OpenAI SDK in the shell would send it the user's OpenAI key
    from ccswitch.cli.rules_file import MarkedEnv
    from ccswitch.config.load import default_rules_text
    if routes is None:
        rules = parse_rules(default_rules_text(), env={})
    elif "UNSET" in why:   # an unset client key leaves the shell's own OPENAI_API_KEY in place
        rules = parse_rules("client_keys: ['${CCSWITCH_TEST_UNSET_TEAM_KEY}']\n" + RELAYS + routes, env=MarkedEnv())
    else:
        rules = rules_of(routes)
    text = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=False, bundle_dir=tmp_path, rules=rules)
    env = shell_env(text)
    assert "OPENAI_BASE_URL" not in env and env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8082"
    [said] = [line for line in text.splitlines() if line.startswith("# OPENAI_BASE_URL not set")]
    assert why in said and "reverse:https://api.openai.com@PORT" in said and "http://127.0.0.1:PORT/v1" in said


def test_a_reverse_codex_block_says_when_codexs_own_key_would_go_on_to_the_listeners_target(tmp_path):
    from ccswitch.config.load import default_rules_text
    shipped = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=True, bundle_dir=tmp_path,
                        rules=parse_rules(default_rules_text(), env={}))
    assert tomllib.loads(shipped)["model_providers"]["ccswitch"]["base_url"] == "http://127.0.0.1:8082/v1"
    assert "codex-original (codex) keep the client's own key" in shipped.splitlines()[0]
    relayed = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=True, bundle_dir=tmp_path,
                        rules=rules_of("routes: {codex: [relay-r]}\n"))
    assert "own key" not in relayed and tomllib.loads(relayed)["model_provider"] == "ccswitch"
    nothing = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=True, bundle_dir=tmp_path,
                        rules=rules_of("routes: {chat: [relay-c]}\n"))     # the codex route lists nothing
    assert nothing.startswith("# no upstream of the codex route takes these requests")


def test_openai_base_url_for_the_chat_route_alone_says_the_codex_route_s_requests_are_not_served(tmp_path):
    chat_only = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=False, bundle_dir=tmp_path,
                          rules=rules_of("routes: {chat: [relay-c]}\n"))
    assert exports(chat_only)["OPENAI_BASE_URL"] == "http://127.0.0.1:8082/v1"
    assert "serves the chat route (/v1/chat/completions) only" in chat_only and "codex -c" not in chat_only
    both = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=False, bundle_dir=tmp_path,
                     rules=rules_of("routes: {chat: [relay-c], codex: [relay-r]}\n"))
    assert "codex -c openai_base_url=http://127.0.0.1:8082/v1" in both and "only:" not in both


def test_only_the_first_client_keys_unset_variable_keeps_the_clients_own_key(tmp_path):
    # the clients are given client_keys[0]: a later key's unset variable keeps nothing from them
    from ccswitch.cli.rules_file import MarkedEnv
    routes = "routes: {chat: [relay-c], codex: [relay-r]}\n"
    second_unset = parse_rules("client_keys: [ck-first, '${CCSWITCH_TEST_UNSET_TEAM_KEY}']\n" + RELAYS + routes,
                               env=MarkedEnv())
    assert clienv.unset_client_key(second_unset) == ""
    assert clienv.own_key_to_target(second_unset, ("chat", "codex")) is None
    first_unset = parse_rules("client_keys: ['${CCSWITCH_TEST_UNSET_TEAM_KEY}', ck-second]\n" + RELAYS + routes,
                              env=MarkedEnv())
    assert clienv.unset_client_key(first_unset) == "${CCSWITCH_TEST_UNSET_TEAM_KEY}"


def test_without_rules_a_reverse_listener_gets_no_openai_base_url_but_the_codex_block_no_warning(tmp_path):
    # no rules read: ccswitch cannot tell whose key an OpenAI SDK would send on to the listener's target
    text = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=False, bundle_dir=tmp_path)
    assert "OPENAI_BASE_URL" not in exports(text)
    assert "# OPENAI_BASE_URL not set: no rules were read" in text
    # the block is asked for by name: it goes out as it is
    toml = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=True, bundle_dir=tmp_path)
    assert "no rules were read" not in toml


def test_a_base_url_the_shell_already_has_is_unset_for_the_proxy(tmp_path, system_ca):
    """Set from before (a relay's), ANTHROPIC_BASE_URL sent Claude Code straight there, past ccswitch."""
    relay = "https://user:s3cret@relay.example/api"
    text = env_lines(confdir=tmp_path / "fresh", port=8080, reverse=False, codex_toml=False, bundle_dir=tmp_path,
                     system_ca=system_ca, environ={"ANTHROPIC_BASE_URL": relay, "OPENAI_BASE_URL": "https://api.openai.com/v1/"})
    assert "unset ANTHROPIC_BASE_URL" in text.splitlines() and "s3cret" not in text and "relay.example" not in text
    assert "unset OPENAI_BASE_URL" not in text          # the official URL leads through the proxy already
    sh = shutil.which("sh")
    done = subprocess.run([sh, "-c", 'eval "$CCSW_TEXT" && env -0'], capture_output=True, check=True,
                          env={"PATH": os.environ.get("PATH", ""), "CCSW_TEXT": text, "ANTHROPIC_BASE_URL": relay})
    assert not any(item.startswith(b"ANTHROPIC_BASE_URL=") for item in done.stdout.split(b"\0"))
    # a reverse listener's exports set their own base URL over it
    reverse = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=False, bundle_dir=tmp_path,
                        environ={"ANTHROPIC_BASE_URL": relay})
    assert "unset" not in reverse and exports(reverse)["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8082"


def test_the_shell_s_no_proxy_is_kept_less_what_would_send_an_intercepted_host_past_ccswitch(tmp_path, system_ca):
    shell = {"NO_PROXY": "corp.internal, .example.org,.anthropic.com,localhost,chatgpt.com.:443",
             "no_proxy": "build.corp"}            # tools read one or the other: both are kept
    rules = parse_rules("intercept: [api.anthropic.com, chatgpt.com]\n")
    text = env_lines(confdir=tmp_path / "fresh", port=8080, reverse=False, codex_toml=False, bundle_dir=tmp_path,
                     system_ca=system_ca, environ=shell, rules=rules)
    ex = exports(text)
    assert ex["NO_PROXY"] == ex["no_proxy"] == "build.corp,corp.internal,.example.org,localhost,127.0.0.1,::1"
    assert ("# NO_PROXY: .anthropic.com, chatgpt.com.:443 left out: clients would reach api.anthropic.com, "
            "chatgpt.com past ccswitch") in text.splitlines()
    everything = env_lines(confdir=tmp_path / "fresh", port=8080, reverse=False, codex_toml=False, bundle_dir=tmp_path,
                           system_ca=system_ca, environ={"no_proxy": "*"})
    assert exports(everything)["NO_PROXY"] == "localhost,127.0.0.1,::1" and "# NO_PROXY: * left out" in everything
    # a reverse listener's clients use no proxy: the shell's exemptions (for its other traffic) stay
    reverse = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=False, bundle_dir=tmp_path,
                        environ=shell, rules=rules)
    assert exports(reverse)["NO_PROXY"].startswith("build.corp,corp.internal,.example.org,.anthropic.com,")
    assert "left out" not in reverse


def test_no_proxy_entries_cannot_put_a_command_into_the_text_to_eval(tmp_path, system_ca):
    # an entry with a line break ended the comment that quoted it, and what followed ran at `eval`
    marker = tmp_path / "ran"
    shell = {"NO_PROXY": f"api.anthropic.com:\n$(touch {marker}),corp.internal"}
    text = env_lines(confdir=tmp_path / "fresh", port=8080, reverse=False, codex_toml=False, bundle_dir=tmp_path,
                     system_ca=system_ca, environ=shell)
    subprocess.run([shutil.which("sh"), "-c", 'eval "$CCSW_TEXT"'], check=True,
                   env={"PATH": os.environ.get("PATH", ""), "CCSW_TEXT": text})
    assert not marker.exists()
    assert exports(text)["NO_PROXY"] == "corp.internal,localhost,127.0.0.1,::1"
    assert "# NO_PROXY: 1 entry(ies) with spaces or control characters left out" in text.splitlines()


def test_a_company_proxy_the_shell_had_is_named_without_its_login_with_how_ccswitch_can_use_it(tmp_path, system_ca):
    def told(environ):
        text = env_lines(confdir=tmp_path / "fresh", port=8080, reverse=False, codex_toml=False, bundle_dir=tmp_path,
                         system_ca=system_ca, environ=environ)
        assert exports(text)["HTTPS_PROXY"] == "http://127.0.0.1:8080"
        return [line for line in text.splitlines() if "in this shell" in line and "PROXY" in line.upper()]
    [line] = told({"HTTPS_PROXY": "http://alice:s3cret@proxy.corp:3128/"})
    assert line.startswith("# HTTPS_PROXY was http://proxy.corp:3128 in this shell") and "s3cret" not in line
    assert "`upstream_proxy: http://USER:${VAR}@proxy.corp:3128`" in line
    # cntlm or px on this machine is a company proxy too; ccswitch's own ports are not
    [line] = told({"https_proxy": "http://127.0.0.1:3128"})
    assert "`upstream_proxy: http://127.0.0.1:3128`" in line
    # what the rules accept: http:// for an https:// proxy (CONNECT is plain HTTP), a port to fill in
    [line] = told({"HTTPS_PROXY": "https://proxy.corp"})
    assert "was https://proxy.corp in this shell" in line and "`upstream_proxy: http://proxy.corp:PORT`" in line
    assert told({"https_proxy": "http://127.0.0.1:8082"}) == []     # ccswitch's reverse default, from before
    assert told({"HTTPS_PROXY": "http://[::1]:8080/"}) == []        # this one
    assert told({}) == []


def test_a_chat_user_kept_from_openai_base_url_by_the_codex_route_is_told_to_empty_it(tmp_path):
    # the shipped codex route (auth: client) kept a chat-only user's OPENAI_BASE_URL and key back,
    # and the comment did not say what would let them through
    rules = parse_rules("""
upstreams:
  - {name: codex-original, protocol: openai-responses, base_url: 'https://api.openai.com/v1', auth: client}
  - {name: relay-c, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k}
routes: {codex: [codex-original], chat: [relay-c]}
""")
    text = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=False, bundle_dir=tmp_path, rules=rules,
                     environ={})
    [line] = [line for line in text.splitlines() if line.startswith("# OPENAI_BASE_URL not set")]
    assert "a route you do not use can be emptied (codex: [])" in line
    # no route left to serve them (the shipped chat: []): emptying codex would let nothing through
    shipped = parse_rules("""
upstreams:
  - {name: codex-original, protocol: openai-responses, base_url: 'https://api.openai.com/v1', auth: client}
routes: {codex: [codex-original], chat: []}
""")
    text = env_lines(confdir=tmp_path, port=8082, reverse=True, codex_toml=False, bundle_dir=tmp_path, rules=shipped,
                     environ={})
    assert "can be emptied" not in text
