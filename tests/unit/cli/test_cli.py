"""The `ccswitch` console script, run as users run it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

CCSWITCH = Path(sys.executable).with_name("ccswitch")


def cli(*args, cwd=REPO, env=None):
    import os
    return subprocess.run([str(CCSWITCH), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_check_ok_on_the_shipped_rules():
    done = cli("check", "rules.yaml")
    assert done.returncode == 0 and "OK" in done.stdout


def test_check_notes_upstreams_in_no_route_and_rules_that_route_nothing(tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\n")
    done = cli("check", str(rules))
    assert done.returncode == 0
    assert done.stdout.splitlines()[1] == "note: no route lists an upstream: every request passes through untouched"
    rules.write_text("upstreams:\n  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: k}\n"
                     "  - {name: b, protocol: anthropic, base_url: 'https://b.example', api_key: k}\n"
                     "routes: {claude: [a]}\n")
    done = cli("check", str(rules))
    assert done.returncode == 0 and done.stdout.splitlines()[1:] == ["note: in no route (no request is routed to them): b"]
    rules.write_text(rules.read_text().replace("claude: [a]", "claude: [a, b]"))
    assert len(cli("check", str(rules)).stdout.splitlines()) == 1



def test_check_notes_a_key_sent_unencrypted_beyond_this_machine(tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text("upstreams:\n  - {name: far, protocol: anthropic, base_url: 'http://relay.example.com', api_key: k}\n"
                     "  - {name: near, protocol: anthropic, base_url: 'http://127.0.0.1:8000', api_key: k}\n"
                     "  - {name: tls, protocol: anthropic, base_url: 'https://relay.example.com', api_key: k}\n"
                     "routes: {claude: [far, near, tls]}\n")
    done = cli("check", str(rules))
    assert done.returncode == 0
    assert done.stdout.splitlines()[1:] == ["note: send their key unencrypted (an http:// base_url beyond loopback): far"]


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


def test_env_names_the_ca_files_absolutely_for_clients_started_in_another_folder(tmp_path):
    # eval'd, `--confdir .` exported NODE_EXTRA_CA_CERTS=mitmproxy-ca-cert.pem: found from that folder only
    (tmp_path / "mitmproxy-ca-cert.pem").write_text("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")
    done = cli("env", "--confdir", ".", "--bundle-dir", "sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"NODE_EXTRA_CA_CERTS={tmp_path / 'mitmproxy-ca-cert.pem'}" in done.stdout
    assert f"SSL_CERT_FILE={tmp_path / 'sub' / 'ccswitch-ca-bundle.pem'}" in done.stdout


def home_env(tmp_path) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home)}


def test_init_writes_the_shipped_example_once(tmp_path):
    env = home_env(tmp_path)
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    done = cli("init", cwd=elsewhere, env=env)
    target = tmp_path / "home" / ".ccswitch" / "rules.yaml"
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(target)
    assert target.read_text() == (REPO / "rules.yaml").read_text()
    assert target.stat().st_mode & 0o077 == 0                        # an api_key may be written into it
    assert "note:" not in done.stderr                                # no ./rules.yaml here to shadow it
    # from now on, commands run outside a checkout use it, and say so
    check = cli("check", cwd=elsewhere, env=env)
    assert check.returncode == 0 and f"ccswitch: rules from {target} (~/.ccswitch/rules.yaml" in check.stderr
    assert "the shipped example, unchanged" in check.stderr
    target.write_text("# mine\n")
    again = cli("init", cwd=elsewhere, env=env)
    assert again.returncode == 1 and again.stdout == ""
    assert f"{target} already exists; ccswitch init never overwrites it" in again.stderr
    assert target.read_text() == "# mine\n"


def test_init_names_what_is_in_the_way_instead_of_saying_the_rules_exist(tmp_path):
    from ccswitch.cli.init import in_the_way
    rules = tmp_path / ".ccswitch" / "rules.yaml"
    assert in_the_way(rules.parent, rules) == (f"{rules.parent} is a file, where ccswitch keeps its folder; "
                                               "move it away and run ccswitch init again")
    rules.parent.mkdir()
    rules.symlink_to(tmp_path / "gone.yaml")
    assert in_the_way(rules, rules).startswith(f"{rules} is a link to {tmp_path / 'gone.yaml'}, which does not exist")
    rules.unlink()
    rules.mkdir()
    assert in_the_way(rules, rules).startswith(f"{rules} is a folder, not a rules file")
    rules.rmdir()
    rules.write_text("# mine\n")
    assert in_the_way(rules, rules).startswith(f"{rules} already exists; ccswitch init never overwrites it")


def test_init_warns_that_a_local_rules_yaml_comes_first(tmp_path):
    done = cli("init", cwd=REPO, env=home_env(tmp_path))
    assert done.returncode == 0
    assert f"note: {REPO / 'rules.yaml'} comes first while you run ccswitch in {REPO}" in done.stderr
    personal = tmp_path / "home" / ".ccswitch" / "rules.yaml"
    assert f"edit it, then `ccswitch check --rules {personal}`" in done.stderr
    # the advice works as given: it checks the personal file, not the local one
    check = cli("check", "--rules", str(personal), cwd=REPO, env=home_env(tmp_path))
    assert check.returncode == 0 and check.stdout.startswith(f"{personal}: OK")
    both = cli("check", str(REPO / "rules.yaml"), "--rules", str(personal), env=home_env(tmp_path))
    assert both.returncode == 2 and "name the rules file once" in both.stderr


def test_init_warns_of_a_local_rules_yaml_in_any_form_which_comes_first_too(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "rules.yaml").symlink_to(tmp_path / "gone.yaml")
    done = cli("init", cwd=work, env=home_env(tmp_path))
    assert done.returncode == 0 and f"note: {work / 'rules.yaml'} comes first" in done.stderr


def test_every_command_says_which_rules_it_uses(tmp_path):
    env = home_env(tmp_path)
    personal = tmp_path / "home" / ".ccswitch" / "rules.yaml"
    personal.parent.mkdir()
    personal.write_text("usage_db: u.db\n")
    check = cli("check", cwd=REPO, env=env)
    assert (f"ccswitch: rules from {REPO / 'rules.yaml'} (found as ./rules.yaml in the current directory, which "
            f"comes before ~/.ccswitch/rules.yaml; {personal} is not used") in check.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    env_cmd = cli("env", cwd=bare, env=home_env(bare))
    assert "ccswitch: rules from the built-in default" in env_cmd.stderr
    # no mitmproxy CA in a fresh home: `eval` would drop the comment saying so, so stderr says it too
    assert env_cmd.returncode == 1 and "does not exist yet, so the clients were not told to trust it" in env_cmd.stderr
    assert cli("env", "--reverse", cwd=bare, env=home_env(bare)).returncode == 0       # no CA needed there
    assert "rules from" not in env_cmd.stdout                        # stdout is eval'ed
    report = cli("report", "--json", "--rules", str(personal), cwd=bare, env=env)
    assert f"ccswitch: rules from {personal} (as named)" in report.stderr and "rules from" not in report.stdout
    activate = cli("activate", "nobody", cwd=tmp_path, env=env)
    assert activate.returncode == 1 and f"ccswitch: rules from {personal} (~/.ccswitch/rules.yaml" in activate.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: {claude: [ghost]}\n")
    failed = cli("check", str(bad), env=env)
    assert failed.returncode == 1 and f"ccswitch: rules from {bad} (as named)" in failed.stderr


def test_env_gives_claude_code_the_client_key_of_the_rules(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("""
client_keys: [ck-local-0001]
upstreams:
  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: '${CCSWITCH_TEST_UNSET_VAR}'}
