"""Key text an upstream echoes back (in an error's body or headers) is scrubbed before anything
reaches the client or the ledger: its api_key, credentials among its `headers:`, and under
`auth: client` the client's own key, and any of the rules' client keys."""

import json

import pytest

from ccswitch.config.load import parse_rules
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B, make_job, rules_for
from tests.support.mock_upstream import status
from tests.unit.dial.test_dialer import FAST, run


async def test_upstream_echoing_its_key_is_redacted(mock_a):
    mock_a.script(status(401, body={"type": "error", "error": {"type": "authentication_error",
                                                               "message": f"invalid x-api-key {KEY_A}"}}))
    _, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST))
    assert KEY_A.encode() not in sink.body and b"[redacted]" in sink.body


async def test_upstream_echoing_its_key_in_headers_is_redacted(mock_a):
    mock_a.script(status(401, headers={"x-echo": f"Bearer {KEY_A}", f"x-{KEY_A}": "1", "x-other": "kept"}))
    _, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST))
    assert sink.status == 401 and KEY_A.lower() not in json.dumps(sink.headers).lower()
    assert sink.headers["x-echo"] == "Bearer [redacted]" and sink.headers["x-other"] == "kept"


async def test_a_credential_among_the_upstreams_headers_is_scrubbed_too(mock_a):
    mock_a.script(status(401, body={"error": {"message": "bad api-key azure-secret-0123456789",
                                              "version": "2024-10-21-preview"}}))
    rules = parse_rules(f"""
{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', api_key: 'sk-unused-000000',
     headers: {{api-key: '${{AZURE_KEY}}', x-api-version: '2024-10-21-preview'}}}}
routes: {{claude: [a]}}
""", env={"AZURE_KEY": "azure-secret-0123456789"})
    job, sink, _ = await run(rules)
    assert mock_a.requests[0].headers["api-key"] == "azure-secret-0123456789"
    assert b"azure-secret" not in sink.body and b"bad api-key [redacted]" in sink.body
    assert b"2024-10-21-preview" in sink.body            # not a credential: left alone


async def test_under_auth_client_the_clients_own_key_is_scrubbed_from_what_is_recorded(mock_a):
    mock_a.script(status(401, body={"error": {"message": f"invalid key {CLIENT_KEY}"}}))
    rules = parse_rules(f"""
{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', auth: client}}
routes: {{claude: [a]}}
""")
    job, sink, _ = await run(rules)
    assert mock_a.requests[0].headers["x-api-key"] == CLIENT_KEY       # passed on, as auth: client says
    recorded = (job.error or "") + json.dumps([a.describe() for a in job.attempts])
    assert CLIENT_KEY.encode() not in sink.body and CLIENT_KEY not in recorded


async def test_a_ccswitch_client_key_an_upstream_quotes_is_scrubbed_from_the_answer(mock_a):
    # a client key never goes upstream, but a prompt may carry one and an error may quote it:
    # the client does not get it back (nor, below, the ledger, the flow comment or the log)
    mock_a.script(status(400, body={"error": {"message": f"cannot echo {CLIENT_KEY} or {KEY_A}"}}))
    rules = parse_rules(f"""
{FAST}
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', api_key: '{KEY_A}'}}
routes: {{claude: [a]}}
""")
    job = make_job(rules)
    job.client = rules.client_keys[0].name      # the key it came with
    job, sink, _ = await run(rules, job=job)
    assert b"cannot echo [redacted] or [redacted]" in sink.body


async def test_a_ccswitch_client_key_quoted_by_an_in_stream_error_is_not_recorded(mock_a, mock_b, monkeypatch):
    from tests.support import mock_payloads
    from tests.unit.dial.test_dialer import error_event_after, two
    monkeypatch.setattr(mock_payloads, "error_body", lambda protocol, code: {"type": "error", "error": {
        "type": "overloaded_error", "message": f"overloaded for {CLIENT_KEY}"}})
    mock_a.script(error_event_after(1))
    rules = two(mock_a, mock_b).model_copy(update={"client_keys": parse_rules(f"""
client_keys: ["{CLIENT_KEY}"]
upstreams: [{{name: x, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: 'sk-unused-000000'}}]
routes: {{claude: [x]}}
""").client_keys})
    job = make_job(rules)
    job.client = rules.client_keys[0].name
    job, sink, _ = await run(rules, job=job)
    recorded = json.dumps([a.describe() for a in job.attempts]) + str(job.error) + job.comment()
    assert CLIENT_KEY not in recorded and "overloaded for [redacted]" in recorded


