"""What ccswitch writes onto flows: its one-pass redaction and its direct responses agree with
what mitmproxy's own setters would have made."""

import pytest
from mitmproxy import http

from ccswitch.mitm.flows import likely_protocol, point_at, redact_credentials, whole_response
from ccswitch.vocab import Protocol
from ccswitch.wire.redact import CREDENTIAL_HEADERS, REDACTED

HEADER_SETS = [
    [(b"Host", b"api"), (b"X-Api-Key", b"sk-1"), (b"accept", b"*/*")],
    [(b"authorization", b"Bearer a"), (b"cookie", b"c=1"), (b"Authorization", b"Bearer b"), (b"x", b"y")],
    [(b"content-type", b"application/json")],
    [],
    [(b"OpenAI-Project", b"p"), (b"x-api-key", b"k"), (b"x-api-key", b"k2"), (b"x-api-key", b"k3")],
]


def one_setter_per_name(headers: http.Headers) -> None:
    for name in CREDENTIAL_HEADERS:
        if name in headers:
            headers[name] = REDACTED


@pytest.mark.parametrize("fields", HEADER_SETS)
def test_redaction_in_one_pass_is_what_mitmproxys_setter_makes(fields):
    ours, theirs = http.Request.make("POST", "https://api.example.com/v1"), http.Headers(fields)
    ours.headers = http.Headers(fields)
    redact_credentials(ours)
    one_setter_per_name(theirs)
    assert ours.headers.fields == theirs.fields
    assert not any(v.startswith((b"sk-", b"Bearer")) for _, v in ours.headers.fields)


def test_a_key_in_the_query_string_is_redacted_on_the_flow_in_any_spelling():
    request = http.Request.make("POST", "https://relay.example.com/v1/messages?beta=true&key=ck-1&KEY=ck-2"
                                "&api%2Dkey=ck-3&api_key=ck-4&key=ck-5&other=keep")
    redact_credentials(request)
    assert "ck-" not in request.path and request.query.get_all("beta") == ["true"]
    assert request.query.get_all("other") == ["keep"] and request.query.get_all("key") == [REDACTED]


@pytest.mark.parametrize("status,headers,body", [
    (200, [("content-type", "application/json"), ("x-ccswitch-upstream", "a")], b'{"ok":true}'),
    (529, [("Retry-After", "10")], b""),
    (599, [], b"x" * 1000),
    (200, [("content-encoding", "gzip"), ("content-type", "text/plain")], b"hello"),   # make() encodes it
    (200, [("transfer-encoding", "chunked")], b"data"),                               # no length added
])
def test_a_whole_response_is_what_response_make_builds(status, headers, body):
    ours = whole_response(status, headers, body)
    theirs = http.Response.make(status, body, http.Headers([(k.encode(), v.encode()) for k, v in headers]))
    assert (ours.status_code, ours.reason, ours.http_version) == (theirs.status_code, theirs.reason,
                                                                   theirs.http_version)
    assert ours.headers.fields == theirs.headers.fields and ours.raw_content == theirs.raw_content
    assert ours.content == body and ours.timestamp_end >= ours.timestamp_start
    assert ours.get_state().keys() == theirs.get_state().keys()    # saved (`-w`) like any response
    assert http.Response.from_state(ours.get_state()).headers.fields == ours.headers.fields


def test_a_whole_response_is_the_response_mitmproxy_builds_of_its_fields(monkeypatch):
    """Built without mitmproxy's check of each field (their types are known): the same object,
    attribute for attribute, as its constructor's; a status or body of another type is still
    refused by that check."""
    monkeypatch.setattr("time.time", lambda: 1234.5)
    ours = whole_response(201, [("content-type", "application/json"), ("x-a", "b")], b'{"ok":true}')
    theirs = http.Response(b"HTTP/1.1", 201, b"Created", http.Headers(
        [(b"content-type", b"application/json"), (b"x-a", b"b"), (b"content-length", b"11")]),
        b'{"ok":true}', None, 1234.5, 1234.5)
    assert type(ours) is http.Response and type(ours.data) is http.ResponseData
    assert vars(ours).keys() == vars(theirs).keys() and ours.data == theirs.data
    assert list(vars(ours.data).items()) == list(vars(theirs.data).items())     # in the same order
    assert ours.get_state() == theirs.get_state()
    with pytest.raises(TypeError):
        whole_response(200, [], bytearray(b"x"))
    with pytest.raises(TypeError):
        whole_response(200.0, [], b"x")


@pytest.mark.parametrize("target", ["http://127.0.0.1:4000/v1/messages?beta=true", "https://relay.example/api/v1/messages",
                                    "https://[::1]:8443/openai/v1/responses", "http://up:80/x/y"])
