"""`ccswitch notify-test`, in process: each hook's result by host, exit 1 if any failed."""

from ccswitch.cli.app import main
from tests.support.webhook_receiver import WebhookReceiver

TOKEN = "T0KEN-in-the-path"


def write_rules(tmp_path, *hooks: str):
    path = tmp_path / "rules.yaml"
    path.write_text("notify:\n" + "".join(f"  - {hook}\n" for hook in hooks) if hooks else "{}\n")
    return str(path)


def test_every_hook_gets_the_test_event_and_ok_exits_0(tmp_path, capsys):
    with WebhookReceiver() as a, WebhookReceiver() as b:
        path = write_rules(tmp_path, f"{{url: '{a.url()}', format: slack}}", f"{{url: '{b.url()}', format: text}}")
        assert main(["notify-test", "--rules", path]) == 0
        assert a.bodies()[0]["text"].startswith("ccswitch test: ")
        assert b.received[0].body.startswith(b"ccswitch test: ")
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"hook 1 (slack) 127.0.0.1:{a.port}: ok (HTTP 200)",
                                    f"hook 2 (text) 127.0.0.1:{b.port}: ok (HTTP 200)"]
    assert TOKEN not in out.out + out.err


def test_a_failing_hook_is_reported_and_exits_1(tmp_path, capsys):
    from tests.support.mock_upstream import MockUpstream
    dead = MockUpstream.closed_port()
    with WebhookReceiver(status=500) as bad:
        path = write_rules(tmp_path, f"{{url: '{bad.url()}'}}", f"{{url: 'http://127.0.0.1:{dead}/x/{TOKEN}'}}")
        assert main(["notify-test", "--rules", path]) == 1
        assert len(bad.received) == 1              # tried once: the result as it is now
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"hook 1 (json) 127.0.0.1:{bad.port}: failed (HTTP 500)"
    assert lines[1] == f"hook 2 (json) 127.0.0.1:{dead}: failed (connection refused)"


def test_no_hooks_is_an_error(tmp_path, capsys):
    assert main(["notify-test", "--rules", write_rules(tmp_path)]) == 1
    assert "no notify hooks" in capsys.readouterr().err


def test_invalid_rules_exit_1(tmp_path, capsys):
    assert main(["notify-test", "--rules", write_rules(tmp_path, "{url: 'ftp://x'}")]) == 1
    assert "notify[0].url: must be an http:// or https:// URL" in capsys.readouterr().err
