"""Reloading rules.yaml: only content that stayed the same across two reads, never an empty file."""

import logging

import pytest

from ccswitch.config.values import RulesError
from ccswitch.config.watch import RulesFile, Settling
from tests.support.helpers import CLIENT_KEY, KEY_A

FULL = f"""\
client_keys: ['{CLIENT_KEY}']
intercept: [api.anthropic.com]
usage_db: ./ledger.db
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: b, protocol: anthropic, base_url: 'http://127.0.0.1:10', api_key: '{KEY_A}'}}
routes: {{claude: [a, b]}}
"""
EDITED = FULL.replace("routes: {claude: [a, b]}", "routes: {claude: [b, a]}")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def world(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(FULL)
    clock = Clock()
    rules_file = RulesFile(settle=0.25, clock=clock)
    rules_file.open(str(path))
    return path, clock, rules_file


def test_settling_needs_the_same_content_on_two_reads_the_quiet_time_apart():
    clock = Clock()
    settling = Settling(quiet=0.25, clock=clock)
    assert not settling.settled(b"x") and settling.pending      # first sight
    clock.advance(0.125)
    assert not settling.settled(b"x")                             # too soon
    clock.advance(0.125)
    assert settling.settled(b"x") and not settling.pending        # the same, 0.25 s later
    assert not settling.settled(b"y")
    clock.advance(0.5)
    assert not settling.settled(b"z")                             # changed meanwhile: starts again
    clock.advance(0.25)
    assert settling.settled(b"z")
    assert not settling.settled(None)                             # a missing file settles like any content
    clock.advance(0.25)
    assert settling.settled(None)


def test_a_change_is_applied_once_it_stayed_the_same(world):
    path, clock, rules_file = world
    path.write_text(EDITED)
    assert not rules_file.reload_if_changed() and rules_file.pending
    assert rules_file.rules.routes.for_route("claude") == ("a", "b")
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and rules_file.rules.routes.for_route("claude") == ("b", "a")
    assert not rules_file.pending
    clock.advance(0.25)
    assert not rules_file.reload_if_changed() and not rules_file.pending   # nothing new


def test_a_valid_prefix_of_a_file_written_in_place_is_never_applied(world, caplog):
    caplog.set_level(logging.INFO, logger="ccswitch")
    path, clock, rules_file = world
    prefix = EDITED[:EDITED.index("routes:")]        # ends after the upstreams block: valid rules
    path.write_text(prefix)
    assert not rules_file.reload_if_changed()
    clock.advance(0.25)
    path.write_text(EDITED)                           # the writer finished within the quiet time
    assert not rules_file.reload_if_changed()
    assert rules_file.rules.routes.for_route("claude") == ("a", "b")
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and rules_file.rules.routes.for_route("claude") == ("b", "a")
    assert caplog.text.count("rules reloaded") == 1


@pytest.mark.parametrize("content", ["", "\n  \n", "# being rewritten\n"])
def test_an_empty_file_is_never_applied(world, caplog, content):
    path, clock, rules_file = world
    before = rules_file.rules
    path.write_text(content)
    for _ in range(3):
        assert not rules_file.reload_if_changed()
        clock.advance(0.5)
    assert rules_file.rules is before
    assert [k.get_secret_value() for k in rules_file.rules.client_keys] == [CLIENT_KEY]
    assert set(rules_file.rules.intercept) == {"api.anthropic.com"}
    assert rules_file.rules.usage_db == path.parent / "ledger.db"
    assert caplog.text.count("is empty; keeping the last good rules") == 1   # logged once
    path.write_text(EDITED)
    assert not rules_file.reload_if_changed()
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and rules_file.rules.routes.for_route("claude") == ("b", "a")


def test_a_veto_keeps_the_last_good_rules(world, caplog):
    path, clock, rules_file = world
    seen = []
    rules_file.vetoes.append(lambda rules: seen.append(rules) or (None if rules.client_keys else "no client keys"))
    path.write_text(EDITED.replace(f"client_keys: ['{CLIENT_KEY}']\n", ""))
    assert not rules_file.reload_if_changed()
    clock.advance(0.25)
    assert not rules_file.reload_if_changed()
    assert len(seen) == 1 and rules_file.rules.client_keys and rules_file.rules.routes.for_route("claude") == ("a", "b")
    assert "rules edit refused, keeping the last good ones: no client keys" in caplog.text
    path.write_text(EDITED)
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and rules_file.rules.routes.for_route("claude") == ("b", "a")


@pytest.mark.parametrize("content", ["", "\n  \n", "# to be written\nversion: 1\n"[:16],
                                     "---\n", "--- # rules\n...\n"])     # YAML's markers alone: "OK (0 upstreams)"
def test_an_empty_file_at_start_is_refused_as_check_refuses_it(tmp_path, content):
    """Empty rules would route nothing (every request passing through untouched): the start and
    `ccswitch check` say so, as a reload does."""
    from ccswitch.config.load import load_rules
    from ccswitch.config.values import RulesError
    path = tmp_path / "rules.yaml"
    path.write_text(content)
    for load in (lambda: RulesFile().open(str(path)), lambda: load_rules(path)):
        with pytest.raises(RulesError, match=r"is empty .*would route nothing"):
            load()


def test_the_start_logs_which_rules_and_why_as_every_command_says_it(tmp_path, monkeypatch, caplog):
    """A ./rules.yaml of the directory the proxy starts in wins over ~/.ccswitch/rules.yaml:
    the log says so, not only the path."""
    caplog.set_level(logging.INFO, logger="ccswitch")
    home, project = tmp_path / "home", tmp_path / "project"
    (home / ".ccswitch").mkdir(parents=True)
    project.mkdir()
    (home / ".ccswitch" / "rules.yaml").write_text(FULL)
    (project / "rules.yaml").write_text(FULL)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project)
    RulesFile().open(None)
    assert (f"rules loaded from {project / 'rules.yaml'} (found as ./rules.yaml in the current directory, "
            f"which comes before ~/.ccswitch/rules.yaml; {home / '.ccswitch' / 'rules.yaml'} is not used") \
        in caplog.text and "; 2 upstreams" in caplog.text
    monkeypatch.chdir(tmp_path)
    RulesFile().open(str(project / "rules.yaml"))
    assert f"rules loaded from {project / 'rules.yaml'} (as named); 2 upstreams" in caplog.text


