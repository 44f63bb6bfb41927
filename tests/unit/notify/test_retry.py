from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from ccswitch.notify.retry import RetryPolicy, delivered, worth_retrying


def test_what_counts_as_delivered_and_worth_another_try():
    assert delivered(200) and delivered(204) and not delivered(None) and not delivered(500)
    assert worth_retrying(None) and worth_retrying(500) and worth_retrying(503)
    assert worth_retrying(429) and worth_retrying(408)
    assert not worth_retrying(400) and not worth_retrying(404) and not worth_retrying(401)


def test_waits_double_until_the_attempts_are_used_up():
    policy = RetryPolicy(attempts=4, first_wait=1.0)
    assert [policy.wait_before(n, 500) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, None]
    assert [policy.wait_before(n, None) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_success_and_final_answers_stop_at_once():
    policy = RetryPolicy()
    assert policy.wait_before(1, 200) is None
    assert policy.wait_before(1, 404) is None


def test_a_429_retry_after_is_honoured_up_to_the_cap():
    policy = RetryPolicy(first_wait=1.0, max_wait=30.0)
    assert policy.wait_before(1, 429, [("retry-after", "7")]) == 7.0
    assert policy.wait_before(1, 429, [("Retry-After", "3600")]) == 30.0
    assert policy.wait_before(1, 429, [("retry-after", "300")]) == 30.0
    assert policy.wait_before(3, 429, [("retry-after", "1")]) == 4.0      # never shorter than the backoff
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15.0 <= policy.wait_before(1, 429, [("retry-after", when)]) <= 21.0
    assert policy.wait_before(1, 429, [("retry-after", "soon")]) == 1.0


def test_no_wait_exceeds_the_cap():
    policy = RetryPolicy(attempts=20, first_wait=1.0, max_wait=30.0)
    assert policy.wait_before(10, 503) == 30.0


def test_only_a_2xx_is_delivered_and_a_redirect_is_final():
    assert delivered(299) and not delivered(300) and not delivered(302) and not delivered(199)
    assert RetryPolicy().wait_before(1, 302) is None