routes: {claude: [a]}
""")
    # the clients' shell need not hold the relays' keys
    done = cli("env", "--reverse", "--rules", str(rules), env=home_env(tmp_path))
    assert done.returncode == 0, done.stderr
    shell = subprocess.run(["sh", "-c", done.stdout + '\necho "$ANTHROPIC_API_KEY|${CODEX_API_KEY-unset}"'],
                           capture_output=True, text=True)
    assert shell.stdout.strip() == "ck-local-0001|unset"
    missing = cli("env", "--rules", str(tmp_path / "nope.yaml"), env=home_env(tmp_path))
    assert missing.returncode == 1 and missing.stdout == "" and "no such file" in missing.stderr


def test_env_exports_no_client_key_whose_variable_is_unset_and_says_so(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("""
client_keys: [{name: me, key: '${CCSWITCH_TEST_UNSET_CLIENT_KEY}'}]
upstreams:
  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: '${CCSWITCH_TEST_UNSET_VAR}'}
routes: {claude: [a]}
""")
    done = cli("env", "--reverse", "--rules", str(rules), env=home_env(tmp_path))
    assert done.returncode == 1 and "ccswitch: ${CCSWITCH_TEST_UNSET_CLIENT_KEY} of your client key" in done.stderr
    assert "not set in this shell" in done.stderr and "${CCSWITCH_TEST_UNSET_CLIENT_KEY} of your" in done.stdout
    assert "ANTHROPIC_API_KEY=" not in done.stdout and "ANTHROPIC_BASE_URL=" in done.stdout
    # a variable inside a key: it was exported with the unset part left empty
    rules.write_text(rules.read_text().replace("'${CCSWITCH_TEST_UNSET_CLIENT_KEY}'", "'team-${CCSWITCH_TEST_UNSET_CLIENT_KEY}'"))
    done = cli("env", "--reverse", "--rules", str(rules), env=home_env(tmp_path))
    assert done.returncode == 1 and "ANTHROPIC_API_KEY=" not in done.stdout and "team-" not in done.stdout
    bad_port = cli("env", "--port", "70000", "--rules", str(rules), env=home_env(tmp_path))
    assert bad_port.returncode == 2 and "Traceback" not in bad_port.stderr and "1..65535" in bad_port.stderr


def test_run_help_is_ccswitchs_and_run_is_listed():
    done = cli("run", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: ccswitch run [--web] [ARGS...]")
    listed = cli("--help").stdout
    assert re.search(r"^\s+run\s+run mitmdump with ccswitch", listed, re.MULTILINE), listed


def test_activate_refuses_an_upstream_whose_key_variable_is_unset(tmp_path):
    # its probe went out with no key at all, and "ok" came back from relays that answer anything
    rules = tmp_path / "rules.yaml"
    rules.write_text("upstreams:\n"
                     "  - {name: on, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k}\n"
                     "  - {name: off, protocol: anthropic, base_url: 'http://127.0.0.1:9', enabled: false,\n"
                     "     api_key: '${CCSWITCH_TEST_UNSET_KEY}'}\n"
                     "routes: {claude: [on, off]}\n")
    env = {k: v for k, v in os.environ.items() if k != "CCSWITCH_TEST_UNSET_KEY"}
    done = cli("activate", "off", "--rules", str(rules), cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "off has no api_key (${CCSWITCH_TEST_UNSET_KEY} is not set where ccswitch runs): nothing to activate with" \
        in done.stderr


def test_every_command_refuses_a_rules_file_that_is_not_utf8_without_a_traceback(tmp_path):
    rules = tmp_path / "gbk.yaml"
    rules.write_bytes("# 中转站配置\nupstreams: []\n".encode("gbk"))
    for command in (["check", str(rules)], ["env", "--rules", str(rules)], ["report", "--rules", str(rules)],
                    ["activate", "a", "--rules", str(rules)], ["notify-test", "--rules", str(rules)]):
        done = cli(*command, cwd=tmp_path, env=home_env(tmp_path))
        assert done.returncode == 1, command
        assert f"{rules}: cannot read (not UTF-8)" in done.stderr and "Traceback" not in done.stderr, command


def test_env_says_when_the_bundle_dir_cannot_be_written(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mitmproxy-ca-cert.pem").write_text("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")
    (tmp_path / "afile").write_text("x")
    for bundle_dir in (tmp_path / "afile", tmp_path / "afile" / "sub", Path("/proc/ccswitch-nope")):
        done = cli("env", "--confdir", str(conf), "--bundle-dir", str(bundle_dir), cwd=tmp_path, env=home_env(tmp_path))
        assert done.returncode == 1 and "Traceback" not in done.stderr, bundle_dir
        assert f"--bundle-dir {bundle_dir}: cannot write there (" in done.stderr, bundle_dir
        assert "export" not in done.stdout         # nothing half-done to eval


def test_env_reads_a_plain_list_client_key_variable_too(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("""
client_keys: ['${CCSWITCH_TEST_CLIENT_KEY}']
upstreams:
  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: k}