@pytest.fixture
def on_the_default(tmp_path, monkeypatch):
    """(home, working folder, clock, rules file) with no rules file anywhere: the built-in default."""
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    clock = Clock()
    rules_file = RulesFile(settle=0.25, clock=clock)
    assert rules_file.open(None) and rules_file.path is None
    return home, cwd, clock, rules_file


def test_a_rules_file_written_while_the_built_in_default_serves_is_taken_up(on_the_default):
    # `ccswitch init` and an edit while it ran on the default: nothing was watched, and the user's
    # requests went on to the official APIs until a restart
    home, _, clock, rules_file = on_the_default
    assert not rules_file.reload_if_changed() and rules_file.path is None
    personal = home / ".ccswitch" / "rules.yaml"
    personal.parent.mkdir(parents=True)
    personal.write_text(FULL)
    assert not rules_file.reload_if_changed()           # seen once: settling, as any edit
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and rules_file.path == personal
    assert rules_file.rules.routes.for_route("claude") == ("a", "b")
    personal.write_text(EDITED)                         # and watched from then on
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and rules_file.rules.routes.for_route("claude") == ("b", "a")


def test_naming_the_file_again_after_a_refused_edit_says_why_it_is_refused(world):
    path, clock, rules_file = world
    path.write_text("upstreams: [\n")
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert not rules_file.reload_if_changed()            # refused, logged
    with pytest.raises(RulesError):                       # `set ccswitch_rules` to it: said again, not "no change"
        rules_file.open(str(path))
    path.write_text(FULL)
    assert not rules_file.open(str(path))                 # the rules in force: nothing changes


