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


@pytest.mark.parametrize("value", ["*sk-ant-SECRET-abc", "!sk-ant-SECRET-abc"])
def test_an_unquoted_key_yaml_reads_as_an_alias_or_a_tag_is_not_quoted_back(value):
    """YAML takes `*…` for an alias and `!…` for a tag and quotes it in its message: no message
    ever contains a key."""
    text = f"upstreams:\n  - name: a\n    protocol: anthropic\n    base_url: https://x.example\n    api_key: {value}\n"
    with pytest.raises(RulesError) as refused:
        parse_rules(text)
    said = str(refused.value)
    assert "SECRET" not in said and "needs quotes" in said and "line 5" in said


@pytest.mark.parametrize(("text", "where", "char"), [
    ("# a bell \x07 here\nupstreams: []\n", "line 1, column 10", "#x0007"),
    ("upstreams: []\n# \ufffe\n", "line 2, column 3", "#xfffe"),
])
def test_a_character_yaml_does_not_allow_is_named_where_it_is_not_a_traceback(text, where, char):
    # its reader refused it before the loader's own error handling: check and reloads printed a traceback
    with pytest.raises(RulesError) as caught:
        parse_rules(text)
    assert str(caught.value) == f"<rules>: {where}: a character YAML does not allow ({char}, unseen in most " \
                                "editors): delete it"


def _laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\nupstreams: []\n"


def test_aliases_nested_in_aliases_are_refused_before_they_multiply():
    """A "billion laughs": nine levels of nine aliases, 387 million values once expanded. It
    stalled a load (and a reload, the proxy with it) for minutes; it is refused at once."""
    with pytest.raises(RulesError, match="more than 100,000 values once their aliases"):
        parse_rules(_laughs(9))


def test_aliases_that_share_a_few_values_load():
    shared = "upstreams: [&a {name: a, protocol: anthropic, base_url: 'http://x', api_key: k-0123456789}, " \
             "{<<: *a, name: b}]\n"
    assert [u.name for u in parse_rules(shared).upstreams] == ["a", "b"]
    with pytest.raises(RulesError) as refused:               # 7,381 values: loaded, then judged
        parse_rules(_laughs(4))
    assert "unknown key" in str(refused.value) and "aliases" not in str(refused.value)


def test_a_loop_of_links_in_a_folder_on_the_way_is_named_without_following_it(tmp_path):
    import errno
    from pathlib import Path

    from ccswitch.config.load import unreadable
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    path = Path(tmp_path / "a" / "rules.yaml")
    said = unreadable(path, OSError(errno.ELOOP, "Too many levels of symbolic links"))
    assert said == f"{path}: is a link in a loop of links"


def _values(total: int) -> str:
    """Rules holding `total` values once expanded, each mapping, list, key and scalar one: 16 around
    the items of `b`, ten for each alias of `a` (a list of nine), one for each scalar beside them."""
    aliases, scalars = divmod(total - 16, 10)
    return "a: &a [x, x, x, x, x, x, x, x, x]\nb: [" + ", ".join(["*a"] * aliases + ["x"] * scalars) \
        + "]\nupstreams: []\n"


def test_100_000_values_once_expanded_load_and_one_more_is_refused():
    with pytest.raises(RulesError) as loaded:
        parse_rules(_values(100_000))
    assert str(loaded.value) == "<rules>: a: unknown key\n<rules>: b: unknown key"      # loaded, then judged
    with pytest.raises(RulesError, match="more than 100,000 values once their aliases"):
        parse_rules(_values(100_001))
