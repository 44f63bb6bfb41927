"""Activation probes: the schedule with an injectable clock (no sleeps), the probe itself."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ccswitch.activation.probe import Schedule, has_content, probe_body, send_probe
from ccswitch.config.load import parse_rules

TZ = "Europe/Berlin"


def rules(times='["06:00"]', days="", extra=""):
    return parse_rules(f"""
timezone: {TZ}
activation: {{retries: 3, retry_interval: 1m, grace: 15m}}
upstreams:
  - {{name: relay, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: 'sk-relay-000000000',
     activate_at: {times} {days}}}
{extra}
""")


def at(y, m, d, hh, mm, ss=0):
    return datetime(y, m, d, hh, mm, ss, tzinfo=ZoneInfo(TZ))


def names(due):
    return [(u.name, s.day.isoformat(), s.at) for u, s in due]


def test_fires_once_at_its_time_and_not_again():
    r, sched = rules(), Schedule()
    assert sched.due(r, at(2026, 11, 25, 5, 59, 59)) == []
    due = sched.due(r, at(2026, 11, 25, 6, 0, 0))
    assert names(due) == [("relay", "2026-11-25", "06:00")]
    sched.started(due[0][1])
    sched.finished(due[0][1], True, at(2026, 11, 25, 6, 0, 1), 60)
    for minute in range(0, 120, 7):
        assert sched.due(r, at(2026, 11, 25, 6, 0) + timedelta(minutes=minute)) == []
    assert names(sched.due(r, at(2026, 11, 26, 6, 0))) == [("relay", "2026-11-26", "06:00")]


def test_failure_retries_every_interval_up_to_the_limit():
    r, sched = rules(), Schedule()
    now = at(2026, 11, 25, 6, 0)
    tries = 0
    for _ in range(10):
        due = sched.due(r, now)
        if due:
            tries += 1
            sched.started(due[0][1])
            sched.finished(due[0][1], False, now, 60)
            assert sched.due(r, now + timedelta(seconds=59)) == []
        now += timedelta(seconds=60)
    assert tries == 4       # the first try and 3 retries


def test_late_start_fires_once_within_grace_only():
    r = rules()
    assert names(Schedule().due(r, at(2026, 11, 25, 6, 14))) == [("relay", "2026-11-25", "06:00")]
    assert Schedule().due(r, at(2026, 11, 25, 6, 16)) == []


def test_times_missed_together_send_one_probe_for_the_latest():
    """Two identical probes at once (and two alike log lines) said nothing the one did not."""
    r, sched = rules('["05:57", "06:00", "06:30"]'), Schedule()
    due = sched.due(r, at(2026, 11, 25, 6, 9))      # started at 06:09: 05:57 and 06:00 missed
    assert names(due) == [("relay", "2026-11-25", "06:00")]
    assert [(s.at, st.done, st.tries) for s, st in sched.slots.items()] == [("05:57", True, 0)]
    sched.started(due[0][1])
    sched.finished(due[0][1], True, at(2026, 11, 25, 6, 9), 60)
    assert sched.due(r, at(2026, 11, 25, 6, 10)) == []
    assert names(sched.due(r, at(2026, 11, 25, 6, 30))) == [("relay", "2026-11-25", "06:30")]


def test_days_and_enabled_are_honoured():
    r = rules(days=", days: [mon]")
    assert Schedule().due(r, at(2026, 11, 25, 6, 0)) == []          # a Wednesday
    assert Schedule().due(r, at(2026, 11, 23, 6, 0)) != []          # a Monday
    assert Schedule().due(r, at(2026, 11, 23, 6, 0), enabled=lambda u: False) == []


def test_dst_spring_forward_fires_at_the_next_valid_minute():
    r = rules('["02:30"]')
    # 2026-03-29 02:00 -> 03:00 in Berlin: 02:30 does not exist
    assert Schedule().due(r, at(2026, 3, 29, 1, 59)) == []
    assert names(Schedule().due(r, datetime(2026, 3, 29, 1, 0, tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(TZ)))) \
        == [("relay", "2026-03-29", "02:30")]    # 01:00 UTC = 03:00 CEST


def test_two_times_a_dst_change_puts_on_one_minute_send_one_probe():
    r, sched = rules('["03:00", "02:30"]'), Schedule()
    # 2026-03-29 in Berlin: 02:30 does not exist and fires at 03:00, where the other time is
    now = datetime(2026, 3, 29, 1, 0, tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(TZ))
    due = sched.due(r, now)
    assert names(due) == [("relay", "2026-03-29", "03:00")]
    sched.started(due[0][1])
    sched.finished(due[0][1], True, now, 60)
    assert sched.due(r, now + timedelta(seconds=30)) == []


def test_dst_fall_back_fires_once():
    r, sched = rules('["02:30"]'), Schedule()
    first = datetime(2026, 10, 25, 0, 30, tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(TZ))   # 02:30 CEST
    second = datetime(2026, 10, 25, 1, 30, tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(TZ))  # 02:30 CET
    due = sched.due(r, first)
    assert len(due) == 1
    sched.started(due[0][1])
    sched.finished(due[0][1], True, first, 60)
    assert sched.due(r, second) == []


def test_hot_reload_reschedules():
    sched = Schedule()
    assert sched.due(rules('["06:00"]'), at(2026, 11, 25, 7, 0)) == []
    assert names(sched.due(rules('["07:00"]'), at(2026, 11, 25, 7, 0))) == [("relay", "2026-11-25", "07:00")]


def test_probe_bodies_are_minimal_and_use_the_activation_model():
    r = parse_rules("""