def test_on_the_default_a_candidate_that_never_loaded_does_not_stick(on_the_default):
    home, cwd, clock, rules_file = on_the_default
    (cwd / "rules.yaml").mkdir()                          # a folder there for a while
    for _ in range(2):
        assert not rules_file.reload_if_changed()
        clock.advance(0.25)
    (cwd / "rules.yaml").rmdir()
    personal = home / ".ccswitch" / "rules.yaml"
    personal.parent.mkdir(parents=True)
    personal.write_text(FULL)
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and rules_file.path == personal


def test_naming_the_file_again_after_a_vetoed_edit_is_vetoed_too_and_the_rules_stay(world):
    # it put the refused rules in force (no veto ran in open), and the option's roll-back kept them
    path, clock, rules_file = world
    rules_file.vetoes.append(lambda rules: None if rules.client_keys else "no client keys")
    path.write_text(EDITED.replace(f"client_keys: ['{CLIENT_KEY}']\n", ""))
    with pytest.raises(RulesError, match="no client keys"):
        rules_file.open(str(path))                         # `set ccswitch_rules` to the same file
    assert not rules_file.open(str(path))                  # mitmproxy's roll-back names it again: nothing moves
    assert rules_file.rules.client_keys and rules_file.rules.routes.for_route("claude") == ("a", "b")


def test_the_same_rules_in_another_file_are_opened_from_that_file(world, tmp_path):
    # the same bytes elsewhere are not "the rules in force": the file named is watched from now on
    path, _, rules_file = world
    other = tmp_path / "other.yaml"
    other.write_text(FULL)
    assert rules_file.open(str(other)) and rules_file.path == other


def test_a_file_refused_elsewhere_is_still_refused_when_the_watched_file_holds_it(world, tmp_path):
    # a refusal is remembered for the file that was refused, not for any file with that content
    path, _, rules_file = world
    other = tmp_path / "other.yaml"
    other.write_text("upstreams: [\n")
    with pytest.raises(RulesError):
        rules_file.open(str(other))
    path.write_text("upstreams: [\n")
    with pytest.raises(RulesError):
        rules_file.open(str(path))


def test_vetoes_are_for_a_running_proxy_not_the_first_open(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(FULL)
    rules_file = RulesFile(settle=0.25, clock=Clock())
    rules_file.vetoes.append(lambda rules: "refused")
    assert rules_file.open(str(path))


def test_a_change_undone_and_made_again_settles_afresh(world):
    # the edit seen before it was undone must not count as already settled
    path, clock, rules_file = world
    path.write_text(EDITED)
    assert not rules_file.reload_if_changed()
    path.write_text(FULL)
    assert not rules_file.reload_if_changed()        # changed back: nothing waits
    clock.advance(1)
    path.write_text(EDITED)
    assert not rules_file.reload_if_changed()        # first sight again
    clock.advance(0.25)
    assert rules_file.reload_if_changed()


def test_naming_the_file_again_after_a_reload_changes_nothing(world):
    # mitmproxy names the file again: the reloaded rules are in force, nothing is read anew
    path, clock, rules_file = world
    path.write_text(EDITED)
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert rules_file.reload_if_changed()
    assert not rules_file.open(str(path))


def test_an_edit_that_leaves_a_route_without_upstreams_is_applied_with_a_warning(world, caplog):
    # a routes: block lost in an edit (or a file paused half-written past the quiet time) sent
    # every request on to its original host, and the log said only "rules reloaded"
    caplog.set_level(logging.INFO, logger="ccswitch")
    path, clock, rules_file = world
    path.write_text(FULL[:FULL.index("routes:")])
    rules_file.reload_if_changed()
    clock.advance(0.25)
    # a file paused half-written, its routes: still to come, must not be put in force at once
    assert not rules_file.reload_if_changed() and rules_file.rules.routes.for_route("claude") == ("a", "b")
    assert "leaves the claude route with no upstream: applied if it stays so for 3 s" in caplog.text
    clock.advance(1.0)                          # read on, as the watcher does: still held
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert not rules_file.reload_if_changed()
    clock.advance(2.0)                          # 3 s and more since: an edit that means it
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and rules_file.rules.routes.for_route("claude") == ()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warned] == [
        "ccswitch: the claude route lists no upstream since this edit: its requests now go to their original "
        "destination untouched, with the client's own credentials"]
    path.write_text(EDITED.replace("routes: {claude: [b, a]}", "routes: {claude: [b]}"))
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_why_the_files_last_change_is_not_in_force_is_kept_until_a_change_is(world):
    """For the live page: the log says it once, the page as long as it holds."""
    path, clock, rules_file = world
    assert rules_file.not_applied is None
    path.write_text(EDITED.replace("protocol: anthropic", "protocol: antropic").replace("[b, a]", "[b, a, c]"))
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert not rules_file.reload_if_changed()
    why, since = rules_file.not_applied
    assert why == "the rules file's last edit is invalid (3 problems)" and since > 0
    assert KEY_A not in why
    path.unlink()
    path.mkdir()           # a folder where the file was: it read "disappeared"
    rules_file.reload_if_changed()
    clock.advance(0.25)
    rules_file.reload_if_changed()
    # since the file stopped being in force, not since its latest bad save
    assert rules_file.not_applied == ("the rules file is a folder now", since)
    path.rmdir()
    path.write_text(EDITED)
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and rules_file.not_applied is None


