"""`ccswitch activate` and `notify-test` use part of the rules: a ${VAR} unset for another part
(another relay's key, in a shell that holds only this one's) does not stop them, and one their
own part needs is named."""

from __future__ import annotations

import sqlite3

from ccswitch.cli.app import main
from tests.support.mock_upstream import MockUpstream
from tests.support.webhook_receiver import WebhookReceiver

OTHER = "CCSWITCH_TEST_OTHER_RELAY_KEY"
OWN = "CCSWITCH_TEST_OWN_RELAY_KEY"


def rules(tmp_path, base_url: str, extra: str = "") -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(f"""
usage_db: '{tmp_path / "usage.db"}'
{extra}
upstreams:
  - {{name: mine, protocol: anthropic, base_url: '{base_url}', api_key: '${{{OWN}}}'}}
  - {{name: other, protocol: anthropic, base_url: '{base_url}', api_key: '${{{OTHER}}}',
     headers: {{x-team: '${{CCSWITCH_TEST_OTHER_TEAM}}'}}}}
routes: {{claude: [mine, other]}}
""")
    return str(path)


def test_activate_needs_only_the_probed_upstreams_variables(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(OWN, "sk-mine-0000000000")
    monkeypatch.delenv(OTHER, raising=False)
    with MockUpstream("relay") as mock:
        assert main(["activate", "mine", "--rules", rules(tmp_path, mock.base_url)]) == 0
    assert mock.requests[0].headers["x-api-key"] == "sk-mine-0000000000"
    assert capsys.readouterr().out.startswith("mine: activation ok (status 200")
    with sqlite3.connect(tmp_path / "usage.db") as db:
        assert db.execute("select upstream, ok from activations").fetchall() == [("mine", 1)]


def test_activate_names_the_variables_the_probed_upstream_lacks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(OWN, "sk-mine-0000000000")
    monkeypatch.delenv(OTHER, raising=False)
    monkeypatch.delenv("CCSWITCH_TEST_OTHER_TEAM", raising=False)
    with MockUpstream("relay") as mock:
        assert main(["activate", "other", "--rules", rules(tmp_path, mock.base_url)]) == 1
    assert not mock.requests
    err = capsys.readouterr().err
    assert (f"activating other needs ${{{OTHER}}}, ${{CCSWITCH_TEST_OTHER_TEAM}}, which are not set in this shell"
            in err)
    assert "ccswitch-unset" not in err


def test_a_problem_beyond_unset_variables_is_still_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(OWN, "sk-mine-0000000000")
    monkeypatch.delenv(OTHER, raising=False)
    path = rules(tmp_path, "http://127.0.0.1:9", extra="colour: red")
    assert main(["activate", "mine", "--rules", path]) == 1
    err = capsys.readouterr().err
    assert "colour" in err and OTHER in err            # every problem, as a strict load says them


def test_notify_test_needs_only_the_hooks_variables(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(OWN, raising=False)
    monkeypatch.delenv(OTHER, raising=False)
    monkeypatch.delenv("CCSWITCH_TEST_HOOK_TOKEN", raising=False)
    with WebhookReceiver() as hook:
        extra = f"notify: [{{url: '{hook.url()}'}}]"
        assert main(["notify-test", "--rules", rules(tmp_path, "http://127.0.0.1:9", extra)]) == 0
        assert len(hook.received) == 1
        unset = f"notify: [{{url: 'http://127.0.0.1:{hook.port}/hook/${{CCSWITCH_TEST_HOOK_TOKEN}}'}}]"
        assert main(["notify-test", "--rules", rules(tmp_path, "http://127.0.0.1:9", unset)]) == 1
        assert len(hook.received) == 1
    assert "notify-test needs ${CCSWITCH_TEST_HOOK_TOKEN}, which is not set in this shell" in capsys.readouterr().err