@pytest.mark.parametrize("echoed", ["its own key", "another upstream's key"])
async def test_an_in_stream_error_is_scrubbed_before_it_is_cut_short(echoed):
    from ccswitch.dial.dialer import Dialer
    from ccswitch.routing.health import HealthBoard
    from tests.support.helpers import MemorySink, make_job
    from tests.support.loopback_guard import loopback_url
    from tests.unit.dial.test_stream_tail import ANTHROPIC, event, serve_once

    # the key straddles the 200 characters kept of an error's text
    key = KEY_A if echoed == "its own key" else KEY_B     # b's: a client pasted it into its prompt, say
    # "permission_error: " + 170 + " key=": the key's first 7 characters are among the 200 kept
    echo = event({"type": "error", "error": {"type": "permission_error", "message": "x" * 170 + " key=" + key}})
    server, port = await serve_once(ANTHROPIC[0] + echo)
    rules = parse_rules(f"""
{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:{port}', api_key: '{KEY_A}'}}
  - {{name: b, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_B}'}}
routes: {{claude: [a]}}
""")
    job, dialer = make_job(rules), Dialer(HealthBoard(), allow_url=loopback_url)
    try:
        await dialer.run(job, MemorySink())
    finally:
        await dialer.aclose()
        server.close()
    recorded = job.error + json.dumps([a.describe() for a in job.attempts])
    assert "permission_error" in job.error and key[:6] not in recorded and "key=[redact" in job.error


async def test_the_start_of_an_event_that_is_not_json_is_scrubbed_before_it_is_cut_short():
    from tests.unit.dial.test_stream_tail import ANTHROPIC, serve_once

    # the 60 characters of it kept end 10 characters into the key
    garbage = b"event: content_block_delta\ndata: " + b"x" * 50 + KEY_A.encode() + b" <- not JSON\n\n"
    server, port = await serve_once(ANTHROPIC[0] + garbage)
    rules = rules_for(("a", "anthropic", f"http://127.0.0.1:{port}"), extra=FAST)
    try:
        job, sink, _ = await run(rules)
    finally:
        server.close()
    recorded = job.error + json.dumps([a.describe() for a in job.attempts]) + job.comment()
    assert job.error == "a stream event that is not JSON: " + repr("x" * 50 + "[redacted]")
    assert KEY_A[:6] not in recorded and KEY_A[:6].encode() not in sink.body


@pytest.mark.parametrize("auth", ["x-api-key", "client"])
async def test_a_clients_key_in_any_credential_header_or_the_query_reaches_only_an_auth_client_upstream(
        mock_a, auth):
    from dataclasses import replace
    rules = parse_rules(f"""
{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', {"auth: client" if auth == "client" else f"api_key: '{KEY_A}'"}}}
routes: {{claude: [a]}}
""")
    job = make_job(rules, headers=[("api-key", CLIENT_KEY), ("x-goog-api-key", CLIENT_KEY),
                                   ("anthropic-version", "2023-06-01"), ("content-type", "application/json")])
    job.request = replace(job.request, url=job.request.url + f"?beta=true&key={CLIENT_KEY}&Api-Key={CLIENT_KEY}")
    await run(rules, job=job)
    seen = mock_a.last()
    assert seen.query["beta"] == "true"
    if auth == "client":
        assert seen.query["key"] == CLIENT_KEY and seen.headers["api-key"] == CLIENT_KEY
    else:
        assert CLIENT_KEY not in json.dumps(seen.query) + json.dumps(dict(seen.headers))
        assert seen.headers["x-api-key"] == KEY_A


async def test_a_header_set_from_an_environment_variable_is_a_secret_whatever_its_name(mock_a):
    signature, session = "sig-0123456789abcdef", "sess-SESSIONvalue456"
    mock_a.script(status(401, body={"error": {"message": f"bad signature {signature}, session {session}"}}))
    rules = parse_rules(f"""
{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', api_key: '{KEY_A}',
     headers: {{x-relay-sig: '${{SIG}}', x-data: 'id=${{SESS}};ts=1', x-relay-region: eu-west-1-long-name}}}}
routes: {{claude: [a]}}
""", env={"SIG": signature, "SESS": session})
    job, sink, _ = await run(rules)
    assert mock_a.requests[0].headers["x-relay-sig"] == signature
    recorded = (job.error or "") + json.dumps([a.describe() for a in job.attempts])
    assert signature.encode() not in sink.body and signature not in recorded
    assert session.encode() not in sink.body and session not in recorded    # a ${VAR} inside a longer value
    assert signature in rules.secret_texts()            # the log, the live page and notifications too
    assert "eu-west-1-long-name" not in rules.secret_texts()   # a plain setting is not a secret


def test_the_loaders_own_notes_are_not_settings():
    from ccswitch.config.values import RulesError
    with pytest.raises(RulesError, match="env_secrets: unknown key"):
        parse_rules("upstreams: [{name: a, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: k-0123456789,"
                    " env_secrets: [x]}]")