@pytest.mark.parametrize("how, why", [
    ("empty", "the rules file is empty"),
    ("vetoed", "the rules file's last edit was refused"),
    ("lacking", "the rules file's last edit needs what this machine lacks"),
])
def test_each_change_kept_out_of_force_says_why_for_the_live_page(world, how, why):
    path, clock, rules_file = world
    if how == "vetoed":
        rules_file.vetoes.append(lambda rules: "no client keys")
    if how == "lacking":
        rules_file.needs = lambda rules: [("usage_db", "needs a driver this machine lacks")]
    path.write_text("" if how == "empty" else EDITED)
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert not rules_file.reload_if_changed()
    assert rules_file.not_applied[0] == why


@pytest.mark.parametrize("reopened", ["the file mended", "the built-in default"])
def test_rules_opened_anew_end_the_word_that_the_last_edit_is_not_in_force(world, tmp_path, monkeypatch, reopened):
    # set ccswitch_rules again (the log's advice): the page must not go on warning of an edit that no longer counts
    path, clock, rules_file = world
    path.write_text("")
    rules_file.reload_if_changed()
    clock.advance(0.25)
    rules_file.reload_if_changed()
    assert rules_file.not_applied is not None
    if reopened == "the file mended":
        path.write_text(EDITED)
        assert rules_file.open(str(path))
    else:
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert rules_file.open(None) and rules_file.path is None
    assert rules_file.not_applied is None


def test_an_edit_naming_an_unset_variable_says_a_running_ccswitch_needs_a_restart_for_it(world, caplog):
    # "export it where ccswitch runs" cannot be done for a process already running
    path, clock, rules_file = world
    path.write_text(EDITED.replace(f"api_key: '{KEY_A}'", "api_key: '${NOT_SET_ANYWHERE}'", 1))
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert not rules_file.reload_if_changed()
    assert "environment variable NOT_SET_ANYWHERE is not set" in caplog.text
    assert "needs a restart with it set" in caplog.text


