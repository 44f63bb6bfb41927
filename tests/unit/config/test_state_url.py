"""`state:` in rules.yaml: a Redis URL whose password is never shown."""

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.config.state_url import RedisURL
from ccswitch.config.values import RulesError


def test_no_state_means_in_memory():
    assert parse_rules("").state is None


def test_a_redis_url_with_its_password_from_the_environment_is_kept_but_never_shown():
    rules = parse_rules("state: redis://:${REDIS_PASSWORD}@cache.internal:6380/2\n",
                        env={"REDIS_PASSWORD": "s3cret-pass"})
    assert rules.state.conninfo == "redis://:s3cret-pass@cache.internal:6380/2"
    assert rules.state.db == 2
    for shown in (str(rules.state), repr(rules.state), rules.state.redacted, repr(rules)):
        assert "s3cret-pass" not in shown
    assert rules.state.redacted == "redis://:***@cache.internal:6380/2"


def test_tls_and_a_user_and_the_default_database():
    url = RedisURL.parse("rediss://ccswitch:pw@cache.internal/")
    assert url.db == 0 and url.redacted == "rediss://ccswitch:***@cache.internal/"


@pytest.mark.parametrize("text, problem", [
    ("http://cache.internal:6379/0", "redis:// or rediss://"),
    ("redis://cache.internal:port/0", "the port must be a number from 1 to 65535"),
    ("redis://cache.internal:70000/0", "the port must be a number from 1 to 65535"),
    ("redis://cache.internal:0/0", "the port must be a number from 1 to 65535"),
    ("redis://cache.internal:6379/zero", "database number"),
    ("redis:///0", "names a host"),
    ("redis://:pa ss@cache.internal/0", "no spaces"),
    ("redis://:pa/ss@cache.internal:6379/0", "must be percent-encoded (%2F, %3F, %23)"),   # was "the port must be …"
    ("redis://u:pa?ss@cache.internal:6379/0", "must be percent-encoded (%2F, %3F, %23)"),
    ("redis://default:123?abc@cache.internal:6379/0", "must be percent-encoded (%2F, %3F, %23)"),
    ("redis://u:pa@ss@cache.internal:6379/0", "must be percent-encoded (%40)"),
    ("redis://default:?abc@cache.internal:6379/0", "must be percent-encoded (%2F, %3F, %23)"),
])
def test_what_is_not_a_usable_redis_url_is_refused_without_echoing_it(text, problem):
    with pytest.raises(RulesError) as err:
        parse_rules(f"state: '{text}'\n")
    assert problem in str(err.value) and not any(part in str(err.value) for part in ("pa ss", "pa/ss", "pa?ss", "ss@"))


def test_a_missing_variable_is_named():
    with pytest.raises(RulesError, match="REDIS_PASSWORD is not set"):
        parse_rules("state: redis://:${REDIS_PASSWORD}@h/0\n", env={})



@pytest.mark.parametrize("text", ["redis://h:6379/0?client_name=ops@team", "redis://me:p%2Fw@h:6379/0"])
def test_an_at_sign_in_the_query_or_an_encoded_password_is_no_unencoded_credential(text):
    assert parse_rules(f"state: '{text}'\n").state is not None


@pytest.mark.parametrize("query, problem", [
    # redis-py refused these at every connection: sharing never started (its task ended without
    # a word) or failed for ever with a traceback at each try
    ("socket_timeout=s3cret", "redis-py cannot read the value of the option `socket_timeout`"),
    ("foo=1", "`foo` is not an option redis-py takes"),
    ("ssl_cert_reqs=none", "`ssl_cert_reqs` is not an option redis-py takes"),     # TLS options want rediss://
    ("retry=3", "ccswitch sets `retry` itself"),
    ("db=3", "the database number goes in the path"),       # the channel is named after the path's
])
def test_a_query_option_redis_py_would_refuse_is_a_rules_problem_naming_the_option(query, problem):
    with pytest.raises(RulesError) as err:
        parse_rules(f"state: 'redis://:pw@cache.internal:6379/0?{query}'\n")
    assert problem in str(err.value) and "s3cret" not in str(err.value)


@pytest.mark.parametrize("text", ["redis://h:6379/0?socket_timeout=10&health_check_interval=30",
                                  "rediss://h:6380/0?ssl_cert_reqs=none", "redis://h:6379/0?"])
def test_query_options_redis_py_takes_are_kept(text):
    assert parse_rules(f"state: '{text}'\n").state.conninfo == text


@pytest.mark.parametrize("text", ["redis://${REDIS_PASSWORD}@cache.internal:6379/0",
                                  "rediss://${REDIS_PASSWORD}@cache.internal/"])
def test_a_password_whose_colon_was_forgotten_is_refused_not_shown_as_a_user_name(text):
    # only a password is masked where the URL is shown ("Redis at …"); Redis has no login
    # without one, so a user name alone is this slip
    with pytest.raises(RulesError) as err:
        parse_rules(f"state: '{text}'\n", env={"REDIS_PASSWORD": "s3cr3tPW"})
    assert "redis://:PASSWORD@host" in str(err.value) and "s3cr3tPW" not in str(err.value)
