"""ccswitch's own answers tell the SDKs whether to retry (`x-should-retry`)."""

import json

import pytest

from ccswitch.wire.protocols import is_codex, own_error, should_retry, stream_error_event
from ccswitch.wire.sse import SSEParser


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 415, 426, 431])
def test_the_clients_own_mistakes_are_not_worth_a_retry(status):
    assert should_retry(status) is False


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 529])
def test_a_busy_or_briefly_unreachable_route_is(status):
    assert should_retry(status) is True


def test_a_429_is_worth_a_retry_only_when_the_wait_is_short():
    assert should_retry(429) is True and should_retry(429, 30) is True
    assert should_retry(429, 61) is False        # e.g. a 5-hour window: say it now


@pytest.mark.parametrize("status", [429, 503])
def test_a_wait_of_a_minute_is_still_worth_a_retry_and_a_longer_one_is_not(status):
    assert should_retry(status, 60) is True
    assert should_retry(status, 60.5) is False


def test_own_error_keeps_the_callers_x_should_retry_and_adds_none_of_its_own():
    headers, _ = own_error("anthropic", 503, "closed for now", (("X-Should-Retry", "false"),))
    assert [(k, v) for k, v in headers if k.lower() == "x-should-retry"] == [("X-Should-Retry", "false")]
    assert ("content-type", "application/json") in headers


def test_own_error_carries_the_header_content_type_and_the_body_in_the_clients_protocol():
    headers, body = own_error("anthropic", 429, "slow down", (("retry-after", "3600"),))
    assert ("x-should-retry", "false") in headers and ("retry-after", "3600") in headers
    assert ("content-type", "application/json") in headers
    assert json.loads(body) == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    headers, _ = own_error("openai-chat", 503, "no upstream", (("retry-after", "bad"),))
    assert ("x-should-retry", "true") in headers


def test_codex_told_not_to_retry_a_429_gets_the_usage_limit_it_stops_on_with_when_to_come_back():
    """Codex waits out any retry-after (hours, for a budget spent until tomorrow) and reads no
    x-should-retry; `usage_limit_reached` makes it stop and say "Try again at" its `resets_at`."""
    headers, body = own_error("openai-responses", 429, "client key alice has spent $1 of its daily budget",
                              (("retry-after", "36000"),), codex=True, now=1_000_000.0)
    assert ("x-should-retry", "false") in headers and not [k for k, _ in headers if k == "retry-after"]
    assert json.loads(body)["error"] == {"message": "client key alice has spent $1 of its daily budget",
                                         "type": "usage_limit_reached", "param": None, "code": None,
                                         "resets_at": 1_036_000}


def test_codex_told_not_to_retry_a_503_gets_no_retry_after_and_gives_up_after_its_own_backoff():
    for given in ((("retry-after", "40000"),), (("x-should-retry", "false"),)):
        headers, body = own_error("openai-responses", 503, "closed until 06:00", given, codex=True)
        assert not [k for k, _ in headers if k == "retry-after"]
        assert [v for k, v in headers if k.lower() == "x-should-retry"] == ["false"]
        assert json.loads(body)["error"]["type"] == "server_error"


@pytest.mark.parametrize("codex,status,wait", [(True, 429, "30"), (True, 503, "60"), (False, 429, "36000"),
                                               (False, 503, "40000"), (True, 400, "36000")])
def test_other_clients_and_codex_told_to_retry_soon_get_the_answer_as_it_is(codex, status, wait):
    headers, body = own_error("openai-responses", status, "x", (("retry-after", wait),), codex=codex, now=5.0)
    assert ("retry-after", wait) in headers
    assert json.loads(body) == json.loads(own_error("openai-responses", status, "x", (("retry-after", wait),))[1])
    assert "usage_limit_reached" not in body.decode()


@pytest.mark.parametrize("originator,agent,codex", [
    ("codex_exec", "codex_exec/0.169.0 (Debian 12.0.0; x86_64)", True), ("codex_cli_rs", None, True),
    (None, "codex_vscode/1.2", True), ("Codex_Desktop", None, True),
    (None, "claude-cli/2.1.332 (external, cli)", False), (None, "OpenAI/Python 2.8.1", False), (None, None, False)])
