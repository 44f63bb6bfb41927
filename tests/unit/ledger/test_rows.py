"""Ledger rows from a finished job: no key text of any upstream or client gets stored."""

from ccswitch.dial.job import Attempt
from ccswitch.ledger.rows import attempt_rows, request_row
from tests.support.helpers import CLIENT_KEY, KEY_A, KEY_B
from tests.support.live_rows import finished, rules


def test_an_error_echoing_another_upstreams_key_is_stored_without_it():
    """b's error quotes a's key (a client pasted it into its prompt): a's key is scrubbed too, not
    only the key of the upstream that answered."""
    echoed = f"stream error: key {KEY_A} over quota (client sent {CLIENT_KEY}, b's own {KEY_B})"
    job = finished(rules(), Attempt(upstream="a", status=529, error="overloaded"),
                   Attempt(upstream="b", status=200, error=echoed))
    texts = [request_row(job)["error"]] + [row["error"] for row in attempt_rows(job)]
    assert texts[0] == texts[2] == "stream error: key [redacted] over quota (client sent [redacted], b's own [redacted])"
    assert texts[1] == "overloaded"


def test_a_row_without_an_error_keeps_none():
    job = finished(rules(), Attempt(upstream="a", status=200))
    assert request_row(job)["error"] is None and attempt_rows(job)[0]["error"] is None


def test_a_key_a_client_sent_as_its_model_or_session_is_not_stored():
    from ccswitch.clock import utc_now
    from ccswitch.ledger.rows import own_answer_row, without_keys
    r = rules()
    job = finished(r, Attempt(upstream="a", status=200), model=KEY_A)
    job.session = f"s-{CLIENT_KEY}"
    row = without_keys(request_row(job), r)
    assert (row["model"], row["upstream_model"], row["session"]) == ("[redacted]", "[redacted]", "s-[redacted]")
    refused = without_keys(own_answer_row(request_id="x", started_at=utc_now(), route="claude", endpoint="messages",
                                          model=KEY_B, stream=False, status=400, error="bad", latency_ms=1), r)
    assert refused["model"] == "[redacted]"
    plain = finished(r, Attempt(upstream="a", status=200), model="claude-haiku-4-5")
    assert without_keys(request_row(plain), r)["model"] == "claude-haiku-4-5"


def test_an_error_answer_s_own_message_is_kept_for_the_live_page_without_key_text():
    said = f"credit balance too low for {KEY_A}"
    job = finished(rules(), Attempt(upstream="a", status=400, error="HTTP 400", said=said),
                   Attempt(upstream="b", status=200))
    assert [row["said"] for row in attempt_rows(job)] == ["credit balance too low for [redacted]", None]
