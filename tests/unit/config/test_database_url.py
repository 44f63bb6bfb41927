"""`usage_db:` in rules.yaml and `--db`: a SQLite path or a PostgreSQL URL whose password is never shown."""

from pathlib import Path

import pytest

from ccswitch.config.database_url import PostgresURL, parse_usage_db
from ccswitch.config.load import parse_rules
from ccswitch.config.values import RulesError


def test_a_postgresql_url_with_its_password_from_the_environment_is_kept_but_never_shown():
    rules = parse_rules("usage_db: postgresql://ccswitch:${PGPASS}@db.internal:5433/ledger?sslmode=require\n",
                        env={"PGPASS": "s3cret-pass"})
    url = rules.usage_db
    assert isinstance(url, PostgresURL)
    assert url.conninfo == "postgresql://ccswitch:s3cret-pass@db.internal:5433/ledger?sslmode=require"
    for shown in (str(url), repr(url), url.redacted, repr(rules), str(rules)):
        assert "s3cret-pass" not in shown
    assert url.redacted == "postgresql://ccswitch:***@db.internal:5433/ledger?sslmode=require"


@pytest.mark.parametrize("text, shown", [
    ("postgres://db.internal/ledger", "postgres://db.internal/ledger"),               # no password: as it is
    ("postgresql://me@db.internal/ledger", "postgresql://me@db.internal/ledger"),
    ("postgresql://me:p%40ss@db.internal/ledger", "postgresql://me:***@db.internal/ledger"),
    ("postgresql:///ledger?host=/run/postgresql&password=pw&application_name=x",
     "postgresql:///ledger?host=/run/postgresql&password=***&application_name=x"),
    ("postgresql://me@h/ledger?sslmode=verify-full&sslkey=/k.pem&sslpassword=TOPSECRET",   # the key's passphrase
     "postgresql://me@h/ledger?sslmode=verify-full&sslkey=/k.pem&sslpassword=***"),
])
def test_the_shown_form_has_no_password(text, shown):
    url = PostgresURL.parse(text)
    assert url.redacted == shown and "TOPSECRET" not in url.scrub(f"cannot connect to {text}")


def test_a_driver_message_is_scrubbed_of_the_password_however_it_is_spelled():
    url = PostgresURL.parse("postgresql://me:p%40ss@db.internal/ledger")
    assert url.scrub("auth failed for p@ss and p%40ss") == "auth failed for *** and ***"


def test_equal_urls_are_the_same_database_and_a_new_password_is_another():
    one, same, other = (PostgresURL.parse(f"postgresql://me:{pw}@h/db") for pw in ("a", "a", "b"))
    assert one == same and one != other


@pytest.mark.parametrize("text, problem", [
    ("postgresql://me:pw@db.internal:port/x", "the port must be a number from 1 to 65535"),
    ("postgresql://me:pw@db.internal:70000/x", "the port must be a number from 1 to 65535"),
    ("postgresql://me:pw@h1:5432,h2:5433/x", "one host per PostgreSQL URL"),
    ("postgresql://me:pw@db.internal:0/x", "the port must be a number from 1 to 65535"),
    ("postgresql://me:p#w@db.internal/x", "percent-encode"),
    ("postgresql://me:p w@db.internal/x", "must not contain spaces"),
    ("postgresql://me:p/w@db.internal:5432/x", "must be percent-encoded (%2F, %3F, %23)"),    # was "the port must be …"
    ("postgresql://me:p?w@db.internal:5432/x", "must be percent-encoded (%2F, %3F, %23)"),
    # libpq ends the password at the first '@': it dialled the host "w@db.internal", naming it
    ("postgresql://me:p@w@db.internal:5432/x", "must be percent-encoded (%40)"),
    ("", "must be a path or a postgresql:// URL"),
    # libpq refused these at every connection: an outage for ever, `ccswitch check` said OK
    ("postgresql://me:pw@db.internal/x?sslmode=bogus", "sslmode must be one of disable, allow, prefer, require"),
    ("postgresql://me:pw@db.internal/x?sslmod=require", 'invalid URI query parameter: "sslmod"'),
    ("postgresql://me@db.internal/x?password=pw%zz", "check their percent-encoding"),
    # an empty sslmode is no default to libpq: 'invalid sslmode value: ""' at every connection
    ("postgresql://me:pw@db.internal/x?sslmode=", "sslmode must be one of disable, allow, prefer, require"),
])
def test_a_bad_value_is_refused_without_echoing_it(text, problem):
    with pytest.raises(RulesError) as err:
        parse_rules(f"usage_db: '{text}'\n")
    assert problem in str(err.value) and not any(part in str(err.value) for part in ("pw", "p/w", "p?w", "w@db") if text)


