import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from ccswitch.notify.payload import as_json, render, summary
from ccswitch.routing.events import Event
from ccswitch.wire.protocols import stream_error_message
from ccswitch.wire.sse import Event as SSE

KEY = "sk-ant-api03-SECRETSECRETSECRET"
CLIENT_KEY = "team-client-key-123456"
TS = datetime(2026, 12, 2, 18, 0, 5, tzinfo=UTC)
UNTIL = datetime(2026, 12, 2, 20, 10, 5, tzinfo=timezone(timedelta(hours=2)))   # 18:10:05 UTC


def cooldown() -> Event:
    return Event(kind="cooldown", upstream="relay-a", route="claude", until=UNTIL, episode="1",
                 reason="cooling down for 600s after 3 consecutive failure(s) (last: HTTP 503)", ts=TS)


def test_json_body_has_exactly_the_contract_fields_with_iso_times_and_an_id():
    content_type, body = render(cooldown(), "json", [])
    assert content_type == "application/json"
    told = json.loads(body)
    assert told == {
        "event": "cooldown", "upstream": "relay-a", "route": "claude",
        "reason": "cooling down for 600s after 3 consecutive failure(s) (last: HTTP 503)",
        "until": "2026-12-02T18:10:05+00:00", "ts": "2026-12-02T18:00:05+00:00", "id": told["id"]}
    # the same on a retry of this notification (a slow hook got four copies it could not tell
    # apart), another for another occurrence
    assert json.loads(render(cooldown(), "json", [])[1])["id"] == told["id"]
    later = replace(cooldown(), episode="another outage")
    assert json.loads(render(later, "json", [])[1])["id"] != told["id"]
    assert len(told["id"]) == 16
    # told again at another time under the same name (a restart forgot it was told): another notification
    again = replace(cooldown(), ts=TS + timedelta(hours=1))
    assert json.loads(render(again, "json", [])[1])["id"] != told["id"]


def test_json_until_is_null_when_the_end_is_unknown():
    event = Event(kind="exhausted", upstream=None, route="codex", reason="no upstream available", ts=TS)
    assert as_json(event)["until"] is None and as_json(event)["upstream"] is None


def test_slack_discord_and_text_carry_one_summary_line():
    line = "ccswitch cooldown: relay-a (route claude): cooling down for 600s after 3 consecutive " \
           "failure(s) (last: HTTP 503) (until 2026-12-02 18:10:05 UTC)"
    assert summary(cooldown()) == line
    assert json.loads(render(cooldown(), "slack", [])[1]) == {"text": line}
    assert json.loads(render(cooldown(), "discord", [])[1]) == {"content": line, "allowed_mentions": {"parse": []}}
    assert render(cooldown(), "text", []) == ("text/plain; charset=utf-8", line.encode())


def test_summary_names_a_route_alone_and_a_bare_event():
    assert summary(Event(kind="exhausted", upstream=None, route="chat", reason="r", ts=TS)) == \
        "ccswitch exhausted: route chat: r"
    assert summary(Event(kind="test", upstream=None, reason="hello", ts=TS)) == "ccswitch test: hello"


def cooldown_quoting(said: str) -> Event:
    """A cooldown whose reason quotes an upstream's in-stream error message."""
    data = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": said}})
    message = stream_error_message(SSE(event="error", data=data, raw=b""))
    return Event("cooldown", "relay-a", f"cooling down for 60s after 3 consecutive failure(s) (last: stream error: "
                                        f"{message})", ts=TS)


def test_slack_shows_an_upstream_s_markup_as_text():
    # Slack read the quote as its own markup: a ping of the whole channel and a link dressed as ours
    text = json.loads(render(cooldown_quoting("<!channel> <https://evil.example/login|re-enter your key> & co"),
                             "slack", [])[1])["text"]
    assert "<" not in text and ">" not in text
    assert text.endswith("&lt;!channel&gt; &lt;https://evil.example/login|re-enter your key&gt; &amp; co)")


def test_discord_pings_nobody_an_upstream_names():
    body = json.loads(render(cooldown_quoting("@everyone <@123456789> re-enter your key"), "discord", [])[1])
    assert body["allowed_mentions"] == {"parse": []}
    assert body["content"].endswith("@everyone <@123456789> re-enter your key)")     # shown as it was


def test_discord_content_stays_within_its_limit():
    event = Event(kind="cooldown", upstream="a", reason="x" * 5000, ts=TS)
    assert len(json.loads(render(event, "discord", [])[1])["content"]) <= 2000