upstreams:
  - {name: a, protocol: anthropic, base_url: 'http://x', api_key: 'sk-aaaaaaaaaaaa', activation_model: claude-haiku-4-5,
     models: {"*": "claude-sonnet-4-5"}}
  - {name: b, protocol: openai-responses, base_url: 'https://chatgpt.com/backend-api/codex', api_key: 'sk-bbbbbbbbbbb'}
  - {name: c, protocol: openai-chat, base_url: 'http://x/v1', api_key: 'sk-cccccccccc', models: {"*": "relay-model"}}
""")
    a, b, c = (probe_body(u) for u in r.upstreams)
    assert a["model"] == "claude-haiku-4-5" and a["max_tokens"] <= 16
    assert b["stream"] is True and "max_output_tokens" not in b and b["store"] is False
    # OpenAI's reasoning models answer a 400 to max_tokens ("use max_completion_tokens instead")
    assert c["model"] == "relay-model" and c["max_completion_tokens"] <= 16 and "max_tokens" not in c


async def test_send_probe_success_failure_and_activation_model_not_renamed():
    from ccswitch.net.http1 import UpstreamClient
    from tests.support.mock_upstream import MockUpstream, hang_before_headers, status

    with MockUpstream("relay") as mock:
        r = parse_rules(f"""
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock.base_url}', api_key: 'sk-aaaaaaaaaaaa',
     activation_model: claude-haiku-4-5, models: {{"*": "other"}}}}
""")
        client = UpstreamClient()
        try:
            ok = await send_probe(client, r.upstreams[0])
            mock.script(status(529), hang_before_headers(2))
            bad = await send_probe(client, r.upstreams[0])
            slow = await send_probe(client, r.upstreams[0], timeout=0.2)
            refused = await send_probe(client, r.upstreams[0], allow_url=lambda url: False)
        finally:
            await client.aclose()
        seen = [rec.json for rec in mock.requests]
    assert ok.ok and ok.status == 200 and seen[0]["model"] == "claude-haiku-4-5"
    assert not bad.ok and bad.error == "HTTP 529"
    assert not slow.ok and slow.error == "timeout (no answer within 0.2s)" and slow.status is None
    assert not refused.ok and "loopback" in refused.error and len(seen) == 3
    assert set(ok.row()) == {"ts", "upstream", "status", "ok", "error", "latency_ms", "slot", "probe_id"}
    assert len(ok.probe_id) == 32 and ok.row()["probe_id"] == ok.probe_id


async def test_a_host_that_cannot_be_looked_up_is_a_failed_probe_not_a_crash():
    from ccswitch.net.http1 import UpstreamClient
    r = parse_rules("upstreams: [{name: a, protocol: anthropic, base_url: 'https://relay.example.com', api_key: k-0123456789}]")
    broken = r.upstreams[0].model_copy(update={"base_url": "https://relay..example.com"})   # no lookup is made
    client = UpstreamClient()
    try:
        result = await send_probe(client, broken)
    finally:
        await client.aclose()
    assert not result.ok and result.status is None and "not a valid host name" in result.error


def test_has_content():
    assert not has_content("anthropic", b'{"type":"message","content":[]}', False)
    assert has_content("openai-responses", b'{"output":[{"type":"message"}]}', False)
    assert has_content("openai-responses", b'data: {"type":"response.output_text.delta","delta":"ok"}\n\n', True)
    assert not has_content("openai-chat", b'{"error":{"message":"x"}}', False)


def probing(tmp_path, mock, times, clock):
    """A gateway with one relay probed at `times`, its ledger in tmp_path, and its activator."""
    from ccswitch.mitm.activator import Activator
    from ccswitch.mitm.gateway import Gateway
    from ccswitch.net.http1 import UpstreamClient
    path = tmp_path / "rules.yaml"
    path.write_text(f"""