routes: {claude: [a]}
""")
    done = cli("env", "--reverse", "--rules", str(rules), env=home_env(tmp_path))
    assert done.returncode == 1 and "not set in this shell" in done.stderr and "ANTHROPIC_API_KEY=" not in done.stdout
    done = cli("env", "--reverse", "--rules", str(rules), env={**home_env(tmp_path),
                                                                "CCSWITCH_TEST_CLIENT_KEY": "ck-from-env-0001"})
    assert done.returncode == 0 and "ANTHROPIC_API_KEY=ck-from-env-0001" in done.stdout
    check = cli("check", str(rules), env=home_env(tmp_path))
    assert check.returncode == 1 and "client_keys[0]: environment variable CCSWITCH_TEST_CLIENT_KEY" in check.stderr


def test_a_reader_gone_before_the_output_gets_no_traceback():
    """`ccswitch env | true`: every command ends quietly when its reader has left (as `report` did)."""
    read, write = os.pipe()
    os.close(read)                                   # the reader is gone before the first byte
    try:
        done = subprocess.run([str(CCSWITCH), "env", "--rules", "rules.yaml"], cwd=REPO, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


@pytest.mark.parametrize("usage_db", ["postgresql://ccswitch:${CCSWITCH_TEST_UNSET_LEDGER_PW}@127.0.0.1:9/ledger",
                                      "./${CCSWITCH_TEST_UNSET_LEDGER_PW}.db"])
def test_report_on_a_ledger_whose_password_variable_is_unset_names_the_variable(tmp_path, usage_db):
    """It tried the server without the password and printed the server's refusal instead (or,
    for a file, named the file the placeholder made)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"usage_db: {usage_db}\n" + """
upstreams:
  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: '${CCSWITCH_TEST_UNSET_VAR}'}
routes: {claude: [a]}
""")
    done = cli("report", "--rules", str(rules), env=home_env(tmp_path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "usage_db needs ${CCSWITCH_TEST_UNSET_LEDGER_PW}, which is not set in this shell" in done.stderr
    assert "CCSWITCH_TEST_UNSET_VAR" not in done.stderr          # the upstream's key: not the report's business


def test_check_notes_a_models_glob_an_earlier_one_takes_every_model_of(tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text("upstreams:\n  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: k,\n"
                     "     models: {'claude-*': x, 'claude-sonnet-*': y, claude-opus-4: z, 'gpt-?': w, '*': v}}\n"
                     "routes: {claude: [a]}\n")
    done = cli("check", str(rules))
    assert done.returncode == 0 and done.stdout.splitlines()[1:] == [
        "note: upstreams[a].models: 'claude-sonnet-*' is never used: 'claude-*', before it, takes every model it names"]


def test_rules_from_a_pipe_are_read_once_by_every_command(tmp_path):
    """`ccswitch check <(envsubst < rules.tmpl)`: a pipe can be read once, and a command reads its
    rules more than once (whether they are the shipped example, then to load them)."""
    example = (REPO / "rules.yaml").read_text()
    done = subprocess.run([str(CCSWITCH), "check", "/dev/stdin"], input=example, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "OK (" in done.stdout and "shipped example, unchanged" in done.stderr
    broken = "upstreams:\n  - {name: a}\n  - {name: b, protocol: nope, base_url: 'https://b.example', api_key: k}\n"
    done = subprocess.run([str(CCSWITCH), "check", "/dev/stdin"], input=broken, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "3 problem(s) found" in done.stderr and "is empty" not in done.stderr
    done = subprocess.run([str(CCSWITCH), "env", "--rules", "/dev/stdin"], input=example, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    assert "is empty" not in done.stderr and "export HTTPS_PROXY=" in done.stdout


def test_a_loop_of_links_is_called_that(tmp_path):
    (tmp_path / "one.yaml").symlink_to("two.yaml")
    (tmp_path / "two.yaml").symlink_to("one.yaml")
    done = cli("check", str(tmp_path / "one.yaml"))
    assert done.returncode == 1
    assert f"{tmp_path / 'one.yaml'}: is a link in a loop of links (it leads back to itself through two.yaml)" \
        in done.stderr and "does not exist" not in done.stderr


@pytest.mark.parametrize("command", [["check"], ["env"], ["report"], ["activate", "a"], ["notify-test"], ["init"]])
def test_an_unknown_option_is_refused_with_the_command_s_own_usage(command):
    done = cli(*command, "--bogus")
    assert done.returncode == 2 and done.stdout == ""
    usage, error = done.stderr.splitlines()[0], done.stderr.splitlines()[-1]
    assert usage.startswith(f"usage: ccswitch {command[0]} ")
    assert error == f"ccswitch {command[0]}: error: unrecognized arguments: --bogus"


def test_check_notes_a_name_that_reads_as_an_option(tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text("upstreams: [{name: -lead, protocol: anthropic, base_url: 'https://a.example', api_key: k}]\n"
                     "routes: {claude: [-lead]}\n")
    done = cli("check", str(rules))
    assert done.returncode == 0 and done.stdout.splitlines()[1:] == [
        "note: upstreams[-lead]: a name starting with '-' reads as an option on a command line: "
        "`ccswitch activate -- -lead`"]


def test_an_unknown_option_before_run_is_refused_without_a_traceback():
    done = cli("--bogus", "run", "--web")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == "ccswitch: error: unrecognized arguments: --bogus --web"


def test_env_says_when_nothing_listens_at_the_port_it_was_given(tmp_path):
    # a client pointed at a dead port retried for minutes before saying anything
    import socket
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mitmproxy-ca-cert.pem").write_text("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        dead = free.getsockname()[1]
    done = cli("env", "--confdir", str(conf), "--port", str(dead))
    assert done.returncode == 0 and "HTTPS_PROXY" in done.stdout      # the exports all the same
    assert f"nothing listens on 127.0.0.1:{dead} yet: start ccswitch with its regular listener" in done.stderr
    with socket.socket() as up:
        up.bind(("127.0.0.1", 0))
        up.listen()
        done = cli("env", "--reverse", "--port", str(up.getsockname()[1]))
    assert "nothing listens" not in done.stderr


@pytest.mark.parametrize("args", [("check", ""), ("check", "--rules", ""), ("report", "--rules", ""),
                                  ("report", "--db", ""), ("report", "--out", ""), ("env", "--rules", ""),
                                  ("env", "--confdir", ""), ("env", "--bundle-dir", ""),
                                  ("activate", "relay", "--rules", ""), ("notify-test", "--rules", "")])
def test_an_empty_name_is_refused_not_taken_for_none(args):
    """`ccswitch check "$UNSET"` checked ~/.ccswitch/rules.yaml (or ./rules.yaml) and said OK."""
    done = cli(*args)
    assert done.returncode == 2 and "an empty name (an unset shell variable?)" in done.stderr, done.stderr


def test_the_version_says_ccswitch_s_and_mitmproxy_s():
    # an upgrade's check had only `pip show` to tell which was running
    from importlib.metadata import version
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"ccswitch {version('ccswitch')}, mitmproxy {version('mitmproxy')}"