def test_a_missing_variable_is_named():
    with pytest.raises(RulesError, match="usage_db: environment variable PGPASS is not set"):
        parse_rules("usage_db: postgresql://me:${PGPASS}@h/db\n", env={})


def test_anything_else_is_a_sqlite_path_as_before(tmp_path):
    assert parse_rules("usage_db: u.db\n", base_dir=tmp_path).usage_db == tmp_path / "u.db"
    assert parse_usage_db("~/x.db") == Path.home() / "x.db"
    assert parse_usage_db("postgresql://h/db") == PostgresURL.parse("postgresql://h/db")


@pytest.mark.parametrize("password", ["xx@TAILSECRET", "a:b@c/d?e", "p%40ss", "pass%41word", "pa%ss",
                                      "p@ss/w?rd#1%x:y", "plain-Pass_1"])
def test_a_password_from_the_environment_reaches_the_driver_whole_whatever_it_holds(password):
    """libpq ends the userinfo at the first `@`: a raw `@` in a password would send its tail as the
    host name, and the driver's messages would show it; it decodes `%41` as `A` and refuses `%ss`.
    The password goes over percent-encoded, and arrives as it was in the variable."""
    from psycopg.conninfo import conninfo_to_dict
    rules = parse_rules("usage_db: postgresql://ccswitch:${PPW}@127.0.0.1:15439/ledger\n", env={"PPW": password})
    parsed = conninfo_to_dict(rules.usage_db.conninfo)     # libpq's own parser
    assert (parsed["password"], parsed["host"], parsed["port"], parsed["user"], parsed["dbname"]) == \
        (password, "127.0.0.1", "15439", "ccswitch", "ledger")
    assert rules.usage_db.redacted == "postgresql://ccswitch:***@127.0.0.1:15439/ledger"
    assert rules.usage_db.scrub(f"password {password} refused") == "password *** refused"


def test_a_redis_password_from_the_environment_reaches_the_client_whole():
    from redis.connection import parse_url
    rules = parse_rules("state: redis://:${RPW}@127.0.0.1:16390/1\n", env={"RPW": "q@TAIL/x?y#z%41"})
    assert parse_url(rules.state.conninfo) == {"password": "q@TAIL/x?y#z%41", "host": "127.0.0.1", "port": 16390,
                                               "db": 1}
    assert "TAIL" not in rules.state.redacted


@pytest.mark.parametrize("text, problem", [
    ("postgresql+psycopg://ccs:SECRET-PW@127.0.0.1:5432/ccswitch", "not a postgresql+psycopg:// URL (SQLAlchemy"),
    ("pgsql://ccs:SECRET-PW@127.0.0.1/ccswitch", "not a pgsql:// URL"),
    ("sqlite:///var/lib/usage.db", "not a sqlite:// URL"),
    ("ccs:SECRET-PW@host://x", "not another kind of URL"),
    ("host=127.0.0.1 dbname=ccswitch user=ccs password=SECRET-PW", "write a libpq key=value string as"),
    ("password=SECRET-PW host=db", "libpq key=value"),
])
def test_another_databases_address_is_refused_not_taken_for_a_file_named_after_it(text, problem):
    """It would have made a local SQLite file under a directory named with the password, and
    logged that path."""
    with pytest.raises(RulesError) as caught:
        parse_rules(f"usage_db: {text!r}\n")
    assert problem in str(caught.value) and "SECRET-PW" not in str(caught.value)
    with pytest.raises(ValueError, match="takes a file path or a postgresql:// URL") as caught:
        parse_usage_db(text)                          # report --db
    assert "SECRET-PW" not in str(caught.value)


@pytest.mark.parametrize("path", ["usage.db", "/data/host=eu/usage.db", "~/ledgers/2026 usage.db", "a=b.db"])
def test_paths_that_merely_hold_an_equals_sign_or_a_blank_are_still_paths(path):
    assert isinstance(parse_usage_db(path), Path)


@pytest.mark.parametrize("text", [
    "postgresql://host/db?user=admin@myserver&password=pw",      # Azure's user@server
    "postgresql:///db?host=/run/postgresql&user=me@corp",
    "postgresql://me:12/34@db.internal:5432/x",                  # not this: a password all digits, cut at its '/'
    "postgresql://app:2024?Secret@db.example.com/app",           # nor these: cut at the '?', its port reading
    "postgresql://app:?Secret@db.example.com/app",
    "postgresql://us?er@host/db",
])
def test_an_at_sign_in_the_query_is_no_unencoded_credential_but_one_after_a_bare_word_is(text):
    if "admin@myserver" not in text and "me@corp" not in text:
        with pytest.raises(ValueError, match="must be percent-encoded"):
            PostgresURL.parse(text)
    else:
        assert PostgresURL.parse(text).conninfo == text
