"""mitmproxy reloads a script whose file changes (an edit of addon.py, an upgrade rewriting it):
ccswitch's new addons take over, the old ones end what they were doing, and rules reloads go on."""

import os
import shutil
import time

import httpx

from tests.support import REPO
from tests.support.helpers import KEY_A
from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import Proxy

BODY = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def rules_text(first: str, second: MockUpstream, third: MockUpstream) -> str:
    return f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{second.base_url}', api_key: '{KEY_A}'}}
  - {{name: b, protocol: anthropic, base_url: '{third.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [{first}]}}
"""


def answered_by(proxy: Proxy) -> str:
    r = httpx.post(proxy.reverse_url + "/v1/messages", json=BODY, headers={"x-api-key": "k"}, timeout=10,
                   trust_env=False)
    assert r.status_code == 200, r.text
    return r.headers["x-ccswitch-upstream"]


def until(check, timeout=15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def test_a_reloaded_script_serves_and_reloads_rules_as_before(tmp_path):
    with MockUpstream("A") as a, MockUpstream("B") as b:
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text("a", a, b))
        script = tmp_path / "addon.py"
        shutil.copy(REPO / "addon.py", script)
        proxy = Proxy(rules, tmp_path)
        proxy.args[proxy.args.index(str(REPO / "addon.py"))] = str(script)
        proxy.start()
        try:
            assert answered_by(proxy) == "a"
            later = time.time() + 5
            os.utime(script, (later, later))                    # as an edit or an upgrade would
            until(lambda: proxy.log().count("Loading script") >= 2)
            assert answered_by(proxy) == "a"                     # served by the new addons
            rules.write_text(rules_text("b", a, b))              # the new addons watch the rules
            until(lambda: answered_by(proxy) == "b")
        finally:
            proxy.stop()
        log = proxy.log()
    assert "AddonManagerError" not in log and "Traceback" not in log, log