def test_a_reason_cut_to_its_length_says_so_and_one_that_fits_is_whole():
    """A 503 naming forty upstreams ended mid-name in the hook, with nothing to say more was left out."""
    long = Event(kind="exhausted", upstream=None, route="claude", reason="upstream-with-a-long-name; " * 100, ts=TS)
    reason = json.loads(render(long, "json", [])[1])["reason"]
    assert len(reason) == 1000 and reason.endswith("…") and reason[:-1] == long.reason[:999]
    assert json.loads(render(cooldown(), "json", [])[1])["reason"] == cooldown().reason


def test_no_key_text_reaches_any_format():
    event = Event(kind="cooldown", upstream="relay-a", route="claude", ts=TS,
                  reason=f"HTTP 401: invalid x-api-key {KEY}; client {CLIENT_KEY}")
    for fmt in ("json", "slack", "discord", "text"):
        body = render(event, fmt, [KEY, CLIENT_KEY])[1].decode()
        assert KEY not in body and CLIENT_KEY not in body, fmt
        assert "[redacted]" in body and "HTTP 401" in body, fmt


def test_non_ascii_reasons_are_kept():
    event = Event(kind="budget", upstream="relay-ü", reason="80 % of the daily budget — $4.00 of $5.00", ts=TS)
    assert json.loads(render(event, "json", [])[1])["reason"] == "80 % of the daily budget — $4.00 of $5.00"


def test_no_key_text_in_an_upstream_or_route_name_either():
    event = Event(kind="cooldown", upstream=f"relay-{KEY}", route=f"route-{CLIENT_KEY}", reason="r", ts=TS)
    for fmt in ("json", "slack", "discord", "text"):
        body = render(event, fmt, [KEY, CLIENT_KEY])[1].decode()
        assert KEY not in body and CLIENT_KEY not in body, fmt


def test_a_reason_that_names_its_subject_is_not_preceded_by_it_again():
    # "ccswitch budget: relay-b: upstream relay-b 80% of its daily budget" said it twice
    budget = Event(kind="budget", upstream="relay-b", reason="upstream relay-b 80% of its daily budget", ts=TS)
    assert summary(budget) == "ccswitch budget: upstream relay-b 80% of its daily budget"
    closed = Event(kind="exhausted", upstream=None, route="claude",
                   reason="no upstream available for the claude route: a is disabled", ts=TS)
    assert summary(closed) == "ccswitch exhausted: no upstream available for the claude route: a is disabled"
    other = Event(kind="cooldown", upstream="relay-b", reason="HTTP 529 from relay-bee", ts=TS)
    assert summary(other).startswith("ccswitch cooldown: relay-b: HTTP 529")


def test_a_reason_that_merely_holds_the_upstreams_name_keeps_the_subject():
    # "a" inside "stream error: a server error" dropped which upstream was meant
    event = Event(kind="cooldown", upstream="a", route="claude", reason="stream error: a server error occurred", ts=TS)
    assert summary(event).startswith("ccswitch cooldown: a (route claude): stream error")


def test_the_subject_is_dropped_only_where_the_reason_starts_with_it():
    # a reason naming the upstream elsewhere, or another upstream whose name starts the same, keeps it
    for reason in ("failed over from upstream relay-a to relay-b", "upstream relay-ab is cooling down"):
        event = Event(kind="cooldown", upstream="relay-a", route="claude", reason=reason, ts=TS)
        assert summary(event) == f"ccswitch cooldown: relay-a (route claude): {reason}"
    said = Event(kind="cooldown", upstream="relay-a", route="claude", reason="upstream relay-a is down", ts=TS)
    assert summary(said) == "ccswitch cooldown: upstream relay-a is down"


def test_a_reason_naming_the_route_drops_a_route_alone_but_not_an_upstream():
    reason = "nothing left for the claude route"
    assert summary(Event(kind="exhausted", upstream=None, route="claude", reason=reason, ts=TS)) == \
        f"ccswitch exhausted: {reason}"
    assert summary(Event(kind="cooldown", upstream="relay-a", route="claude", reason=reason, ts=TS)) == \
        f"ccswitch cooldown: relay-a (route claude): {reason}"


def test_until_is_told_to_the_nearest_second_as_the_live_page_says_it():
    # an end read back from a clock lands a few ms early: the hook said 18:59:45, the page 18:59:46
    event = Event("cooldown", "relay-a", "HTTP 503", until=datetime(2026, 12, 2, 18, 59, 45, 998_000, tzinfo=UTC))
    assert as_json(event)["until"] == "2026-12-02T18:59:46+00:00"
    assert summary(event).endswith("(until 2026-12-02 18:59:46 UTC)")
