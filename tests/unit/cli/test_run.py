"""`ccswitch run`: which program, which entry, which arguments (the process replacement is e2e)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccswitch.cli import run as runmod
from tests.support import REPO


def test_the_entry_ships_inside_the_package_and_builds_the_addons():
    entry = runmod.entry_path()
    assert entry == REPO / "ccswitch" / "mitm" / "entry.py" and entry.is_file()
    assert "addons = make_addons()" in entry.read_text()
    # loaded as mitmproxy loads a script: by path, as a module of its own
    probe = subprocess.run([sys.executable, "-c", (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('s', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "print(sorted(type(a).__name__ for a in m.addons))"), str(entry)],
        capture_output=True, text=True, cwd="/", timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert "Router" in probe.stdout


@pytest.mark.parametrize("args, expect", [
    ([], (False, [])),
    (["--web"], (True, [])),
    (["--mode", "regular@8080"], (False, ["--mode", "regular@8080"])),
    (["--web", "--set", "web_port=9"], (True, ["--set", "web_port=9"])),
    (["--", "--help"], (False, ["--help"])),
    (["--web", "--", "--web"], (True, ["--web"])),
    (["-q", "--web"], (True, ["-q"])),          # anywhere: mitmdump said only "unrecognized arguments: --web"
    (["--mode", "regular@8080", "--web", "--", "-q"], (True, ["--mode", "regular@8080", "-q"])),
    (["--help"], None), (["-h"], None), (["--web", "--help"], None),
])
def test_split_args(args, expect):
    assert runmod.split_args(args) == expect


def test_mitm_argv_puts_the_entry_first_and_binds_loopback_from_the_start(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))     # no ~/.mitmproxy/config.yaml of the machine's
    # mitmproxy binds before the script loads: without this it listened on every interface a moment
    argv = runmod.mitm_argv(Path("/v/bin/mitmdump"), ["--mode", "regular@1"])
    assert argv == ["/v/bin/mitmdump", "-s", str(runmod.entry_path()), "--listen-host", "127.0.0.1",
                    "--mode", "regular@1"]


def test_a_listen_host_in_mitmproxys_config_file_is_left_to_the_user(tmp_path):
    # mitmproxy reads confdir/config.yaml first and the command line after: a host given there
    # would silently lose to ours
    (tmp_path / "config.yaml").write_text("listen_host: 0.0.0.0\n")
    argv = runmod.mitm_argv(Path("/v/bin/mitmdump"), ["--set", f"confdir={tmp_path}"])
    assert "--listen-host" not in argv
    (tmp_path / "config.yaml").write_text("web_port: 8090\n")
    assert "--listen-host" in runmod.mitm_argv(Path("/v/bin/mitmdump"), ["--set", f"confdir={tmp_path}"])


@pytest.mark.parametrize("given", [["--listen-host", "0.0.0.0"], ["--listen-host=::"],
                                   ["--set", "listen_host=10.0.0.2"], ["--set=listen_host=10.0.0.2"]])
def test_a_listen_host_of_the_users_own_is_left_to_them(given):
    argv = runmod.mitm_argv(Path("/v/bin/mitmdump"), [*given, "--mode", "regular@1"])
    assert argv == ["/v/bin/mitmdump", "-s", str(runmod.entry_path()), *given, "--mode", "regular@1"]


def test_mitm_program_beside_python_even_through_a_symlink(tmp_path, monkeypatch):
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)          # as a venv's bin/python is
    for name in ("mitmdump", "mitmweb"):
        (venv_bin / name).write_text("#!/bin/sh\n")
        (venv_bin / name).chmod(0o755)
    monkeypatch.setenv("PATH", "")
    assert runmod.mitm_program(False, str(venv_bin / "python")) == venv_bin / "mitmdump"
    assert runmod.mitm_program(True, str(venv_bin / "python")) == venv_bin / "mitmweb"
    (venv_bin / "mitmweb").unlink()
    assert runmod.mitm_program(True, str(venv_bin / "python")) is None
    on_path = tmp_path / "path"
    on_path.mkdir()
    (on_path / "mitmweb").write_text("#!/bin/sh\n")
    (on_path / "mitmweb").chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path))
    assert runmod.mitm_program(True, str(venv_bin / "python")) == on_path / "mitmweb"


def test_missing_program_is_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runmod, "mitm_program", lambda web, python=None: None)
    assert runmod.run(["--web"]) == 127
    assert "mitmweb not found beside" in capsys.readouterr().err


def test_the_installed_mitmdump_is_found():
    assert runmod.mitm_program(False) == Path(sys.executable).with_name("mitmdump")
    assert os.access(runmod.mitm_program(False), os.X_OK)


@pytest.mark.parametrize("given", [None, "0"])
def test_mitmdump_writes_its_log_unbuffered_unless_told_otherwise(monkeypatch, given):
    # under a service (no terminal) its log said nothing until the first requests filled a block
    started = {}

    def execv(path, argv):
        started["unbuffered"] = os.environ.get("PYTHONUNBUFFERED")
        raise OSError("not started in a test")
    monkeypatch.setenv("PYTHONUNBUFFERED", "restored after the test")
    if given is None:
        monkeypatch.delenv("PYTHONUNBUFFERED")
    else:
        monkeypatch.setenv("PYTHONUNBUFFERED", given)
    monkeypatch.setattr(runmod.os, "execv", execv)
    assert runmod.run(["--mode", "regular@8080"]) == 126
    assert started["unbuffered"] == (given or "1")


def _not_started(path, argv):
    raise AssertionError(f"started {argv}")


@pytest.mark.parametrize("text, problem", [
    ("upstreams:\n  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: '${CCSW_T_UNSET}'}\n"
     "routes: {claude: [a]}\n", "environment variable CCSW_T_UNSET is not set"),
    ("routes: {claud: []}\n", "did you mean"),
])
def test_rules_the_proxy_would_refuse_stop_the_start_before_anything_listens(tmp_path, monkeypatch, capsys, text,
                                                                              problem):
    # mitmproxy binds its listeners before it finds its script's error: a client in between got a
    # refused connection, the log a traceback
    monkeypatch.delenv("CCSW_T_UNSET", raising=False)
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    monkeypatch.setattr(runmod.os, "execv", _not_started)
    assert runmod.run(["--set", f"ccswitch_rules={rules}", "--mode", "regular@8080"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("invalid ccswitch rules:\n") and problem in err and str(rules) in err
    assert runmod.run([f"--set=ccswitch_rules={tmp_path / 'missing.yaml'}"]) == 1
    assert "missing.yaml: no such file" in capsys.readouterr().err


def test_rules_mitmproxys_config_file_names_are_left_to_the_proxy(tmp_path, monkeypatch):
    (tmp_path / "config.yaml").write_text(f"ccswitch_rules: {tmp_path / 'elsewhere.yaml'}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "rules.yaml").write_text("routes: {claud: []}\n")     # what ccswitch would find without it
    assert runmod.rules_problem(["--set", f"confdir={tmp_path}"]) is None
    assert "did you mean" in runmod.rules_problem([])
