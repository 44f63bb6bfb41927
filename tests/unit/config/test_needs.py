"""What rules need of the machine the proxy runs them on: the optional packages of the engines
they name, a folder their SQLite ledger can be written in (`config.needs`), checked where rules
are put in force and by `ccswitch check`, not by the commands that only read them."""

import importlib.util
import logging
import os
import sys
from pathlib import Path

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.config.needs import unmet_needs
from ccswitch.config.values import RulesError
from ccswitch.config.watch import RulesFile
from tests.unit.cli.test_cli import cli


@pytest.fixture
def no_engines(monkeypatch):
    installed = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("psycopg", "redis") else installed(name, *a))


def test_rules_naming_an_engine_whose_package_is_missing_say_what_to_install(no_engines):
    # else a PostgreSQL ledger kept its rows in memory until the stop, and `check` said OK
    rules = parse_rules("usage_db: postgresql://u:pw@db.internal/usage\nstate: redis://cache.internal:6379/0\n")
    # ccswitch is on no package index: `pip install 'ccswitch[redis]'` found nothing from a pipx install
    python = sys.executable
    assert unmet_needs(rules) == [
        ("usage_db", "a PostgreSQL usage_db needs psycopg, which is not installed here: "
                     f"{python} -m pip install 'psycopg[binary]>=3.1' (the environment ccswitch runs in; pipx: "
                     "pipx inject ccswitch 'psycopg[binary]>=3.1'; a checkout: pip install -e '.[postgres]')"),
        ("state", "a Redis state needs the redis package, which is not installed here: "
                  f"{python} -m pip install 'redis>=5' (the environment ccswitch runs in; pipx: pipx inject ccswitch "
                  "'redis>=5'; a checkout: pip install -e '.[redis]')")]
    assert unmet_needs(rules, ledger=False) == [unmet_needs(rules)[1]]     # the ledger off: no database needed


