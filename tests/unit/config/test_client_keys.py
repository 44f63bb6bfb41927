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


def test_the_plain_list_form_expands_variables_as_the_mapping_form_does():
    rules = parse_rules("client_keys: ['${CK}', 'lit-$${CK}-0001', {name: m, key: '${CK2}'}]\n",
                        env={"CK": "from-env-0001", "CK2": "from-env-0002"})
    assert rules.client_key_texts() == ["from-env-0001", "lit-${CK}-0001", "from-env-0002"]
    assert [c.name for c in rules.client_keys] == ["key-1", "key-2", "m"]


@pytest.mark.parametrize(("text", "said"), [
    ("['${CK}']", "r.yaml: client_keys[0]: environment variable CK is not set (export it where ccswitch runs)"),
    ("[{name: m, key: '${CK}'}]", "r.yaml: client_keys[0].key: environment variable CK is not set (export it where "
                                  "ccswitch runs)"),
    ("[ok-key-0001, '${CK']", "r.yaml: client_keys[1]: malformed ${...} reference (use ${NAME}, or $${ for a "
                              "literal ${)"),
])
def test_an_unset_or_malformed_variable_in_either_form_is_a_problem(text, said):
    with pytest.raises(RulesError) as err:
        parse_rules(f"client_keys: {text}\n", source="r.yaml", env={})
    assert err.value.problems == [said]


def test_secret_texts_are_each_rules_objects_own_also_after_a_copy_with_changes():
    from ccswitch.config.load import parse_rules
    r = parse_rules("""
client_keys: [{name: a, key: ck-aaaaaaaaaaaaaaaa}]
upstreams: [{name: u, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: sk-uuuuuuuuuuuuuu}]
routes: {claude: [u]}
""")
    assert r.secret_texts() == ["sk-uuuuuuuuuuuuuu", "ck-aaaaaaaaaaaaaaaa"]
    copied = r.model_copy(update={"client_keys": ()})      # asked for right after: not the cached list
    assert copied.secret_texts() == ["sk-uuuuuuuuuuuuuu"] and r.secret_texts()[-1] == "ck-aaaaaaaaaaaaaaaa"
    r.secret_texts().clear()                                 # a caller's list is its own
    assert len(r.secret_texts()) == 2


def test_a_key_holding_slash_plus_or_equals_is_also_scrubbed_percent_encoded():
    """An upstream that quotes the key in a URL or a form field (`key=sk-a%2Fb…`) echoes it in
    that form; so may a client's key sent back in a query."""
    from ccswitch.config.load import parse_rules
    from ccswitch.wire.redact import scrub
    r = parse_rules("""
client_keys: [{name: a, key: "ck/aaaa+aaaa=="}]
upstreams: [{name: u, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: "sk-SLASH/SECRET+KEY/abc=="}]
routes: {claude: [u]}
""")
    [upstream] = r.upstreams
    assert upstream.secret_texts()[:3] == ["sk-SLASH/SECRET+KEY/abc==", "sk-SLASH%2FSECRET%2BKEY%2Fabc%3D%3D",
                                           "sk-SLASH%2fSECRET%2bKEY%2fabc%3d%3d"]
    echoed = b'{"error": "bad key sk-SLASH%2FSECRET%2BKEY%2Fabc%3D%3D in https://x/?key=ck%2faaaa%2baaaa%3d%3d"}'
    assert scrub(echoed, r.secret_texts()) == b'{"error": "bad key [redacted] in https://x/?key=[redacted]"}'
    assert r.scrub("model-sk-SLASH%2FSECRET%2BKEY%2Fabc%3D%3D") == "model-[redacted]"


@pytest.mark.parametrize("value", ["team-key-0001 ", " team-key-0001", "team-key-0001\n", "   "])
def test_a_key_no_client_could_present_is_refused_not_taken_to_let_nobody_in(value):
    # a client's key is read from its header stripped: a key padded by an env file would
    # validate and then answer every request 401
    with pytest.raises(RulesError) as err:
        parse_rules("client_keys: ['${TEAM_KEY}']\n", source="r.yaml", env={"TEAM_KEY": value})
    assert str(err.value).startswith("r.yaml: client_keys[0].key: ") and "must not" in str(err.value)
    assert "team-key" not in str(err.value)
