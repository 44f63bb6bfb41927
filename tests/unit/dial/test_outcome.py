from datetime import UTC, datetime, timedelta

from ccswitch.dial.outcome import limit_passed_on, response_headers, retry_after_seconds, retry_delay
from ccswitch.wire.exchange import not_json_kind
from ccswitch.wire.protocols import in_stream_status


def test_retry_delay_doubles_and_honours_retry_after_capped():
    assert retry_delay([], 1.0, 1) == 1.0 and retry_delay([], 1.0, 3) == 4.0
    assert retry_delay([("Retry-After", "7")], 1.0, 1) == 7.0
    assert retry_delay([("retry-after", "120")], 1.0, 1) == 30.0
    assert retry_delay([("retry-after-ms", "250")], 1.0, 1) == 0.25
    when = (datetime.now(UTC) + timedelta(seconds=20)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 15 < retry_after_seconds([("retry-after", when)]) <= 20
    assert retry_after_seconds([("retry-after", "soon")]) is None


def test_in_stream_errors_map_to_statuses():
    assert in_stream_status({"type": "error", "error": {"type": "overloaded_error"}}) == 529
    assert in_stream_status({"type": "response.failed",
                             "response": {"error": {"code": "rate_limit_exceeded"}}}) == 429
    assert in_stream_status({"type": "error", "code": "invalid_request_error"}) == 400
    assert in_stream_status({"weird": True}) == 500
    # a Responses WebSocket error frame names its status; a nonsense one is not trusted
    assert in_stream_status({"type": "error", "status": 429, "error": {"type": "server_error"}}) == 429
    assert in_stream_status({"type": "error", "status": 200, "error": {"type": "overloaded_error"}}) == 529
    assert in_stream_status({"type": "error", "status": True, "code": "invalid_request_error"}) == 400


def test_a_body_that_is_not_json_says_whether_its_bytes_or_its_syntax_are_at_fault():
    assert not_json_kind(b'{"text": "caf\xe9"}') == "not UTF-8"
    assert not_json_kind(b"<html>It works!</html>") == "not JSON"


def test_retry_after_that_is_malformed_or_endless_is_ignored_not_an_error():
    assert retry_after_seconds([("retry-after", "Wed, 21 Oct 2015 07:28:00 -0000")]) == 0.0   # a past date
    assert retry_after_seconds([("retry-after", "inf")]) is None
    assert retry_after_seconds([("retry-after", "1e9")]) is None
    assert retry_after_seconds([("retry-after-ms", "1500")]) == 1.5


def test_headers_the_upstreams_connection_header_names_stay_on_its_hop():
    passed = response_headers([("Connection", "X-Hop, keep-alive"), ("x-hop", "secret-ish"), ("keep-alive", "5"),
                               ("request-id", "req_1"), ("x-ccswitch-upstream", "theirs"), ("content-type", "a/b")])
    assert passed == [("request-id", "req_1"), ("content-type", "a/b")]


def test_an_upstreams_alternative_services_are_not_passed_on_as_the_clients():
    # e.g. a relay's `h3=":443"` would send a client of api.anthropic.com, or of ccswitch's own
    # listener, to that host's port 443 over HTTP/3, past ccswitch
    assert response_headers([("Alt-Svc", 'h3=":443"; ma=86400'), ("content-type", "a/b")]) == [("content-type", "a/b")]


def test_headers_the_clients_connection_header_names_stay_on_its_hop_too():
    from ccswitch.config.models import Upstream
    from ccswitch.dial.render import render
    from ccswitch.wire.exchange import ClientRequest
    upstream = Upstream(name="a", protocol="anthropic", base_url="https://api.example.com", api_key="sk-test-key-1")
    body = {"model": "m", "messages": []}
    req = ClientRequest(route="claude", endpoint="messages", method="POST", url="https://x/v1/messages",
                        headers=[("connection", "x-hop, keep-alive"), ("x-hop", "for ccswitch only"),
                                 ("anthropic-version", "2023-06-01")], body=b"{}", json=body, model="m")
    sent = dict(render(upstream, req, body).headers)
    assert "x-hop" not in sent and "connection" not in sent and sent["anthropic-version"] == "2023-06-01"


def test_a_key_is_known_in_every_percent_encoded_form_an_echo_may_use():
    from ccswitch.wire.redact import echo_forms, scrub
    key = "sk-A/B+C=="
    assert set(echo_forms(key)) == {key, "sk-A%2FB%2BC%3D%3D", "sk-A%2fB%2bC%3d%3d", "sk-A/B%2BC%3D%3D",
                                    "sk-A/B%2bC%3d%3d"}
    assert echo_forms("sk-plain-key-123") == ("sk-plain-key-123",)
    assert scrub(b"https://relay/keys/sk-A/B%2BC%3D%3D/usage", list(echo_forms(key))) == \
        b"https://relay/keys/[redacted]/usage"


def test_a_busy_connection_cap_is_a_504_and_a_reset_is_named_so():
    from ccswitch.dial.outcome import network_failure
    from ccswitch.net import http1
    busy = network_failure("a", http1.NoFreeConnection("busy"), "switch", "connect")
    assert busy.client_status == 504 and not busy.counts
    assert network_failure("a", ConnectionResetError(104, "reset"), "switch", "connect").reason == "connection reset"


def test_a_flow_comment_names_as_skipped_only_the_upstreams_not_tried():
    """Every upstream cooling: the first two are tried anyway; they were not skipped."""
    from ccswitch.dial.job import Attempt
    from tests.support.helpers import make_job, rules_for
    rules = rules_for(("a", "anthropic", "http://127.0.0.1:9"), ("b", "anthropic", "http://127.0.0.1:9"),
                      ("c", "anthropic", "http://127.0.0.1:9"))
    job = make_job(rules)
    job.skipped = [("a", "cooling down"), ("b", "cooling down"), ("c", "cooling down")]
    job.why_first = "recovers first"
    job.attempts = [Attempt("a", 401, "HTTP 401"), Attempt("b", 401, "HTTP 401")]
    comment = job.comment()
    assert comment.endswith("a first: recovers first; skipped c (cooling down)")
    assert "skipped a" not in comment and "b (cooling" not in comment


def test_a_long_retry_after_passed_on_tells_the_client_not_to_retry_unless_the_upstream_said_otherwise():
    sdk, codex = [("user-agent", "Anthropic/Python 0.75.0")], [("originator", "codex_exec")]
    long, short = [("retry-after", "120")], [("retry-after-ms", "30000")]
    assert limit_passed_on(long, sdk) == [("retry-after", "120"), ("x-should-retry", "false")]
    assert limit_passed_on(short, sdk) == short and limit_passed_on([], sdk) == []
    assert limit_passed_on([*long, ("X-Should-Retry", "true")], sdk) == [*long, ("X-Should-Retry", "true")]
    assert limit_passed_on(long, codex) == [] and limit_passed_on(short, codex) == short


def test_a_retry_after_of_exactly_the_worth_it_wait_is_passed_on_as_it_is():
    # a minute is worth waiting: neither Codex's header is dropped nor others told not to retry
    minute = [("retry-after", "60")]
    assert limit_passed_on(minute, [("user-agent", "Anthropic/Python 0.75.0")]) == minute
    assert limit_passed_on(minute, [("originator", "codex_exec")]) == minute


def test_only_a_tls_failure_of_the_rules_or_the_relays_certificate_tells_the_client_not_to_retry():
    import ssl

    from ccswitch.dial.outcome import network_failure

    def failure_of(reason=None, verify=None):
        exc = ssl.SSLCertVerificationError(1, "x") if verify else ssl.SSLError(1, "x")
        exc.reason, exc.verify_message = reason, verify
        return network_failure("a", exc, "switch", "connect")

    assert failure_of(verify="self-signed certificate").lasting
    plain = failure_of("WRONG_VERSION_NUMBER")
    assert plain.lasting and plain.reason.startswith("TLS error: wrong version number (an https:// base_url")
    record = failure_of("DECRYPTION_FAILED_OR_BAD_RECORD_MAC")      # a record spoilt on the way: worth a retry
    assert not record.lasting and record.reason == "TLS error: decryption failed or bad record mac"


def test_the_earlier_attempts_words_skip_the_last_ones_own_and_stay_short():
    from ccswitch.dial.job import Attempt
    from tests.support.helpers import make_job, rules_for
    job = make_job(rules_for(("a", "anthropic", "https://a.example")))
    job.attempts = [Attempt("a", error="connection refused"), Attempt("b", 529), Attempt("a", error="connection refused"),
                    Attempt("b", 529), Attempt("a", error="connection refused")]
    assert job.earlier_words() == "b: HTTP 529"          # not "a: connection refused" again beside the last's own
    job.attempts = [Attempt(f"relay-{n}", error="x" * 50) for n in range(40)]
    said = job.earlier_words()
    assert len(said) == 1000 and said.endswith("…") and said.startswith("relay-0: xx")


def test_only_a_connect_failure_says_it_in_its_own_words():
    # ccswitch's ConnectError text is its own; another exception's may quote what the upstream sent
    from ccswitch.dial.outcome import network_failure
    from ccswitch.net import http1
    assert network_failure("a", http1.ConnectError("what it met"), "switch", "connect").reason == "what it met"
    assert network_failure("a", http1.ConnectError(), "switch", "connect").reason == "ConnectError"
    assert network_failure("a", http1.ReadError("x-api-key: sk-abc"), "switch", "first_byte").reason == "ReadError"


def test_the_upstream_that_served_is_the_one_named_not_the_first_candidate():
    from ccswitch.dial.job import Attempt
    from tests.support.helpers import make_job, rules_for
    rules = rules_for(("a", "openai-chat", "http://127.0.0.1:9"), ("b", "anthropic", "http://127.0.0.1:9"),
                      routes={"chat": ["a", "b"]})
    job = make_job(rules, path="/v1/chat/completions", body={"model": "m", "messages": []})
    job.attempts = [Attempt("a", 529, "HTTP 529"), Attempt("b", 200)]
    job.upstream = "b"
    assert job.served_by().name == "b"
    assert f"{job.request.route} → anthropic" in job.comment()       # what b got was converted


def test_an_answer_that_is_no_http_1_1_says_what_was_wrong_with_it():
    from ccswitch.dial.outcome import network_failure
    from ccswitch.net import http1
    said = network_failure("a", http1.MalformedAnswer("the response head is over 64 KB"), "switch", "read")
    assert said.reason == "the response head is over 64 KB"
    assert network_failure("a", http1.MalformedAnswer(), "switch", "read").reason == "not an HTTP/1.1 answer"


def test_a_redirect_s_reason_names_where_it_pointed_cut_at_200_characters_and_one_pointing_nowhere_says_so():
    from ccswitch.dial.outcome import redirect_failure
    far = "https://elsewhere.example/" + "p" * 1000
    failure = redirect_failure("a", "https://relay.example", "https://relay.example/v1/messages", 302,
                               [("Location", far)], b"")
    assert far[:200] in failure.reason and far[:201] not in failure.reason and failure.client_status == 502
    nowhere = redirect_failure("a", "https://relay.example", "https://relay.example/v1/messages", 304, [], b"")
    assert nowhere.reason == "HTTP 304 without a location: no answer to pass on" and nowhere.lasting
