"""Keys and header values are checked as HTTP will take them, when the rules load: a value the
HTTP library refuses later would have its refusal quote the value, a key, into logs and rows."""

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.config.values import RulesError

UPSTREAM = "upstreams: [{name: a, protocol: anthropic, base_url: 'http://x', api_key: '${KEY}', headers: {x-user: '${USER}'}}]"


@pytest.mark.parametrize(("key", "user", "said"), [
    ("sk-secret-0123456789 ", "me", "upstreams[a].api_key: must not begin or end with a space or tab"),
    ("sk-secret-0123456789", "\tme", "upstreams[a].headers.x-user: must not begin or end with a space or tab"),
    ("sk-secret\x7f0123456789", "me", "upstreams[a].api_key: must not contain control characters"),
])
def test_a_value_http_cannot_carry_is_refused_without_being_shown(key, user, said):
    with pytest.raises(RulesError) as err:
        parse_rules(UPSTREAM, env={"KEY": key, "USER": user})
    assert said in str(err.value) and "secret" not in str(err.value)


def test_spaces_and_tabs_inside_a_value_are_text():
    rules = parse_rules(UPSTREAM, env={"KEY": "sk-secret-0123456789", "USER": "me\tand you"})
    assert rules.upstreams[0].headers["x-user"] == "me\tand you"