def test_a_sqlite_ledger_that_cannot_be_made_is_named(tmp_path):
    # found only once rows came, then lost at the stop: "FileExistsError: [Errno 17] File exists"
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.db").mkdir()
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    (tmp_path / "to-nowhere.db").symlink_to(tmp_path / "afile" / "usage.db")
    (tmp_path / "to-no-folder.db").symlink_to(tmp_path / "data" / "sub" / "usage.db")
    (tmp_path / "rw").mkdir()
    (tmp_path / "to-a-folder.db").symlink_to(tmp_path / "rw" / "usage.db")
    for usage_db, problem in [
        ("afile/usage.db", f"{tmp_path / 'afile'} is a file, so no folder can be made there for "
                           f"{tmp_path / 'afile' / 'usage.db'}"),
        ("afile/deeper/usage.db", f"{tmp_path / 'afile'} is a file, so no folder can be made there"),
        ("adir.db", f"{tmp_path / 'adir.db'} is a folder: name a file in it, e.g. {tmp_path / 'adir.db' / 'usage.db'}"),
        ("gone/usage.db", f"{tmp_path / 'gone'} is a link to {tmp_path / 'nowhere'}, which does not exist"),
        ("to-nowhere.db", f"{tmp_path / 'to-nowhere.db'} is a link to {tmp_path / 'afile' / 'usage.db'}, whose "
                          "folder is a file"),
        ("to-no-folder.db", f"{tmp_path / 'to-no-folder.db'} is a link to {tmp_path / 'data' / 'sub' / 'usage.db'}, "
                            "whose folder does not exist"),     # the ledger makes the link's folder only
    ]:
        [(key, found)] = unmet_needs(parse_rules(f"usage_db: {usage_db}\n", base_dir=tmp_path))
        assert key == "usage_db" and found.startswith(problem), found
    for fine in ("new/folders/usage.db", "usage.db", "to-a-folder.db"):
        assert unmet_needs(parse_rules(f"usage_db: {fine}\n", base_dir=tmp_path)) == []
        assert not (tmp_path / "new").exists()       # checked, not made: the ledger makes it when it opens


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to act as another user")
def test_a_folder_that_may_not_be_looked_into_is_named_not_a_traceback(tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    rules = parse_rules(f"usage_db: {closed / 'inner' / 'usage.db'}\n")
    pid = os.fork()
    if pid == 0:                                    # as nobody: `closed` may not be entered
        ok = False
        try:
            os.setuid(65534)
            ok = unmet_needs(rules)[0][1].startswith(f"cannot look at {closed / 'inner'}")
        finally:
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_rules_put_in_force_are_refused_for_a_need_a_reload_keeps_the_last_good(tmp_path, caplog, no_engines):
    good, needy = "usage_db: usage.db\n", "usage_db: postgresql://u:pw@db.internal/usage\n"
    path = tmp_path / "rules.yaml"
    path.write_text(needy)
    rules_file = RulesFile(settle=0)
    rules_file.needs = unmet_needs
    with pytest.raises(RulesError, match=r"rules.yaml: usage_db: a PostgreSQL usage_db needs psycopg"):
        rules_file.open(str(path))
    path.write_text(good)
    assert rules_file.open(str(path)) and rules_file.rules.usage_db == tmp_path / "usage.db"
    path.write_text(needy)
    caplog.set_level(logging.ERROR)
    assert not rules_file.reload_if_changed() and not rules_file.reload_if_changed()
    assert rules_file.rules.usage_db == tmp_path / "usage.db" and "needs psycopg" in caplog.text


def test_the_placeholder_default_is_not_checked_before_the_rules_are_named(tmp_path, monkeypatch):
    # a read-only HOME refused the start of rules that name another usage_db
    monkeypatch.setenv("HOME", str(tmp_path / "no-home"))
    (tmp_path / "no-home").write_text("a file, so ~/.ccswitch cannot be made")
    rules_file = RulesFile()
    rules_file.needs = unmet_needs
    path = tmp_path / "rules.yaml"
    path.write_text(f"usage_db: {tmp_path / 'usage.db'}\n")
    assert rules_file.open(str(path))


def test_check_names_what_the_proxy_would_refuse_here_and_the_readers_do_not(tmp_path):
    (tmp_path / "afile").write_text("x")
    rules = tmp_path / "rules.yaml"
    rules.write_text("usage_db: afile/usage.db\n")
    done = cli("check", str(rules))
    assert done.returncode == 1 and f"{rules}: usage_db: {tmp_path / 'afile'} is a file" in done.stderr
    assert cli("env", "--reverse", "--rules", str(rules), env={"HOME": str(tmp_path)}).returncode == 0


def test_an_edit_refused_for_a_need_is_applied_by_naming_the_file_again_once_mended(tmp_path, caplog):
    missing = {"psycopg"}
    path = tmp_path / "rules.yaml"
    path.write_text("usage_db: usage.db\n")
    rules_file = RulesFile(settle=0)
    rules_file.needs = lambda rules: [("usage_db", "needs psycopg")] if missing and "postgres" in str(
        rules.usage_db.__class__).lower() else []
    rules_file.open(str(path))
    path.write_text("usage_db: postgresql://u:pw@db.internal/usage\n")
    caplog.set_level(logging.ERROR)
    assert not rules_file.reload_if_changed() and not rules_file.reload_if_changed()
    assert "set ccswitch_rules to the file again" in caplog.text
    missing.clear()                                        # pip install 'ccswitch[postgres]'
    assert rules_file.open(str(path)) and "postgresql" in repr(rules_file.rules.usage_db)


def test_the_built_in_default_is_refused_too_when_the_machine_lacks_its_needs(tmp_path, monkeypatch):
    # no rules file: the default goes in force as a named file would, needs checked
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    rules_file = RulesFile()
    rules_file.needs = lambda rules: [("usage_db", "lacking")]
    with pytest.raises(RulesError, match="usage_db: lacking"):
        rules_file.open(None)


def test_a_ledger_file_or_its_folder_that_may_not_be_written_is_named(tmp_path, monkeypatch):
    # os.access is faked: the tests may run as root, who may write anywhere
    (tmp_path / "ro.db").write_text("")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "usage.db").write_text("")
    (tmp_path / "rw").mkdir()
    (tmp_path / "link.db").symlink_to(tmp_path / "ro" / "new.db")
    closed = {tmp_path / "ro.db", tmp_path / "ro"}
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: Path(p) not in closed and real(p, mode, *a, **k))
    for usage_db, problem in [
        ("ro.db", f"{tmp_path / 'ro.db'} cannot be written (no permission)"),
        ("ro/usage.db", f"{tmp_path / 'ro' / 'usage.db'} cannot be written: no permission to write in "
                        f"{tmp_path / 'ro'}, where SQLite keeps its journal"),
        ("link.db", f"cannot create {tmp_path / 'ro' / 'new.db'} (no permission to write in {tmp_path / 'ro'})"),
    ]:
        assert unmet_needs(parse_rules(f"usage_db: {usage_db}\n", base_dir=tmp_path)) == [("usage_db", problem)]


def test_naming_the_file_again_once_the_machine_has_its_needs_clears_the_pages_warning(tmp_path):
    # the log says "set ccswitch_rules to the file again": the page's line must go with that too
    path = tmp_path / "rules.yaml"
    path.write_text("usage_db: usage.db\n")
    lacking = [True]
    rules_file = RulesFile(settle=0)
    rules_file.needs = lambda rules: [("usage_db", "needs psycopg")] if lacking[0] and "postgresql" in str(
        rules.usage_db) else []
    rules_file.open(str(path))
    path.write_text("usage_db: postgresql://u:pw@pg.internal/usage\n")
    assert not rules_file.reload_if_changed() and not rules_file.reload_if_changed()
    assert rules_file.not_applied[0] == "the rules file's last edit needs what this machine lacks"
    lacking[0] = False
    assert rules_file.open(str(path)) and rules_file.not_applied is None