def test_a_rules_path_through_a_loop_of_folder_links_is_a_rules_problem_not_an_os_error(tmp_path):
    """`--set ccswitch_rules=one/rules.yaml` with `one` a link in a loop: mitmproxy is told an
    invalid rules file (the watcher reads without a look first, as the commands do not)."""
    (tmp_path / "one").symlink_to("two")
    (tmp_path / "two").symlink_to("one")
    with pytest.raises(RulesError) as refused:
        RulesFile().open(str(tmp_path / "one" / "rules.yaml"))
    assert str(refused.value) == f"{tmp_path / 'one' / 'rules.yaml'}: is a link in a loop of links"


def test_a_half_written_file_whose_routes_come_after_a_pause_never_empties_them(world):
    # a writer pausing 1.2 s after the upstreams: the half was applied, requests went on unrouted
    path, clock, rules_file = world
    path.write_text(EDITED[:EDITED.index("routes:")])
    for _ in range(4):
        clock.advance(0.25)
        rules_file.reload_if_changed()
    assert rules_file.rules.routes.for_route("claude") == ("a", "b")
    path.write_text(EDITED)                    # the rest of the file
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert rules_file.reload_if_changed() and rules_file.rules.routes.for_route("claude") == ("b", "a")


def test_the_file_back_to_the_rules_in_force_is_no_reload(world, caplog):
    # ccswitch.disable, a bad edit, the old content put back: the reload dropped the switch
    caplog.set_level(logging.INFO, logger="ccswitch")
    path, clock, rules_file = world
    path.write_text(FULL.replace("protocol: anthropic", "protocol: antropic"))
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert not rules_file.reload_if_changed() and rules_file.not_applied is not None
    path.write_text(FULL)
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert not rules_file.reload_if_changed() and rules_file.not_applied is None
    assert "holds the rules in force again" in caplog.text and "rules reloaded" not in caplog.text
    path.unlink()                              # deleted and put back as it was
    rules_file.reload_if_changed()
    clock.advance(0.25)
    rules_file.reload_if_changed()
    path.write_text(FULL)
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert not rules_file.reload_if_changed() and "rules reloaded" not in caplog.text


def test_a_half_written_file_seen_again_long_after_is_held_afresh(world):
    # the first slow save's half was remembered: the same half read minutes later went in at once
    path, clock, rules_file = world
    half = FULL[:FULL.index("routes:")]
    for _ in range(2):           # the same file saved slowly twice, minutes apart
        path.write_text(half)
        rules_file.reload_if_changed()
        clock.advance(0.25)
        assert not rules_file.reload_if_changed()          # held
        path.write_text(FULL)                              # the whole file: the rules in force
        assert not rules_file.reload_if_changed()
        clock.advance(300)
    assert rules_file.rules.routes.for_route("claude") == ("a", "b")


def test_a_pipe_put_in_the_rules_files_place_is_not_read_and_the_rules_stay(world, caplog):
    # `mkfifo rules.yaml`: the next look opened it and waited for a writer, stopping the whole
    # proxy (every request, every timer) for as long as none came
    import os
    import threading
    path, clock, rules_file = world
    path.unlink()
    os.mkfifo(path)
    looked = []
    looking = threading.Thread(target=lambda: looked.append(rules_file.reload_if_changed()), daemon=True)
    looking.start()
    looking.join(5)
    if looking.is_alive():       # unblock the thread the old code left waiting, then fail
        with open(path, "wb") as writer:
            writer.write(b"")
        pytest.fail("the look at the rules file waited on a pipe")
    clock.advance(0.25)
    assert looked == [False] and not rules_file.reload_if_changed()
    assert "is no regular file now (a pipe?), not read while ccswitch runs; keeping the last good rules" in caplog.text
    assert rules_file.rules.routes.for_route("claude")


def test_a_rules_file_turned_into_a_loop_of_links_is_said_so_not_disappeared(world, caplog):
    import os
    path, clock, rules_file = world
    path.unlink()
    os.symlink(path.name, path)        # a link to itself
    rules_file.reload_if_changed()
    clock.advance(0.25)
    assert not rules_file.reload_if_changed()
    assert f"rules file {path} is a link in a loop of links" in caplog.text and "disappeared" not in caplog.text
