"""What YAML can throw at the rules loader: every problem is a RulesError naming it (the watcher
logs it and keeps the last good rules), and a date-like value is text."""

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.config.values import RulesError

UPSTREAM = "upstreams: [{name: a, protocol: anthropic, base_url: 'http://x', api_key: k-0123456789, headers: {%s}}]\n"


@pytest.mark.parametrize(("text", "said"), [
    ("a: !!int abc\n", "invalid YAML value"),
    ("a: !!timestamp 2025-02-30\n", "invalid YAML value"),
    ("x: &x [*x]\n", "an alias refers to itself"),
    ("x: &x {a: *x}\n", "an alias refers to itself"),
])
def test_a_value_yaml_cannot_build_is_a_rules_error(text, said):
    with pytest.raises(RulesError, match=said):
        parse_rules(text)


def test_a_date_like_header_value_is_text():
    rules = parse_rules(UPSTREAM % "anthropic-version: 2023-06-01, x-date: 2025-02-30")
    assert rules.upstreams[0].headers == {"anthropic-version": "2023-06-01", "x-date": "2025-02-30"}
