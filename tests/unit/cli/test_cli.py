"""The `ccswitch` console script, run as users run it."""

import subprocess
import sys
from pathlib import Path

from tests.support import REPO

CCSWITCH = Path(sys.executable).with_name("ccswitch")


def cli(*args, cwd=REPO, env=None):
    import os
    return subprocess.run([str(CCSWITCH), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_check_ok_on_the_shipped_rules():
    done = cli("check", "rules.yaml")
    assert done.returncode == 0 and "OK" in done.stdout


def test_check_prints_every_problem_and_exits_1(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("""
upstreams:
  - {name: a, protocol: anthropic, base_url: 'ftp://x', api_key: '${CCSWITCH_TEST_UNSET_VAR}'}
  - {name: b, protocol: openai-chat, base_url: 'https://b.example', api_key: 'sk-literal-0000', colour: red}
routes: {claude: [a, b, ghost]}
failover: {cooldown: soon}
""")
    done = cli("check", str(bad))
    assert done.returncode == 1
    err = done.stderr
    for fragment in ("upstreams[a].base_url", "upstreams[a].api_key", "CCSWITCH_TEST_UNSET_VAR",
                     "upstreams[b].colour", "routes.claude", "ghost", "failover.cooldown", str(bad)):
        assert fragment in err, fragment
    assert "sk-literal-0000" not in err


def test_check_refuses_a_header_beyond_latin1(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("""
upstreams:
  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: k, headers: {x-relay-user: "日本"}}
routes: {claude: [a]}
""", encoding="utf-8")
    done = cli("check", str(rules))
    assert done.returncode == 1 and "upstreams[a].headers.x-relay-user: must be latin-1 text" in done.stderr
    rules.write_text(rules.read_text(encoding="utf-8").replace("日本", "José"), encoding="utf-8")
    assert cli("check", str(rules)).returncode == 0


def test_check_missing_file(tmp_path):
    done = cli("check", str(tmp_path / "nope.yaml"))
    assert done.returncode == 1 and "no such file" in done.stderr


def test_env_prints_evalable_exports(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mitmproxy-ca-cert.pem").write_text("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")
    done = cli("env", "--confdir", str(conf), "--port", "9999")
    assert done.returncode == 0
    shell = subprocess.run(["sh", "-c", done.stdout + '\necho "$HTTPS_PROXY|$NODE_EXTRA_CA_CERTS|$CODEX_CA_CERTIFICATE"'],
                           capture_output=True, text=True)
    proxy, node_ca, codex_ca = shell.stdout.strip().split("|")
    assert proxy == "http://127.0.0.1:9999" and node_ca == str(conf / "mitmproxy-ca-cert.pem")
    assert Path(codex_ca).read_text().count("BEGIN CERTIFICATE") >= 2   # system CAs + mitmproxy's
    done = cli("env", "--reverse", "--confdir", str(conf))
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:8082" in done.stdout
