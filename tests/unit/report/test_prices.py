"""Built-in prices, model-name matching, overrides and cost arithmetic."""
from __future__ import annotations

from datetime import date

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.report import prices
from ccswitch.report.prices import BUILTIN, PRICES_AS_OF, Price, cost, normalize, price_for


def test_as_of_is_a_date():
    assert date.fromisoformat(PRICES_AS_OF) >= date(2026, 1, 1)


@pytest.mark.parametrize("name", [k for k in BUILTIN if k.startswith("claude-") and k != "claude-3-haiku"])
def test_anthropic_cache_rates(name):
    p = BUILTIN[name]
    assert p.cache_write == pytest.approx(1.25 * p.input)        # 5-minute writes
    assert p.cache_write_1h == pytest.approx(2 * p.input)        # 1-hour writes
    assert 0 < p.cache_read <= 0.1 * p.input + 1e-9
    assert p.output > p.input


@pytest.mark.parametrize("name", [k for k in BUILTIN if not k.startswith("claude-")])
def test_openai_cache_rates(name):
    p = BUILTIN[name]
    assert p.cache_write == p.cache_write_1h == p.input          # writing OpenAI's cache costs plain input
    assert 0 < p.cache_read <= p.input and p.output > p.input


def test_well_known_list_prices():
    assert BUILTIN["claude-sonnet-4-5"] == Price(3, 15, 3.75, 6, 0.30)
    assert BUILTIN["claude-opus-4-1"] == Price(15, 75, 18.75, 30, 1.50)
    assert BUILTIN["claude-opus-4-5"] == Price(5, 25, 6.25, 10, 0.50)
    assert BUILTIN["claude-haiku-4-5"] == Price(1, 5, 1.25, 2, 0.10)
    assert BUILTIN["gpt-5"] == Price(1.25, 10, 1.25, 1.25, 0.125)
    assert BUILTIN["gpt-5-mini"] == Price(0.25, 2, 0.25, 0.25, 0.025)
    assert BUILTIN["gpt-4.1"] == Price(2, 8, 2, 2, 0.50)
    assert BUILTIN["gpt-4o"] == Price(2.50, 10, 2.50, 2.50, 1.25)
    assert BUILTIN["o3"] == Price(2, 8, 2, 2, 0.50)
    assert BUILTIN["o4-mini"].cache_read == 0.275