@pytest.mark.parametrize("path,route", [("/v1/messages", "claude"), ("/v1/chat/completions", "chat")],
                         ids=["passed-on", "converted"])
async def test_a_key_echoed_json_escaped_is_scrubbed_before_a_conversion_could_unescape_it(mock_a, path, route):
    key = "sk-relay/Abc123+xyz&more"
    escaped = key.replace("/", "\\/").replace("&", "\\u0026").replace("+", "\\u002B")   # PHP, Go, .NET
    mock_a.script(status(400, body=('{"type":"error","error":{"type":"invalid_request_error",'
                                    f'"message":"bad header x-api-key={escaped}"}}}}').encode(),
                         headers={"content-type": "application/json"}))
    rules = parse_rules(f"""
{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', api_key: '${{RELAY_KEY}}'}}
routes: {{{route}: [a]}}
""", env={"RELAY_KEY": key})
    body = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    job, sink, _ = await run(rules, job=make_job(rules, path=path, body=body))
    assert sink.status == 400 and b"[redacted]" in sink.body
    told = json.loads(sink.body)["error"]["message"]
    assert key not in told and "Abc123" not in told and "Abc123" not in (job.error or "")


async def test_a_streams_usage_is_recorded_scrubbed(mock_a):
    # a relay that writes text (here the request's key) into its usage object
    usage = {"input_tokens": 3, "output_tokens": 1, "note": f"billed to x-api-key={KEY_A}"}
    events = [("message_start", {"type": "message_start", "message": {
                  "id": "m", "type": "message", "role": "assistant", "model": "m", "content": [], "usage": usage}}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
              ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "hi"}}),
              ("content_block_stop", {"type": "content_block_stop", "index": 0}),
              ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}),
              ("message_stop", {"type": "message_stop"})]
    stream = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()
    mock_a.script(status(200, body=stream, headers={"content-type": "text/event-stream"}))
    job, sink, _ = await run(rules_for(("a", "anthropic", mock_a.base_url), extra=FAST))
    assert sink.status == 200 and job.error is None
    raw = json.dumps(job.attempts[-1].usage.raw)
    assert KEY_A not in raw and "[redacted]" in raw and KEY_A.encode() not in sink.body


def test_a_proxys_password_and_login_are_secrets_its_user_name_alone_is_not():
    import base64
    rules = parse_rules("upstreams: [{name: a, protocol: anthropic, base_url: 'https://relay.example.com',"
                        " api_key: k-0123456789, proxy: 'http://developer:pw-0123456789@127.0.0.1:3128'}]")
    texts = rules.upstream("a").secret_texts()
    assert "pw-0123456789" in texts and base64.b64encode(b"developer:pw-0123456789").decode() in texts
    assert "developer" not in texts       # a word a model may well write


async def test_a_whole_answers_usage_is_recorded_scrubbed_whatever_escape_hid_the_key(mock_a):
    # the key with one letter escaped (\u0061 for `a`): no form the body's scrub looks for, but
    # decoded for the ledger's raw usage it was the key in plain text
    hidden = KEY_A.replace("a", "\\u0061", 1)
    assert hidden != KEY_A
    body = ('{"id": "m", "type": "message", "role": "assistant", "model": "m", "stop_reason": "end_turn", '
            '"content": [{"type": "text", "text": "hi"}], '
            f'"usage": {{"input_tokens": 3, "output_tokens": 1, "note": "billed to {hidden}"}}}}').encode()
    mock_a.script(status(200, body=body, headers={"content-type": "application/json"}))
    rules = rules_for(("a", "anthropic", mock_a.base_url), extra=FAST)
    job, sink, _ = await run(rules, job=make_job(rules, body={"model": "m", "max_tokens": 5, "messages": []}))
    assert sink.status == 200 and job.error is None
    raw = json.dumps(job.attempts[-1].usage.raw)
    assert KEY_A not in raw and "[redacted]" in raw


async def test_a_credential_shown_as_the_placeholder_is_never_sent_as_one(mock_a):
    """A replay whose key was put back in mitmweb still shows its cookie and account id as
    `<redacted>`: an `auth: client` upstream gets the key, not the placeholders."""
    rules = parse_rules(f"""
{FAST}
upstreams:
  - {{name: a, protocol: anthropic, base_url: '{mock_a.base_url}', auth: client}}
routes: {{claude: [a]}}
""")
    job = make_job(rules, headers=[("x-api-key", CLIENT_KEY), ("cookie", "<redacted>"),
                                   ("chatgpt-account-id", "<redacted>"), ("anthropic-version", "2023-06-01"),
                                   ("content-type", "application/json")])
    await run(rules, job=job)
    seen = mock_a.last().headers
    assert seen["x-api-key"] == CLIENT_KEY and "cookie" not in seen and "chatgpt-account-id" not in seen