timezone: {TZ}
usage_db: usage.db
upstreams:
  - {{name: relay, protocol: anthropic, base_url: '{mock.base_url}', api_key: 'sk-relay-000000000',
     activate_at: {times}}}
routes: {{claude: [relay]}}
""")
    gateway = Gateway()
    gateway.rules_file.open(str(path))
    gateway.open_ledger(True)
    activator = Activator(gateway, clock=clock)
    activator.client = UpstreamClient()
    return gateway, activator


async def test_activator_probes_on_time_records_and_ends_a_cooldown(tmp_path):
    import asyncio
    import sqlite3

    from tests.support.mock_upstream import MockUpstream, status

    with MockUpstream("relay") as mock:
        now = [at(2026, 11, 25, 5, 59)]
        gateway, activator = probing(tmp_path, mock, '["06:00"]', lambda: now[0])
        for _ in range(3):
            gateway.health.record_failure("relay", "HTTP 529", threshold=3, cooldown=600)
        assert gateway.health.cooling_until("relay") is not None
        try:
            assert activator.tick() == []
            now[0] = at(2026, 11, 25, 6, 0, 1)
            mock.script(status(529))
            (first,) = activator.tick()
            assert not (await first).ok
            assert activator.tick() == []                       # the retry waits its minute
            now[0] += timedelta(minutes=1)
            (retry,) = activator.tick()
            assert (await retry).ok
            assert gateway.health.cooling_until("relay") is None  # a good probe ends the cooldown
            now[0] += timedelta(minutes=5)
            assert activator.tick() == []
            assert activator.activate("relay").startswith("activation probe for relay sent")
            await asyncio.gather(*activator.gateway.probes)
        finally:
            await activator.client.aclose()
            gateway.close()
        rows = sqlite3.connect(tmp_path / "usage.db").execute(
            "SELECT upstream, status, ok FROM activations ORDER BY id").fetchall()
        assert rows == [("relay", 529, 0), ("relay", 200, 1), ("relay", 200, 1)]
        assert [r.path for r in mock.requests] == ["/v1/messages"] * 3
        assert mock.requests[0].headers["x-api-key"] == "sk-relay-000000000"


def test_cli_activate(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.support.mock_upstream import MockUpstream
    with MockUpstream("relay") as mock:
        path = tmp_path / "rules.yaml"
        path.write_text(f"""
usage_db: usage.db
upstreams:
  - {{name: relay, protocol: openai-responses, base_url: '{mock.base_url}/v1', api_key: 'sk-relay-000000000'}}
""")
        cli = Path(sys.executable).with_name("ccswitch")
        done = subprocess.run([str(cli), "activate", "relay", "--rules", str(path)], capture_output=True, text=True)
        assert done.returncode == 0 and "relay: activation ok" in done.stdout
        assert mock.last().path == "/v1/responses"
        missing = subprocess.run([str(cli), "activate", "nope", "--rules", str(path)], capture_output=True, text=True)
        assert missing.returncode == 1 and "no upstream named 'nope'" in missing.stderr


def test_a_restart_does_not_fire_a_slot_the_ledger_says_already_fired(tmp_path):
    from ccswitch.ledger.writer import Ledger
    from ccswitch.mitm.activator import seed_from_ledger
    r = parse_rules(f"""
timezone: {TZ}
usage_db: {tmp_path / 'usage.db'}
upstreams:
  - {{name: relay, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: 'sk-relay-000000000',
     activate_at: ["06:00"]}}