def test_pointing_a_request_at_a_url_is_what_mitmproxys_url_setter_does(target):
    headers = ((b"Host", b"api.anthropic.com"), (b"x-api-key", b"k"))
    ours = http.Request.make("POST", "https://api.anthropic.com/v1/messages", b"{}", headers)
    theirs = http.Request.make("POST", "https://api.anthropic.com/v1/messages", b"{}", headers)
    for _ in range(2):    # the second time from the kept parse
        point_at(ours, target)
        theirs.url = target
        assert (ours.url, ours.scheme, ours.host, ours.port, ours.path, ours.headers.fields) == \
            (theirs.url, theirs.scheme, theirs.host, theirs.port, theirs.path, theirs.headers.fields)


def test_a_malformed_url_is_refused_every_time_not_kept():
    request = http.Request.make("POST", "https://api.anthropic.com/v1/messages")
    for _ in range(2):
        with pytest.raises(ValueError):
            point_at(request, "http://:0/x")


def test_the_log_line_says_why_a_request_failed_on_its_only_upstream_as_it_says_a_failover():
    """A request that fails with nothing to fail over to is said in the log too, not only its 502."""
    from ccswitch.dial.job import CLIENT_CLOSED, Attempt
    from ccswitch.mitm.flows import attempts_line
    from tests.support.helpers import make_job, rules_for
    rules = rules_for(("a", "anthropic", "http://127.0.0.1:9"), ("b", "anthropic", "http://127.0.0.1:9"))
    job = make_job(rules)
    job.attempts, job.error, job.status = [Attempt("a", None, "connect timeout", 3001)], "connect timeout", 504
    assert attempts_line(job) == "claude-x failed: a: connect timeout (3001 ms)"
    job.attempts.append(Attempt("b", 200, None, 900))
    job.error, job.status = None, 200
    assert attempts_line(job) == "claude-x failed over: a: connect timeout (3001 ms) → b: 200 (900 ms)"
    served = make_job(rules)
    served.attempts = [Attempt("a", 200, None, 10)]
    assert attempts_line(served) is None
    served.error = CLIENT_CLOSED          # the client left: not the upstream's failure
    assert attempts_line(served) is None


def test_a_client_s_own_mistake_passed_on_is_no_failure_line_in_the_log():
    from ccswitch.dial.job import Attempt
    from ccswitch.mitm.flows import attempts_line
    from tests.support.helpers import make_job, rules_for
    job = make_job(rules_for(("a", "anthropic", "http://127.0.0.1:9")))
    job.attempts, job.error, job.status = [Attempt("a", 400, "HTTP 400", 12)], "HTTP 400", 400
    assert attempts_line(job) is None
    job.attempts, job.error, job.status = [Attempt("a", 429, "HTTP 429", 12)], "HTTP 429", 429
    assert attempts_line(job) == "claude-x failed: a: 429 (12 ms)"


@pytest.mark.parametrize("agent, codex", [("codex_cli_rs/0.169.0", True), ("claude-cli/2.1.332", False)])
def test_an_error_answer_reads_two_headers_not_every_header_s_values(monkeypatch, agent, codex):
    # `Headers.items()` reads each name's values anew: a stranger's head of 6,000 distinct names
    # held the event loop 8 s before its 401 (and every other client with it)
    from mitmproxy.test import tflow

    from ccswitch.mitm.flows import answer_error
    flow = tflow.tflow()
    flow.request.headers = http.Headers([(f"h{i}".encode(), b"b") for i in range(50)] + [(b"user-agent", agent.encode())])
    monkeypatch.setattr(http.Headers, "items", lambda self: pytest.fail("every header's values read"))
    answer_error(flow, "openai-responses", 429, "over budget", {"retry-after": "3600"})   # a day spent
    assert flow.response.status_code == 429
    assert (b"usage_limit_reached" in flow.response.content) is codex


@pytest.mark.parametrize("host, path, headers, protocol", [
    ("api.anthropic.com", "/v1/chat/completions", {}, Protocol.CHAT),          # its route
    # an unrouted path keeps its API's last word, whatever host the listener points at
    ("api.anthropic.com", "/chat/completions", {"authorization": "Bearer k"}, Protocol.CHAT),
    ("api.anthropic.com", "/api/v2/responses?x=1", {}, Protocol.RESPONSES),
    ("api.openai.com", "/messages/", {}, Protocol.ANTHROPIC),
    ("api.anthropic.com", "/v1/models", {}, Protocol.ANTHROPIC),                # else the host
    ("example.com", "/v1/models", {"anthropic-version": "2023-06-01"}, Protocol.ANTHROPIC),
    ("api.openai.com", "/v1/models", {}, Protocol.CHAT),
])
def test_the_api_an_unrouted_request_most_likely_speaks(host, path, headers, protocol):
    request = http.Request.make("POST", f"https://{host}{path}", b"", headers)
    assert likely_protocol(request) == protocol
