"""What rules need of the machine: the optional packages of the engines they name, a folder
their SQLite ledger can be written in (`config.needs`)."""

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.config.values import RulesError


def test_rules_naming_an_engine_whose_package_is_missing_say_what_to_install(monkeypatch):
    # else a PostgreSQL ledger kept its rows in memory until the stop, and `check` said OK
    import importlib.util
    installed = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("psycopg", "redis") else installed(name, *a))
    text = "usage_db: postgresql://u:pw@db.internal/usage\nstate: redis://cache.internal:6379/0\n"
    with pytest.raises(RulesError) as caught:
        parse_rules(text, source="rules.yaml")
    assert caught.value.problems == [
        "rules.yaml: usage_db: a PostgreSQL usage_db needs psycopg, which is not installed here: "
        "pip install 'ccswitch[postgres]'",
        "rules.yaml: state: a Redis state needs the redis package, which is not installed here: "
        "pip install 'ccswitch[redis]'"]
    monkeypatch.setattr(importlib.util, "find_spec", installed)
    assert parse_rules(text).state is not None


def test_a_sqlite_ledger_that_cannot_be_made_is_a_problem_of_the_rules(tmp_path):
    # found only once rows came, then lost at the stop: "FileExistsError: [Errno 17] File exists"
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.db").mkdir()
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    for usage_db, problem in [
        ("afile/usage.db", f"{tmp_path / 'afile'} is a file, so no folder can be made there for "
                           f"{tmp_path / 'afile' / 'usage.db'}"),
        ("afile/deeper/usage.db", f"{tmp_path / 'afile'} is a file, so no folder can be made there"),
        ("adir.db", f"{tmp_path / 'adir.db'} is a folder: name a file in it, e.g. {tmp_path / 'adir.db' / 'usage.db'}"),
        ("gone/usage.db", f"{tmp_path / 'gone'} is a link to {tmp_path / 'nowhere'}, which does not exist"),
    ]:
        with pytest.raises(RulesError) as caught:
            parse_rules(f"usage_db: {usage_db}\n", source="rules.yaml", base_dir=tmp_path)
        [found] = caught.value.problems
        assert found.startswith(f"rules.yaml: usage_db: {problem}"), found
    for fine in ("new/folders/usage.db", "usage.db"):
        assert parse_rules(f"usage_db: {fine}\n", base_dir=tmp_path).usage_db == tmp_path / fine
        assert not (tmp_path / "new").exists()       # checked, not made: the ledger makes it when it opens