""")
    ledger = Ledger(r.usage_db).start()
    ledger.add("activations", {"ts": at(2026, 11, 25, 6, 0, 2).astimezone(ZoneInfo("UTC")).isoformat(),
                               "upstream": "relay", "status": 200, "ok": 1, "error": None, "latency_ms": 5,
                               "slot": "2026-11-25 06:00"})
    ledger.close()
    restarted = Schedule()
    seed_from_ledger(restarted, r, at(2026, 11, 25, 6, 10))
    assert restarted.due(r, at(2026, 11, 25, 6, 10)) == []            # inside grace, but it already fired
    assert Schedule().due(r, at(2026, 11, 25, 6, 10)) != []           # without the ledger it would fire


async def test_a_probe_that_cannot_connect_says_so_in_the_attempts_words():
    # `relay-a: activation failed: connection refused (1 ms)`, not the exception's repr
    from ccswitch.net.http1 import UpstreamClient
    from tests.support.mock_upstream import MockUpstream
    port = MockUpstream.closed_port()
    r = parse_rules(f"upstreams: [{{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:{port}', "
                    "api_key: k-0123456789}]")
    client = UpstreamClient()
    try:
        result = await send_probe(client, r.upstreams[0])
    finally:
        await client.aclose()
    assert not result.ok and result.error == "connection refused"


async def probe_answered(answer):
    """One probe of an Anthropic upstream whose mock answers `answer`."""
    from ccswitch.net.http1 import UpstreamClient
    from tests.support.mock_upstream import MockUpstream

    with MockUpstream("relay") as mock:
        r = parse_rules(f"upstreams: [{{name: a, protocol: anthropic, base_url: '{mock.base_url}', api_key: k-0123456789}}]")
        mock.script(answer)
        client = UpstreamClient()
        try:
            return await send_probe(client, r.upstreams[0])
        finally:
            await client.aclose()


async def test_a_2xx_with_nothing_in_it_is_a_failed_probe():
    from tests.support.mock_upstream import status
    result = await probe_answered(status(200, body={"type": "message", "content": []}))
    assert not result.ok and result.status == 200 and result.error == "a 2xx without content"


async def test_an_error_under_a_2xx_is_told_as_a_request_tells_it():
    # `ccswitch activate` said "a 2xx without content" where the attempts said "HTTP 500 under a 2xx"
    from tests.support.mock_upstream import error_json_200
    result = await probe_answered(error_json_200())
    assert not result.ok and result.status == 200 and result.error == "HTTP 529 under a 2xx"


def test_a_2xx_body_that_says_error_has_no_content_whatever_else_it_holds():
    assert not has_content("openai-chat", b'{"choices":[{}],"error":{"message":"x"}}', False)


def test_the_probe_asks_a_relay_for_a_model_it_maps_when_the_default_is_not_among_them():
    r = parse_rules("""
upstreams:
  - {name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-0123456789,
     models: {"claude-opus-4*": "glm-4.6"}}
""")
    assert probe_body(r.upstreams[0])["model"] == "glm-4.6"


def test_a_late_evening_retry_goes_on_past_midnight_and_fires_no_second_probe():
    r, sched = rules('["23:55"]'), Schedule()
    due = sched.due(r, at(2026, 11, 25, 23, 55))
    sched.started(due[0][1])
    sched.finished(due[0][1], False, at(2026, 11, 25, 23, 55), 600)
    sched.forget_before(at(2026, 11, 26, 0, 5).date() - timedelta(days=1))     # as the activator does
    again = sched.due(r, at(2026, 11, 26, 0, 5))
    assert names(again) == [("relay", "2026-11-25", "23:55")]
    sched.started(again[0][1])
    sched.finished(again[0][1], True, at(2026, 11, 26, 0, 5), 600)
    sched.forget_before(at(2026, 11, 26, 0, 6).date() - timedelta(days=1))
    assert sched.due(r, at(2026, 11, 26, 0, 6)) == []


def test_a_start_exactly_the_grace_late_still_fires():
    assert names(Schedule().due(rules(), at(2026, 11, 25, 6, 15))) == [("relay", "2026-11-25", "06:00")]


async def test_with_a_shared_state_only_the_instance_that_claims_a_time_probes_it(tmp_path):
    import sqlite3

    from tests.support.mock_upstream import MockUpstream, status

    class Claims:
        def __init__(self, won):
            self.won, self.asked = won, []

        async def claim(self, name, until):
            self.asked.append(name)
            return self.won(name)

    with MockUpstream("relay") as mock:
        now = [at(2026, 11, 25, 6, 0, 1)]
        gateway, activator = probing(tmp_path, mock, '["06:00", "07:00"]', lambda: now[0])
        gateway.state = claims = Claims(lambda name: name != "activation:relay:2026-11-25 07:00:1")
        try:
            mock.script(status(529))
            (first,) = activator.tick()
            assert not (await first).ok
            now[0] += timedelta(minutes=1)
            (retry,) = activator.tick()                 # its second try: claimed as a try of its own
            assert (await retry).ok
            now[0] = at(2026, 11, 25, 7, 0, 1)
            (other,) = activator.tick()
            assert await other is None                  # another instance's: nothing sent, no row
            now[0] += timedelta(minutes=5)
            assert activator.tick() == []               # done, not retried here
        finally:
            await activator.client.aclose()
            gateway.close()
        rows = sqlite3.connect(tmp_path / "usage.db").execute("SELECT slot, ok FROM activations ORDER BY id").fetchall()
    assert rows == [("2026-11-25 06:00", 0), ("2026-11-25 06:00", 1)] and len(mock.requests) == 2
    assert claims.asked == ["activation:relay:2026-11-25 06:00:1", "activation:relay:2026-11-25 06:00:2",
                            "activation:relay:2026-11-25 07:00:1"]
