"""The live page in a real browser (headless Chromium) through the real mitmdump: the script
renders the upstreams and the requests and refreshes from status.json with the key of the URL."""

import os
import re
import shutil
import time
from html.parser import HTMLParser

import httpx
import pytest

from tests.support import browser
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B, hours_closed_now
from tests.support.mock_upstream import MockUpstream, hang_before_headers, ok, status
from tests.support.proxy_process import Proxy

if browser.missing() and os.environ.get("CI"):
    raise RuntimeError(browser.missing() + ": .ci/run must install it")
pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or "")

PLUS_KEY = "ccsw+b64/key==-0123456789"   # as base64 keys are: pasted into the address bar as it is
SCREENSHOT_KEEP = os.environ.get("CCSWITCH_SCREENSHOT")   # a path: keep a copy of the screenshot to look at


class Rows(HTMLParser):
    """The rendered tables: each <tr>'s class, data-upstream and cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.ids: dict[str, str] = {}
        self._cell: list[str] | None = None
        self._id: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append({"class": attrs.get("class"), "upstream": attrs.get("data-upstream"), "cells": []})
        elif tag == "td" and self.rows:
            self._cell = []
        if attrs.get("id"):
            self._id = attrs["id"]
            self.ids.setdefault(self._id, "")

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append("".join(self._cell).strip())
            self._cell = None
        if tag in ("span", "h2", "p", "script"):
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._id:
            self.ids[self._id] += data


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live-browser")
    quota = {"anthropic-ratelimit-unified-5h-utilization": "0.42",
             "anthropic-ratelimit-unified-5h-reset": str(int(time.time() + 3 * 3600))}
    with MockUpstream("A") as a, MockUpstream("B") as b, MockUpstream("target") as target:
        a.default = status(529)
        b.default = ok(headers=quota)
        b.by_model["claude-slow"] = hang_before_headers(2)
        rules = tmp / "rules.yaml"
        rules.write_text(f"""client_keys: ["{CLIENT_KEY}", "{PLUS_KEY}"]
failover: {{threshold: 1, cooldown: 300}}
upstreams:
  - {{name: relay-a, protocol: anthropic, base_url: '{a.base_url}', api_key: '{KEY_A}'}}
  - {{name: relay-b, protocol: anthropic, base_url: '{b.base_url}', api_key: '{KEY_B}',
      models: {{claude-sonnet-4-5: claude-sonnet-4-5-20250929}}, budget: {{daily: 50}}}}
  - {{name: night-relay, protocol: anthropic, base_url: '{b.base_url}', api_key: '{KEY_B}', hours: ["{hours_closed_now()}"]}}
  - {{name: spare, protocol: anthropic, base_url: '{b.base_url}', api_key: '{KEY_B}'}}
