"""`/_ccswitch/`: one self-contained page (no external assets) that shows `live_status` data
and refreshes itself from `status.json` every 2 seconds.

The data of the first paint travels inside the page as a JSON island; the page's one script
renders it and every refresh the same way, with `textContent` only (a model name is the
client's text and never becomes markup).  A `?key=` in the page's address is sent on as
`x-api-key` with each refresh; the page's HTML never holds key text itself.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from ccswitch.wire.exchange import json_text

REFRESH_MS = 2000
GIVE_UP_MS = 10_000     # an ask of status.json unanswered this long: the page says it is not updating

STYLE = """
:root{--fg:#1d232a;--muted:#5d6873;--line:#e3e7eb;--head:#f3f5f7;--bg:#fff;
 --ok:#1f8a4c;--cool:#c26a00;--full:#7b3fb8;--off:#7d868f;--err:#c0392b}
@media (prefers-color-scheme: dark){:root{--fg:#e3e7eb;--muted:#9aa5b1;--line:#2c343c;--head:#1f262d;
 --bg:#14191e;--ok:#3fbf73;--cool:#f0a040;--full:#b58cf0;--off:#8b949e;--err:#ff6b5b}}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.2rem auto;max-width:1400px;
 padding:0 1rem;color:var(--fg);background:var(--bg);font-size:14px}
header{display:flex;align-items:baseline;gap:1rem;flex-wrap:wrap}
h1{font-size:1.35rem;margin:0} h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
.muted{color:var(--muted)} #live{font-size:.85rem} #live.stale{color:var(--err);font-weight:600}
table{border-collapse:collapse;width:100%}
th,td{padding:.28rem .5rem;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap;
 vertical-align:middle}
th{background:var(--head);font-weight:600;font-size:.8rem;color:var(--muted)}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;color:#fff;font-size:.78rem;font-weight:600}
.s-available{background:var(--ok)} .s-cooling{background:var(--cool)} .s-full{background:var(--full)}
.s-disabled,.s-outside_hours{background:var(--off)} .s-over_budget{background:var(--err)}
.bar{display:inline-block;width:5rem;height:.55rem;background:var(--line);border-radius:3px;margin-right:.4rem;
 vertical-align:middle;overflow:hidden}
.bar i{display:block;height:100%;background:var(--ok)} .bar i.high{background:var(--cool)}
.bar i.over{background:var(--err)}
.cards{display:flex;flex-wrap:wrap;gap:.5rem}
.card{border:1px solid var(--line);border-radius:6px;padding:.35rem .7rem;min-width:6.4rem}
.card b{display:block;font-size:1.15rem;font-variant-numeric:tabular-nums} .card span{color:var(--muted);font-size:.8rem}
.clip{max-width:16rem;overflow:hidden;text-overflow:ellipsis} .wide{overflow-x:auto}
.compact{font-size:13px} .compact td,.compact th{padding:.25rem .4rem} .compact .clip{max-width:15rem}
#requests .model{max-width:21rem} .sub{font-size:11px} .compact .name{max-width:13rem}
.err{color:var(--err)} .dim{color:var(--muted)}
footer{margin:1.5rem 0;font-size:.8rem}
a{color:inherit}
"""

SCRIPT = r"""
(() => {
  "use strict";
  // as the proxy reads it: a pasted key's `+` is itself (URLSearchParams would make it a space)
  const key = (() => {
    for (const pair of location.search.slice(1).split("&")) {
      const at = pair.indexOf("=");
      if (at > 0 && pair.slice(0, at) === "key" && at < pair.length - 1) {
        try { return decodeURIComponent(pair.slice(at + 1)); } catch (e) { return pair.slice(at + 1); }
      }
    }
    return null;
  })();
  const headers = key ? {"x-api-key": key} : {};
  const $ = (id) => document.getElementById(id);
  const dash = "\u2013";
  function el(tag, text, cls, title) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    if (title) e.title = String(title);
    return e;
  }
  const tok = (v) => !v ? "0" : v >= 1e7 ? (v / 1e6).toFixed(1) + "M" : v >= 1e6 ? (v / 1e6).toFixed(2) + "M"
    : v >= 1e4 ? (v / 1e3).toFixed(1) + "k" : v.toLocaleString("en-US");
  // the report's rule: cents, or below a cent two significant digits (up to six decimals)
  const usd = (v) => v === null || v === undefined ? "?" : v === 0 ? "$0.00" : v < 5e-7 ? "<$0.000001"
    : "$" + v.toFixed(v >= 0.01 ? 2 : Math.min(6, Math.ceil(-Math.log10(v)) + 1));
  const gone = {client_closed: "client left", killed: "killed"};   // no upstream answered, nor ccswitch
  const left = (s) => s === null ? dash : s >= 3600 ? Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min"
    : s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
  const dur = (v) => v === null || v === undefined ? dash : v >= 10000 ? (v / 1000).toFixed(1) + " s" : v + " ms";
  function fill(tbody, rows) { tbody.replaceChildren(...rows); }

  function upstreamRow(u) {
    const tr = el("tr"); tr.dataset.upstream = u.name; tr.className = "upstream";
    const name = el("td", null, null, u.preferred ? "preferred (ccswitch.use)" : "");
    name.className = "clip name";
    name.append(el("b", u.name + (u.preferred ? " \u2605" : ""), null, u.name),
      el("div", u.protocol + " \u00b7 " + (u.routes.join(", ") || "no route")
        + (u.activation ? " \u00b7 next activation " + u.activation : ""), "sub dim"));
    tr.append(name);
    const state = el("td"); state.append(el("span", u.state.replaceAll("_", " "), "badge s-" + u.state));
    if (u.detail !== u.state) state.append(" ", el("span", u.detail, "dim"));
    tr.append(state);
    tr.append(el("td", left(u.seconds_left), "n"));
    const util = el("td");
    if (u.utilization === null) util.append(el("span", "unknown", "dim"));
    else {
      const level = u.utilization >= 0.95 ? "over" : u.utilization >= 0.7 ? "high" : "";
      const bar = el("span", null, "bar"), fillEl = el("i", null, level);
      fillEl.style.width = Math.min(100, u.utilization * 100).toFixed(0) + "%";
      bar.append(fillEl);
      const about = " " + u.window + (u.resets ? ", resets " + u.resets : "");
      util.append(bar, (u.utilization * 100).toFixed(0) + "%", el("span", about, "dim"));
    }
    const conns = u.connections.open + " connection(s) open, " + u.connections.waiting + " request(s) waiting for one" +
      (u.via ? ", via " + u.via : "");
    tr.append(util, el("td", u.in_flight, "n", conns), el("td", u.sessions, "n"), el("td", u.failures, "n"),
      el("td", u.budget.join("; ") || dash, "clip dim", u.budget.join("; ")),
      el("td", u.last_error || "", "clip err", u.last_error));
    return tr;
  }

  function requestRow(r) {
    const tr = el("tr"); tr.className = "request";
    const model = r.upstream_model && r.upstream_model !== r.model ? r.model + " \u2192 " + r.upstream_model : r.model;
    const path = r.attempts.map((a) => a.upstream + " " + a.result + (a.why ? " (" + a.why + ")" : ""))
      .join(" \u2192 ");
    const bad = r.error || (r.status || 0) >= 400;
    tr.append(el("td", r.time, null, r.ts), el("td", r.route + (r.endpoint === "count_tokens" ? " (count)" : "")),
      el("td", model || dash, "clip model", model),
      el("td", r.upstream || gone[r.error] || "ccswitch", r.upstream ? "clip name" : "dim", r.upstream),
      attempts(r.attempts.length, path),
      el("td", r.status === null ? dash : r.status, "n" + (bad ? " err" : "")),
      el("td", tok(r.tokens.input), "n"), el("td", tok(r.tokens.output), "n"),
      el("td", tok(r.tokens.cache_creation), "n"), el("td", tok(r.tokens.cache_read), "n"),
      el("td", dur(r.ttfb_ms), "n"), el("td", dur(r.ms), "n"), el("td", usd(r.cost_usd), "n"),
      el("td", r.error || "", "clip err", r.error));
    return tr;
  }

  function runningRow(r) {
    const tr = el("tr"); tr.className = "running";
    const on = r.upstream ? r.upstream + (r.attempt > 1 ? " (attempt " + r.attempt + ")" : "")
      : r.attempt ? "between attempts (" + r.attempt + " made)" : "waiting";
    tr.append(el("td", r.time, null, r.ts), el("td", r.route + (r.endpoint === "count_tokens" ? " (count)" : "")),
      el("td", r.model || dash, "clip model", r.model), el("td", on, r.upstream ? "clip name" : "dim", on),
      el("td", r.stream ? "stream" : "", "dim"), el("td", r.seconds.toFixed(1) + " s", "n"));
    return tr;
  }

  function attempts(count, path) {
    const td = el("td", null, "clip", path);
    td.append(el("b", count), " ", el("span", path || dash, "dim"));
    return td;
  }

  function card(label, value, title) {
    const c = el("div", null, "card", title); c.append(el("b", value), el("span", label)); return c;
  }

  function render(d) {
    $("now").textContent = d.time + " " + d.timezone;
    $("started").textContent = d.started.slice(0, 19).replace("T", " ");
    $("preferring").textContent = d.preferring ? "preferring " + d.preferring : "";
    const na = d.rules_not_applied;
    $("rules").textContent = na ? na.why + " (since " + na.since.slice(11, 16) + "): the last good rules stay in "
      + "force; the log and `ccswitch check` say what to mend" : "";
    const inst = d.instance;
    if (inst) {
      const ledger = inst.ledger, state = inst.state;
      const parts = [inst.host + " (pid " + inst.pid + ")"];
      parts.push(!ledger ? "no ledger" : ledger.trouble
        ? "ledger " + ledger.db + ": " + ledger.trouble + ", " + ledger.waiting + " row(s) kept in memory"
        : "ledger " + ledger.db + (ledger.waiting ? ", " + ledger.waiting + " row(s) waiting" : ""));
      if (ledger && ledger.dropped) parts.push(ledger.dropped + " usage row(s) lost");
      if (state.shared) {
        parts.push("shared state " + state.at + (state.up ? "" : " unreachable: serving on this instance's memory"));
      }
      $("instance").textContent = parts.join(" \u00b7 ");
      $("instance").className = (ledger && (ledger.trouble || ledger.dropped)) || !state.up ? "err" : "muted";
    }
    fill($("upstreams"), d.upstreams.map(upstreamRow));
    var unrouted = d.upstreams.length - d.routed;
    $("available").textContent = d.available + " of " + d.routed + " available"
      + (unrouted ? " (" + unrouted + " in no route)" : "");
    $("available").className = d.available || !d.routed ? "muted" : "err";
    $("clients").replaceChildren(...d.clients.map((c) => {
      const p = el("p", null, "client"); p.append(el("b", c.name), " ", el("span", c.budget.join("; "), "dim"));
      return p;
    }));
    const t = d.today;
    $("since").textContent = t.date + " since " + t.since;
    fill($("today"), [
      card("requests", t.requests.toLocaleString("en-US")), card("input", tok(t.input)),
      card("output", tok(t.output)), card("cache write", tok(t.cache_creation)),
      card("cache read", tok(t.cache_read)), card("reasoning", tok(t.reasoning), "part of output"),
      card("cost", usd(t.cost_usd) + (t.unpriced_tokens ? "+?" : ""),
        t.unpriced_tokens ? tok(t.unpriced_tokens) + " tokens of models without a price" : "at the report's prices"),
      card("failovers", t.failovers), card("errors", t.errors),
      card("count_tokens", t.count_tokens, "count_tokens requests (left out of the other figures)")]);
    $("flying").textContent = d.in_flight.count;
    const running = d.in_flight.requests.map(runningRow);
    if (!running.length) {
      const tr = el("tr"), td = el("td", "none", "dim");
      td.colSpan = 6; tr.append(td); running.push(tr);
    }
    fill($("running"), running);
    const rows = d.recent.map(requestRow);
    if (!rows.length) {
      const tr = el("tr"), td = el("td", "no requests yet: point a client at ccswitch with the variables ccswitch env prints " +
        "(eval \"$(ccswitch env)\" for HTTPS_PROXY, or ccswitch env --reverse --port PORT for a base URL)", "dim");
      td.colSpan = 14; tr.append(td); rows.push(tr);
    }
    fill($("recent"), rows);
  }

  // a ccswitch that hangs (stopped, swapping) refuses nothing: its silence is the news, and
  // asks are not piled up behind one it does not answer
  let asking = false, answered = Date.now();
  const stale = (why) => { const live = $("live"); live.textContent = "not updating (" + why + ")"; live.className = "stale"; };
  const silence = () => "no answer for " + Math.round((Date.now() - answered) / 1000) + " s";
  async function refresh() {
    if (document.hidden) return;
    if (asking) {      // a slow answer is no silence yet
      if (Date.now() - answered >= __GIVE_UP_MS__) stale(silence());
      return;
    }
    asking = true;
    const ask = new AbortController();     // (AbortSignal.timeout: not in every browser a user has)
    let gaveUp = false;
    const timer = setTimeout(() => { gaveUp = true; ask.abort(); }, __GIVE_UP_MS__);
    try {
      const r = await fetch("/_ccswitch/status.json", {headers, cache: "no-store", signal: ask.signal});
      if (!r.ok) throw new Error("HTTP " + r.status);
      const data = await r.json();
      render(data);
      answered = Date.now();
      $("live").textContent = "live, every 2 s (updated " + data.time + ")"; $("live").className = "muted";
    } catch (e) {
      stale(gaveUp ? silence() : e.message);
    } finally {
      clearTimeout(timer);
      asking = false;
    }
  }

  const first = JSON.parse($("initial").textContent);
  render(first);
  $("live").textContent = "as of " + first.time + ", refreshing every 2 s";
  setInterval(refresh, __REFRESH_MS__);
})();
""".replace("__REFRESH_MS__", str(REFRESH_MS)).replace("__GIVE_UP_MS__", str(GIVE_UP_MS))

BODY = """<body>
<header><h1>ccswitch</h1><span id="now" class="muted"></span><span id="preferring"></span>
<span id="live" class="muted"></span></header>
<p id="rules" class="err"></p>
<p id="instance" class="muted"></p>
<noscript><p>This page needs JavaScript; the same data is at /_ccswitch/status.json.</p></noscript>
<h2>Upstreams <span id="available" class="muted"></span></h2>
<div class="wide"><table class="compact"><thead><tr><th>upstream</th><th>state</th><th class="n">left</th>
<th>utilization</th><th class="n">in flight</th><th class="n">sessions</th><th class="n">failures</th><th>budget</th>
<th>last error</th></tr></thead><tbody id="upstreams"></tbody></table></div>
<h2>Today <span id="since" class="muted"></span></h2>
<div class="cards" id="today"></div>
<div id="clients"></div>
<h2>In flight (<span id="flying">0</span>)</h2>
<div class="wide"><table class="compact"><thead><tr><th>since</th><th>route</th><th>model</th>
<th>upstream now</th><th></th><th class="n">for</th></tr></thead><tbody id="running"></tbody></table></div>
<h2>Last 50 requests</h2>
<div class="wide"><table id="requests" class="compact"><thead><tr><th>time</th><th>route</th>
<th>model (client \u2192 upstream)</th><th>upstream</th>
<th>attempts</th><th class="n">status</th><th class="n">in</th><th class="n">out</th>
<th class="n">cache w</th><th class="n">cache r</th><th class="n">ttfb</th><th class="n">total</th>
<th class="n">cost</th><th>error</th></tr></thead><tbody id="recent"></tbody></table></div>
<footer class="muted">ccswitch since <span id="started"></span> \u00b7 the same data:
<a href="/_ccswitch/status.json">status.json</a> \u00b7 Prometheus: <a href="/_ccswitch/metrics">metrics</a>
(with client keys, these need the key too)</footer>
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: only this page's own script and style run; it talks to its own origin only
CONTENT_SECURITY_POLICY = (f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
                           "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'")


def json_island(data: Any) -> str:
    """JSON that cannot end its <script> element or open markup inside it."""
    text = json_text(data)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def page_html(status: dict[str, Any]) -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<title>ccswitch live</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{STYLE}</style></head>\n{BODY}"
            f"<script type=\"application/json\" id=\"initial\">{json_island(status)}</script>\n"
            f"<script>{SCRIPT}</script>\n</body></html>\n")
