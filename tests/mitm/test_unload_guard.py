import logging
import os

from mitmproxy.test import taddons

from ccswitch.mitm import unload_guard
from ccswitch.mitm.unload_guard import UnloadGuard


def test_a_reload_after_the_package_changed_on_disk_says_a_restart_runs_the_new_code(tmp_path, monkeypatch, caplog):
    mark = tmp_path / "__init__.py"
    mark.write_text("")
    monkeypatch.setattr(unload_guard, "PACKAGE_MARK", mark)
    monkeypatch.setattr(unload_guard, "_loaded_from", [])
    caplog.set_level(logging.INFO, "ccswitch")
    with taddons.context():
        UnloadGuard().load(None)
        UnloadGuard().load(None)                    # an edit of addon.py alone: the package is the same
        assert "restart ccswitch" not in caplog.text
        os.utime(mark, (1, 1))                      # an upgrade rewrote the package
        UnloadGuard().load(None)
    assert "restart ccswitch to run the new version" in caplog.text