def test_codex_is_known_by_its_originator_or_user_agent(originator, agent, codex):
    assert is_codex(originator, agent) is codex


@pytest.mark.parametrize("status,kind", [(415, "invalid_request_error"), (431, "invalid_request_error"),
                                         (405, "invalid_request_error"), (503, "api_error"),
                                         (529, "overloaded_error"), (599, "api_error")])
def test_an_anthropic_clients_error_type_says_whose_mistake_it_is(status, kind):
    # the client's own mistakes are invalid requests; "overloaded" is Anthropic's word for its 529
    _, body = own_error("anthropic", status, "x")
    assert json.loads(body)["error"]["type"] == kind


#: the Anthropic errors page: the type that goes with each status
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                   403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                   429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}


@pytest.mark.parametrize("status", sorted(ANTHROPIC_TYPES))
def test_an_anthropic_clients_error_type_is_the_one_anthropic_gives_that_status(status):
    _, body = own_error("anthropic", status, "x")
    assert json.loads(body)["error"]["type"] == ANTHROPIC_TYPES[status]


@pytest.mark.parametrize("status,kind", [(400, "invalid_request_error"), (429, "rate_limit_error"),
                                         (500, "server_error"), (502, "server_error"), (504, "server_error")])
def test_an_openai_clients_error_type_follows_the_status(status, kind):
    for protocol in ("openai-chat", "openai-responses"):
        _, body = own_error(protocol, status, "x")
        assert json.loads(body)["error"]["type"] == kind


def event_json(data: bytes) -> dict:
    [event] = SSEParser().feed(data)
    return event.json()


def test_a_streams_own_error_event_names_the_type_its_status_has_as_a_whole_answer():
    """A timeout after the stream began is the 504 it would have been before: Anthropic's timeout_error."""
    assert event_json(stream_error_event("anthropic", "upstream a: idle timeout", 504))["error"] == {
        "type": "timeout_error", "message": "upstream a: idle timeout"}
    assert event_json(stream_error_event("anthropic", "cut", 502))["error"]["type"] == "api_error"
    assert event_json(stream_error_event("openai-responses", "cut", 504))["response"]["error"] == {
        "code": "server_error", "message": "cut"}
    assert event_json(stream_error_event("openai-chat", "cut", 504))["error"]["type"] == "server_error"


def test_a_responses_streams_own_failure_is_a_response_failed_event_by_its_sse_name_too():
    # the OpenAI SDKs read an event by its `event:` name: one named `error` whose data has no
    # top-level error is neither raised nor taken for the response's end
    [event] = SSEParser().feed(stream_error_event("openai-responses", "cut", 502, 3, "resp_1"))
    assert event.event == "response.failed" and event.json()["response"]["id"] == "resp_1"


def test_codex_told_not_to_retry_by_the_caller_gets_the_usage_limit_however_short_the_wait():
    # the caller's `x-should-retry: false` decides, not the short retry-after beside it
    headers, body = own_error("openai-responses", 429, "closed", (("retry-after", "30"), ("x-should-retry", "false")),
                              codex=True, now=1_000.0)
    assert not [k for k, _ in headers if k.lower() == "retry-after"]
    assert json.loads(body)["error"]["type"] == "usage_limit_reached"
    assert json.loads(body)["error"]["resets_at"] == 1_030


def test_a_wait_of_nothing_is_still_a_time_to_come_back():
    _, body = own_error("openai-responses", 429, "closed", (("retry-after", "0"), ("x-should-retry", "false")),
                        codex=True, now=1_000.0)
    assert json.loads(body)["error"]["resets_at"] == 1_000


@pytest.mark.parametrize("originator,agent", [(None, "not-codex/1.0"), ("my_codex_wrapper", None),
                                              (None, "claude-cli/2.1 (codex compatible)")])
def test_a_client_that_only_mentions_codex_is_not_codex(originator, agent):
    assert is_codex(originator, agent) is False