routes: {{claude: [relay-a, relay-b, night-relay]}}
""")
        with Proxy(rules, tmp, reverse_target=target.base_url) as running:
            with httpx.Client(timeout=30, trust_env=False) as client:
                for n in range(4):
                    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": n % 2 == 0,
                            "messages": [{"role": "user", "content": "hi"}]}
                    headers = {"x-api-key": CLIENT_KEY, "x-ccswitch-session": f"session-{n % 2}"}
                    r = client.post(running.reverse_url + "/v1/messages", json=body, headers=headers)
                    assert r.status_code == 200
                with pytest.raises(httpx.ReadTimeout):     # the client gives up before any answer
                    client.post(running.reverse_url + "/v1/messages", headers={"x-api-key": CLIENT_KEY}, timeout=0.5,
                                json={"model": "claude-slow", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
                deadline = time.monotonic() + 10      # its row comes once ccswitch sees it gone
                while len(client.get(running.reverse_url + "/_ccswitch/status.json",
                                     headers={"x-api-key": CLIENT_KEY}).json()["recent"]) < 5:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            yield running, target


def test_the_page_renders_upstreams_and_requests_and_refreshes_with_the_key(proxy, tmp_path):
    running, target = proxy
    url = f"{running.reverse_url}/_ccswitch/?key={CLIENT_KEY}"
    dom = browser.dump_dom(url, tmp_path / "profile")
    parsed = Rows()
    parsed.feed(dom)
    upstreams = {r["upstream"]: r["cells"] for r in parsed.rows if r["class"] == "upstream"}
    assert list(upstreams) == ["relay-a", "relay-b", "night-relay", "spare"]
    assert upstreams["relay-a"][0] == "relay-aanthropic \u00b7 claude"   # name, then protocol and routes
    assert upstreams["relay-a"][1].startswith("cooling") and "529" in upstreams["relay-a"][8]
    assert upstreams["relay-b"][1] == "available" and upstreams["relay-b"][3].startswith("42%")
    assert upstreams["relay-b"][4] == upstreams["relay-a"][4] == "0"            # nothing in flight now
    assert upstreams["relay-b"][5] == "2" and upstreams["relay-a"][5] == "0"   # sessions bound
    assert re.fullmatch(r"\$0\.000?\d\d of \$50\.00 today \(until 00:00\)", upstreams["relay-b"][7])
    assert parsed.ids["flying"] == "0" and parsed.ids["available"] == "1 of 3 available (1 in no route)"
    assert upstreams["night-relay"][1].startswith("outside hours")
    assert upstreams["spare"][0] == "spareanthropic \u00b7 no route" and upstreams["spare"][1] == "available"
    # which instance this is, and where its rows go (no shared state here)
    assert re.fullmatch(rf".+ \(pid {running.proc.pid}\) \u00b7 ledger .+usage\.db", parsed.ids["instance"])
    requests = [r["cells"] for r in parsed.rows if r["class"] == "request"]
    assert len(requests) == 5
    gave_up, newest, oldest = requests[0], requests[1], requests[-1]
    assert gave_up[3] == "client left" and gave_up[13] == "client_closed"   # not "ccswitch": it answered nothing
    assert re.fullmatch(r"\$0\.0*[1-9]\d", newest[12]), newest[12]      # below a cent: two significant digits
    assert oldest[2] == "claude-sonnet-4-5 \u2192 claude-sonnet-4-5-20250929" and oldest[3] == "relay-b"
    assert oldest[4] == "2 relay-a 529 (Overloaded) \u2192 relay-b 200" and oldest[5] == "200"
    assert newest[4] == "1 relay-b 200" and newest[5] == "200"
    # the refresh ran (status.json with the key as a header) and rendered
    assert parsed.ids["live"].startswith("live, every 2 s (updated "), parsed.ids["live"]
    assert "requests" in dom and CLIENT_KEY not in dom and KEY_A not in dom and KEY_B not in dom
    assert target.paths() == []   # no favicon or anything else went past the proxy
    log = running.log()
    assert re.search(r"GET http://127\.0\.0\.1:\d+/_ccswitch/status\.json", log), log[-2000:]


def test_a_wrong_key_gets_the_401_text_not_the_page(proxy, tmp_path):
    running, _ = proxy
    dom = browser.dump_dom(f"{running.reverse_url}/_ccswitch/?key=sk-wrong", tmp_path / "profile", budget_ms=500)
    assert "needs a ccswitch client key" in dom and 'id="upstreams"' not in dom


def test_a_screenshot_of_the_page(proxy, tmp_path):
    running, _ = proxy
    shot = browser.screenshot(f"{running.reverse_url}/_ccswitch/?key={CLIENT_KEY}", tmp_path / "profile",
                              tmp_path / "live.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000   # a rendered page, not a blank one
    if SCREENSHOT_KEEP:
        shutil.copy(shot, SCREENSHOT_KEEP)


def test_a_key_holding_plus_pasted_into_the_address_loads_and_refreshes_the_page(proxy, tmp_path):
    running, _ = proxy
    dom = browser.dump_dom(f"{running.reverse_url}/_ccswitch/?key={PLUS_KEY}", tmp_path / "profile")
    parsed = Rows()
    parsed.feed(dom)
    # the refresh sent the key as the proxy took it from the address (not with a space for its `+`)
    assert parsed.ids["live"].startswith("live, every 2 s (updated "), parsed.ids["live"]



def test_a_request_under_way_is_listed_in_flight_on_the_page(proxy, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    running, _ = proxy
    body = {"model": "claude-slow", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=30, trust_env=False) as client, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.post, running.reverse_url + "/v1/messages", json=body,
                           headers={"x-api-key": CLIENT_KEY})
        deadline = time.monotonic() + 10
        while not any(r["upstream"] for r in client.get(running.reverse_url + "/_ccswitch/status.json",
                                                        headers={"x-api-key": CLIENT_KEY}).json()["in_flight"]["requests"]):
            assert time.monotonic() < deadline      # listed from when it is planned, on relay-b once sent
            time.sleep(0.05)
        dom = browser.dump_dom(f"{running.reverse_url}/_ccswitch/?key={CLIENT_KEY}", tmp_path / "profile",
                               budget_ms=500)
        assert slow.result().status_code == 200
    parsed = Rows()
    parsed.feed(dom)
    [flying] = [r["cells"] for r in parsed.rows if r["class"] == "running"]
    assert flying[1:5] == ["claude", "claude-slow", "relay-b", ""] and flying[5].endswith(" s")
    assert parsed.ids["flying"] == "1"
    upstreams = {r["upstream"]: r["cells"] for r in parsed.rows if r["class"] == "upstream"}
    assert upstreams["relay-b"][4] == "1" and upstreams["relay-a"][4] == "0"


def test_a_fresh_page_says_how_to_point_a_client_at_ccswitch(tmp_path):
    # day one: nothing but "no requests yet" left a new user where they were
    from datetime import UTC, datetime

    from ccswitch.report.live import LiveBoard
    from ccswitch.report.live_html import page_html
    from ccswitch.report.live_status import live_status
    from tests.support.helpers import rules_for
    rules = rules_for(("relay-a", "anthropic", "https://a.example"))
    page = tmp_path / "fresh.html"
    page.write_text(page_html(live_status(LiveBoard(), [], rules, datetime.now(UTC))))
    parsed = Rows()
    parsed.feed(browser.dump_dom(page.as_uri(), tmp_path / "profile", budget_ms=500))
    [empty] = [cell for row in parsed.rows for cell in row["cells"] if cell.startswith("no requests yet")]
    assert empty.startswith("no requests yet: point a client at ccswitch") and 'eval "$(ccswitch env)"' in empty


def test_a_ccswitch_that_hangs_is_said_not_updating_and_is_not_asked_again_and_again(tmp_path):
    # a stopped (SIGSTOP) ccswitch refuses nothing: its page said "live" for as long as it hung,
    # asking again every 2 s on top of the unanswered asks
    from datetime import UTC, datetime

    from ccswitch.report.live import LiveBoard
    from ccswitch.report.live_html import GIVE_UP_MS, REFRESH_MS, page_html
    from ccswitch.report.live_status import live_status
    from tests.support.helpers import rules_for
    rules = rules_for(("relay-a", "anthropic", "https://a.example"))
    # a fetch that never answers, but lets itself be given up (a real hanging socket would stop the
    # browser's virtual clock, which waits for pending network fetches)
    silent = ("<script>window.asked = 0; window.fetch = (url, options) => { window.asked += 1; "
              "document.title = 'asked ' + window.asked; return new Promise((_, reject) => "
              "options && options.signal && options.signal.addEventListener('abort', () => reject(options.signal.reason))); };"
              "</script>\n")
    html = page_html(live_status(LiveBoard(), [], rules, datetime.now(UTC)))
    page = tmp_path / "hung.html"
    page.write_text(html.replace('<script type="application/json"', silent + '<script type="application/json"', 1))
    budget = GIVE_UP_MS + 3 * REFRESH_MS
    dom = browser.dump_dom(page.as_uri(), tmp_path / "profile", budget_ms=budget)
    parsed = Rows()
    parsed.feed(dom)
    assert re.search(r'<span id="live" class="stale">not updating \(no answer for \d+ s\)</span>', dom), parsed.ids.get("live")
    asked = int(re.search(r"<title>asked (\d+)</title>", dom).group(1))
    assert asked <= 2 < budget // REFRESH_MS     # the one unanswered, then one more after it was given up


def test_a_slow_answer_is_not_called_silence_before_ten_seconds(tmp_path):
    # an answer taking 4 s (a busy proxy) had the page say "not updating" at the next tick
    from datetime import UTC, datetime

    from ccswitch.report.live import LiveBoard
    from ccswitch.report.live_html import page_html
    from ccswitch.report.live_status import live_status
    from tests.support.helpers import rules_for
    rules = rules_for(("relay-a", "anthropic", "https://a.example"))
    slow = ("<script>window.fetch = () => new Promise((answer) => setTimeout(() => answer(new Response("
            "document.getElementById('initial').textContent)), 4000));</script>\n")
    html = page_html(live_status(LiveBoard(), [], rules, datetime.now(UTC)))
    page = tmp_path / "slow.html"
    page.write_text(html.replace('<script type="application/json"', slow + '<script type="application/json"', 1))
    dom = browser.dump_dom(page.as_uri(), tmp_path / "profile", budget_ms=5000)
    assert re.search(r'<span id="live" class="muted">as of [^<]*</span>', dom), re.search(r'<span id="live".*?</span>', dom)
    dom = browser.dump_dom(page.as_uri(), tmp_path / "profile", budget_ms=6500)
    assert re.search(r'<span id="live" class="muted">live, every 2 s \(updated [^<]*\)</span>', dom)


def test_the_page_says_when_the_rules_files_last_edit_is_not_in_force(tmp_path):
    # the log said it once, and a user watching the page had no way to know
    from datetime import UTC, datetime

    from ccswitch.report.live import LiveBoard
    from ccswitch.report.live_html import page_html
    from ccswitch.report.live_status import live_status
    from tests.support.helpers import rules_for
    rules = rules_for(("relay-a", "anthropic", "https://a.example"))
    since = time.time()
    status = live_status(LiveBoard(), [], rules, datetime.now(UTC),
                         not_applied=("the rules file's last edit is invalid (2 problems)", since))
    page = tmp_path / "refused.html"
    page.write_text(page_html(status))
    parsed = Rows()
    parsed.feed(browser.dump_dom(page.as_uri(), tmp_path / "profile", budget_ms=500))
    said = parsed.ids["rules"]
    assert said.startswith("the rules file's last edit is invalid (2 problems) (since ") and "last good rules" in said
    assert f"(since {datetime.fromtimestamp(since, UTC):%H:%M}): " in said      # the time alone, not the date


@pytest.mark.parametrize("troubled", [True, False], ids=["troubled", "well"])
def test_the_instance_line_says_what_ails_its_ledger_and_its_shared_state(tmp_path, troubled):
    # an operator behind a load balancer reads here, in red, that rows pile up, are lost or that
    # Redis is out; and, in grey, rows merely waiting for their next write
    from datetime import UTC, datetime

    from ccswitch.report.live import LiveBoard
    from ccswitch.report.live_html import page_html
    from ccswitch.report.live_status import InstanceView, live_status
    from tests.support.helpers import rules_for
    rules = rules_for(("relay-a", "anthropic", "https://a.example"))
    ledger = "postgresql://ccswitch:***@db/ledger"
    instance = InstanceView(host="node-1", pid=42, ledger=ledger, ledger_waiting=4, state="Redis at redis://db:6379/0",
                            state_shared=True, state_up=not troubled,
                            **({"ledger_dropped": 3, "ledger_trouble": "connection refused"} if troubled else {}))
    page = tmp_path / "instance.html"
    page.write_text(page_html(live_status(LiveBoard(), [], rules, datetime.now(UTC), instance=instance)))
    dom = browser.dump_dom(page.as_uri(), tmp_path / "profile", budget_ms=500)
    parsed = Rows()
    parsed.feed(dom)
    [shown_as] = re.findall(r'<p id="instance" class="([^"]*)"', dom)
    if troubled:
        assert parsed.ids["instance"] == (
            f"node-1 (pid 42) \u00b7 ledger {ledger}: connection refused, 4 row(s) kept in memory \u00b7 3 usage row(s) "
            "lost \u00b7 shared state Redis at redis://db:6379/0 unreachable: serving on this instance's memory")
        assert shown_as == "err"
    else:
        assert parsed.ids["instance"] == (
            f"node-1 (pid 42) \u00b7 ledger {ledger}, 4 row(s) waiting \u00b7 shared state Redis at redis://db:6379/0")
        assert shown_as == "muted"
    # no upstream in any route: nothing to be down, not a red "0 of 0"
    [available_as] = re.findall(r'<span id="available" class="([^"]*)"', dom)
    assert parsed.ids["available"] == "0 of 0 available" and available_as == "muted"