@pytest.mark.parametrize("model, key", [
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("claude-opus-4-20250514", "claude-opus-4"),
    ("claude-opus-4-1-20250805", "claude-opus-4-1"),
    ("Claude-Haiku-4-5-20251001", "claude-haiku-4-5"),
    ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
    ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
    ("claude-sonnet-4-5[1m]", "claude-sonnet-4-5"),
    ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
    ("gpt-5-2025-08-07", "gpt-5"),
    ("openai/gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
    ("codex-mini-latest", "codex-mini"),
    ("gpt-5-chat-latest", "gpt-5-chat"),
])
def test_names_normalize_to_table_keys(model, key):
    assert normalize(model) == key
    assert price_for(model) == BUILTIN[key]


@pytest.mark.parametrize("model, key", [
    ("gpt-5-codex-high", "gpt-5-codex"),               # a variant of a known model: longest prefix
    ("claude-opus-4-5-thinking", "claude-opus-4-5"),
    ("gpt-5.1-codex-max-xhigh", "gpt-5.1-codex-max"),
    ("claude-sonnet-4-5-20250929-thinking", "claude-sonnet-4-5"),     # a variant after a dated snapshot
])
def test_longest_safe_prefix(model, key):
    assert price_for(model) == BUILTIN[key]


@pytest.mark.parametrize("model", [
    "claude-opus-4-9",          # another version, not claude-opus-4
    "claude-sonnet-4-7",
    "gpt-5.9",                  # not gpt-5
    "o3-deep-research",         # another tier, not o3
    "gpt-4o-realtime-preview",
    "gpt-5-turbo",
    "claude-opus-4-5-20251101-fast",    # another tier after a dated snapshot
    "claude-sonnet-4-5-20250929-1",
    "claude-opus-4-9-thinking",         # a variant of another version: no date before it to pass over
    "mystery", "", None,
])
def test_unknown_models_have_no_price(model):
    assert price_for(model) is None
    assert cost(model, 1000, 1000) is None


def test_cost_arithmetic_with_1h_subset():
    # 1M each; of 1M cache writes, 400K were 1-hour writes
    usd = cost("claude-sonnet-4-5", 1_000_000, 1_000_000, 1_000_000, 400_000, 1_000_000)
    assert usd == pytest.approx(3 + 15 + 0.6 * 3.75 + 0.4 * 6 + 0.30)
    assert cost("claude-sonnet-4-5", cache_write=100, cache_write_1h=500) == pytest.approx(100 * 6 / 1e6)  # clamped
    assert cost("claude-sonnet-4-5") == 0.0


def test_cost_openai_and_multiplier():
    usd = cost("gpt-5-codex", input=10_000, output=500, cache_read=90_000)
    assert usd == pytest.approx((10_000 * 1.25 + 500 * 10 + 90_000 * 0.125) / 1e6)
    assert cost("gpt-5-codex", 10_000, 500, 0, 0, 90_000, multiplier=0.3) == pytest.approx(usd * 0.3)
    assert cost("gpt-5", 1_000_000, multiplier=0) == 0


def test_override_merges_over_builtin():
    over = {"claude-sonnet-4-5": {"cache_read": 0.2}}
    p = price_for("claude-sonnet-4-5-20250929", over)
    assert p == Price(3, 15, 3.75, 6, 0.2)
    assert BUILTIN["claude-sonnet-4-5"].cache_read == 0.30          # the table itself is untouched


def test_override_for_a_new_model_and_defaults():
    over = {"my-model": {"input": 2, "output": 8}}
    assert price_for("my-model", over) == Price(2, 8, 2, 2, 2)      # no cache discount assumed
    assert price_for("my-model-20260101", over) == Price(2, 8, 2, 2, 2)
    over = {"my-model": {"input": 2, "output": 8, "cache_write": 2.5, "cache_read": 0.2}}
    assert price_for("my-model", over) == Price(2, 8, 2.5, 2.5, 0.2)


def test_glob_overrides():
    over = {"mystery-*": {"input": 1, "output": 2}, "claude-*": {"input": 0, "output": 0}}
    assert price_for("mystery-1", over) == Price(1, 2, 1, 1, 1)
    assert price_for("claude-opus-4-9", over).input == 0                         # unknown: the glob applies
    assert price_for("gpt-9", {"gpt-*": {"input": 1, "output": 11}}).output == 11


def test_a_users_glob_reprices_listed_models_too_and_their_exact_entry_beats_it():
    """A glob the user wrote for a family was ignored for every model of the built-in list, so the
    docs' own example `"gpt-5.4-*": {cache_read: 0.2}` changed nothing for gpt-5.4-mini."""
    listed = BUILTIN["claude-sonnet-4-5"]
    over = {"claude-*": {"input": 100}}
    assert price_for("claude-sonnet-4-5", over) == Price(100, listed.output, listed.cache_write,
                                                         listed.cache_write_1h, listed.cache_read)
    assert price_for("gpt-5.4-mini", {"gpt-5.4-*": {"cache_read": 0.2}}).cache_read == 0.2
    assert price_for("gpt-5.4-mini-2026-03-05", {"gpt-5.4-*": {"cache_read": 0.2}}).cache_read == 0.2
    assert price_for("gpt-5", {"gpt-*": {"output": 11}}).output == 11
    both = {"claude-*": {"input": 100}, "claude-sonnet-4-5": {"input": 7}, "claude-sonnet-*": {"input": 50}}
    assert price_for("claude-sonnet-4-5", both).input == 7                      # the exact entry first
    assert price_for("claude-sonnet-4", both).input == 50                       # then the longest glob
    assert price_for("claude-sonnet-4-5", {}) == listed


def test_override_key_may_be_dated_or_mixed_case():
    over = {"Claude-Opus-4-5-20251101": {"output": 20}}
    assert price_for("claude-opus-4-5", over).output == 20


def test_override_on_family_prefix_loses_to_longer_builtin():
    over = {"gpt-5": {"input": 9}}
    assert price_for("gpt-5-codex-high", over) == BUILTIN["gpt-5-codex"]
    assert price_for("gpt-5-foo", over).input == 9


def test_rules_prices_feed_cost():
    rules = parse_rules("prices: {claude-sonnet-4-5: {input: 2, cache_write_1h: 5}, new-x: {input: 1, output: 3}}\n")
    assert cost("claude-sonnet-4-5", 1_000_000, 0, 1_000_000, 1_000_000, 0, overrides=rules.prices) == \
        pytest.approx(2 + 5)
    assert cost("new-x", 1_000_000, 1_000_000, overrides=rules.prices) == pytest.approx(4)


def test_price_table_includes_overrides():
    table = prices.price_table({"x-1": {"input": 1, "output": 1}, "y-*": {"input": 5}})
    assert table["x-1"] == Price(1, 1, 1, 1, 1) and "y-*" not in table
    assert set(BUILTIN) <= set(table)
