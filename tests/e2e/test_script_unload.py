"""mitmproxy drops a script whose file it no longer finds (an upgrade moving the old install aside,
a deleted addon.py) or whose reload fails, and would go on as a plain proxy passing requests on
unrouted: ccswitch stops it instead, after its own stop, with exit status 1 for a supervisor."""

import shutil
import sqlite3
import subprocess

import httpx
import pytest

from tests.support import REPO
from tests.support.helpers import KEY_A
from tests.support.mock_upstream import MockUpstream
from tests.support.proxy_process import Proxy

BODY = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def started(tmp_path, upstream: MockUpstream) -> tuple[Proxy, object]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{upstream.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
""")
    script = tmp_path / "addon.py"
    shutil.copy(REPO / "addon.py", script)
    proxy = Proxy(rules, tmp_path)
    proxy.args[proxy.args.index(str(REPO / "addon.py"))] = str(script)
    proxy.start()
    r = httpx.post(proxy.reverse_url + "/v1/messages", json=BODY, headers={"x-api-key": "k"}, timeout=10,
                   trust_env=False)
    assert r.status_code == 200 and r.headers["x-ccswitch-upstream"] == "a", r.text
    return proxy, script


@pytest.mark.parametrize("how", ["file removed", "reload fails"])
def test_a_dropped_script_stops_the_proxy_with_status_1_after_its_own_stop(tmp_path, how):
    with MockUpstream("A") as upstream:
        proxy, script = started(tmp_path, upstream)
        try:
            if how == "file removed":
                script.unlink()
            else:
                script.write_text("raise RuntimeError('half-written upgrade')\n")
            try:
                status = proxy.proc.wait(30)
            except subprocess.TimeoutExpired:
                pytest.fail("the proxy ran on without ccswitch:\n" + proxy.log())
        finally:
            proxy.stop()
        log = proxy.log()
    assert status == 1, log
    assert "mitmproxy unloaded ccswitch while running on" in log, log
    with sqlite3.connect(proxy.usage_db) as db:        # its own stop ran: the request's row is written
        assert db.execute("select upstream, status from requests").fetchall() == [("a", 200)]


def test_while_it_stops_a_request_in_flight_finishes_and_a_new_one_gets_a_503_not_passed_on(tmp_path):
    import threading
    import time

    from tests.support.mock_upstream import stall_after
    with MockUpstream("A") as upstream:
        proxy, script = started(tmp_path, upstream)
        upstream.script(stall_after(0, 3.0))           # the next answer's head, then 3 s before its body
        answers = []
        slow = threading.Thread(target=lambda: answers.append((httpx.post(
            proxy.reverse_url + "/v1/messages", json=BODY, headers={"x-api-key": "k"}, timeout=20, trust_env=False),
            time.monotonic())))
        try:
            slow.start()
            time.sleep(0.5)
            script.unlink()
            deadline = time.monotonic() + 10
            while "unloaded ccswitch" not in proxy.log():
                assert time.monotonic() < deadline, proxy.log()
                time.sleep(0.05)
            r = httpx.post(proxy.reverse_url + "/v1/messages", json=BODY, headers={"x-api-key": "k"}, timeout=10,
                           trust_env=False)
            slow.join(20)
            status = proxy.proc.wait(30)
            stopped = time.monotonic()
        finally:
            proxy.stop()
    assert r.status_code == 503 and "ccswitch was unloaded" in r.json()["error"]["message"], r.text
    assert r.json()["type"] == "error"                              # in the client's API's shape
    assert [a.status_code for a, _ in answers] == [200] and status == 1
    # it stops once that request has ended, not at the end of the 8 s grace: no flow's end reaches the
    # unloaded addons, so what counts is the work still running
    assert stopped - answers[0][1] < 4, proxy.log()
    assert "still in flight" not in proxy.log()
    assert len(upstream.requests) == 2                            # the first and the slow one: nothing else went
