"""client_keys: a presented key names one client, and a name one budget."""

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.config.values import RulesError


@pytest.mark.parametrize(("keys", "said"), [
    ("[{name: alice, key: '${ALICE}', budget: {daily: 1}}, {name: bob, key: '${BOB}'}]",
     "bob has the same key as alice"),
    ("[{name: alice, key: alice-key-0001}, {name: alice, key: alice-key-0002}]", "two keys are named 'alice'"),
    ("[{name: key-2, key: first-key-0001}, second-key-0002]", "two keys are named 'key-2'"),   # numbered by position
])
def test_a_key_or_a_name_given_twice_is_refused_without_showing_the_key(keys, said):
    with pytest.raises(RulesError) as err:
        parse_rules(f"client_keys: {keys}\n", env={"ALICE": "shared-key-0001", "BOB": "shared-key-0001"})
    assert said in str(err.value) and "key-000" not in str(err.value)
