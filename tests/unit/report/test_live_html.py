"""The live page's HTML: self-contained, its data inert, its script and style allowed by its CSP."""

import base64
import hashlib
import json
import re

from ccswitch.report.live_html import CONTENT_SECURITY_POLICY, SCRIPT, STYLE, json_island, page_html

HOSTILE = {"recent": [{"model": "</script><script>alert(1)</script><!--", "error": "a & b > c"}]}


def test_the_json_island_cannot_close_its_script_and_reads_back_the_same():
    island = json_island(HOSTILE)
    assert "<" not in island and ">" not in island and "&" not in island
    assert json.loads(island) == HOSTILE


def test_the_page_holds_its_data_in_one_island_and_only_its_own_script_and_style():
    page = page_html(HOSTILE)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert [attrs for attrs, _ in scripts] == [' type="application/json" id="initial"', ""]
    assert json.loads(scripts[0][1]) == HOSTILE
    assert scripts[1][1] == SCRIPT
    assert re.findall(r"<style>(.*?)</style>", page, re.S) == [STYLE]
    # nothing is fetched from elsewhere: no src/href to another origin, no @import
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page) and "@import" not in page
    assert "innerHTML" not in SCRIPT and "insertAdjacentHTML" not in SCRIPT   # data is text, never markup


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_content_security_policy_allows_exactly_the_pages_script_and_style():
    policy = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["script-src"] == sha256(SCRIPT) and policy["style-src"] == sha256(STYLE)
    assert policy["frame-ancestors"] == "'none'"


def test_the_script_refreshes_from_status_json_sending_the_key_as_a_header():
    assert 'fetch("/_ccswitch/status.json"' in SCRIPT and "setInterval(refresh, 2000)" in SCRIPT
    assert '"x-api-key": key' in SCRIPT and 'pair.slice(0, at) === "key"' in SCRIPT
