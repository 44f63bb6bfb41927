"""`ccswitch report --out`'s page in a real browser (headless Chromium) on a phone's width: each
table's first column stays one line (it broke a date into `202 / 6- / 12-` and names letter by
letter) and a table too wide scrolls sideways instead of squeezing it."""

import json
import os
import re

import pytest

from tests.support import browser
from tests.unit.report.test_attempts import MAR1, make_db
from tests.unit.report.test_views import cli

if browser.missing() and os.environ.get("CI"):
    raise RuntimeError(browser.missing() + ": .ci/run must install it")
pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or "")

# each table row's first cell: in how many lines its text is laid out; and whether each table scrolls
MEASURE = """<script>
window.addEventListener("load", () => {
  const lines = td => {       // the text's line boxes (a cell is as tall as its row, whatever it holds)
    const range = document.createRange();
    range.selectNodeContents(td);
    return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
  };
  const rows = [...document.querySelectorAll("tbody tr")].map(tr => ({label: tr.children[0].textContent,
                                                                      lines: lines(tr.children[0])}));
  const wide = [...document.querySelectorAll(".wide")].map(d => d.scrollWidth > d.clientWidth);
  const root = document.documentElement;
  // (view: the frame less its scroll bar)
  parent.postMessage(JSON.stringify({rows, wide, page: root.scrollWidth, view: root.clientWidth}), "*");
});
</script></body>"""
# the page in a frame of the width asked (headless Chromium's narrowest window is about 500 px)
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="report.html" style="width:%dpx;height:900px;border:0"></iframe>
<script>window.addEventListener("message", e => document.body.setAttribute("data-measured", e.data));</script>
</body></html>"""


@pytest.mark.parametrize("width", [390, 1280])   # 390: a phone
def test_the_report_page_s_first_column_stays_one_line_on_a_phone_and_a_desktop(tmp_path, width):
    out = tmp_path / "out"
    assert cli(tmp_path, make_db(tmp_path), "--since", str(MAR1), "--until", str(MAR1), "--by", "model",
               "--out", str(out)) == 0
    page = out / "report.html"
    page.write_text(page.read_text().replace("</body>", MEASURE))
    (out / "frame.html").write_text(FRAME % width)
    done = browser._run(tmp_path / "profile", "--window-size=1400,1000", "--virtual-time-budget=3000",
                        "--dump-dom", (out / "frame.html").as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(re.search(r'data-measured="([^"]*)"', done.stdout).group(1).replace("&quot;", '"'))
    assert len(measured["rows"]) > 5
    broken = [r["label"] for r in measured["rows"] if r["lines"] != 1]
    assert not broken, broken
    # the tables scroll within the page, the page itself does not
    assert width - 20 <= measured["view"] <= width and measured["page"] <= measured["view"]
    assert width > 700 or any(measured["wide"])
