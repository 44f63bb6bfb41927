"""Every count and number in rules.yaml is a YAML number: `true` is not 1, `'4'` is not 4 (as
`enabled: 1` is not true), and a number is finite. Durations stay text on purpose (`30s`, `'90'`)."""
from __future__ import annotations

import pytest

from ccswitch.config.load import parse_rules
from ccswitch.config.values import RulesError

UPSTREAM = "{name: a, protocol: anthropic, base_url: 'https://a.example', api_key: k, %s}"
CLIENT_KEY = "[{name: c, key: ck, budget: {%s}}]"

# (the rules' text with VALUE where the number goes, the field's path in a message, its kind)
FIELDS = [
    ("failover: {threshold: VALUE}", "failover.threshold", "int"),
    ("failover: {max_attempts: VALUE}", "failover.max_attempts", "int"),
    ("failover: {drain_at: VALUE}", "failover.drain_at", "float"),
    ("activation: {retries: VALUE}", "activation.retries", "int"),
    (f"upstreams: [{UPSTREAM % 'price_multiplier: VALUE'}]", "upstreams[a].price_multiplier", "float"),
    (f"upstreams: [{UPSTREAM % 'weight: VALUE'}]", "upstreams[a].weight", "float"),
    (f"upstreams: [{UPSTREAM % 'max_connections: VALUE'}]", "upstreams[a].max_connections", "int"),
    (f"upstreams: [{UPSTREAM % 'cache_breakpoints: VALUE'}]", "upstreams[a].cache_breakpoints", "int"),
    (f"upstreams: [{UPSTREAM % 'budget: {daily: VALUE}'}]", "upstreams[a].budget.daily", "float"),
    (f"upstreams: [{UPSTREAM % 'budget: {monthly: VALUE}'}]", "upstreams[a].budget.monthly", "float"),
    (f"client_keys: {CLIENT_KEY % 'daily: VALUE'}", "client_keys[0].budget.daily", "float"),
    ("prices: {m: {input: VALUE}}", "prices.m.input", "float"),
    ("max_tokens: {m: VALUE}", "max_tokens.m", "int"),
    (f"upstreams: [{UPSTREAM % 'hours: [{start_minute: VALUE, end_minute: 60}]'}]",
     "upstreams[a].hours[0].start_minute", "int"),
]
MESSAGE = {"int": "must be an integer", "float": "must be a number"}


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "r.yaml", env={})
    return caught.value.problems


@pytest.mark.parametrize("text,path,kind", FIELDS)
@pytest.mark.parametrize("value", ["true", "false", "'4'", '"1"'])
def test_a_boolean_or_quoted_number_is_no_number(text, path, kind, value):
    assert problems(text.replace("VALUE", value)) == [f"r.yaml: {path}: {MESSAGE[kind]}"]


@pytest.mark.parametrize("text,path,kind", FIELDS)
def test_a_plain_number_still_works(text, path, kind):
    rules = parse_rules(text.replace("VALUE", "1"), "r.yaml", env={})
    assert rules is not None


@pytest.mark.parametrize("text,path,kind", [f for f in FIELDS if f[2] == "float"])
@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_a_number_is_finite(text, path, kind, value):
    assert problems(text.replace("VALUE", value)) == [f"r.yaml: {path}: must be a finite number"]


def test_a_count_is_a_whole_number():
    assert problems(f"upstreams: [{UPSTREAM % 'max_connections: 4.0'}]") == [
        "r.yaml: upstreams[a].max_connections: must be an integer"]


def test_cache_breakpoints_false_no_longer_strips_every_marker():
    assert problems(f"upstreams: [{UPSTREAM % 'cache_breakpoints: false, max_connections: true'}]") == [
        "r.yaml: upstreams[a].max_connections: must be an integer",
        "r.yaml: upstreams[a].cache_breakpoints: must be an integer"]


def test_version_is_the_number_1():
    assert problems("version: true") == ["r.yaml: version: must be 1"]
    assert parse_rules("version: 1", "r.yaml", env={}).version == 1


@pytest.mark.parametrize("value,seconds", [("1h", 3600.0), ("30s", 30.0), ("'90'", 90.0), ("90", 90.0), ("1.5", 1.5)])
def test_durations_stay_text_or_numbers(value, seconds):
    assert parse_rules(f"failover: {{cooldown: {value}}}", "r.yaml", env={}).failover.cooldown == seconds


def test_a_duration_is_no_boolean():
    assert problems("failover: {cooldown: true}") == [
        "r.yaml: failover.cooldown: duration must be a number of seconds or like 500ms, 30s, 10m, 2h"]


def test_an_empty_budget_is_refused_not_taken_for_one_that_limits_nothing():
    assert sorted(problems(f"upstreams: [{UPSTREAM % 'budget: {}'}]\nclient_keys: {CLIENT_KEY % ''}")) == [
        "r.yaml: client_keys[0].budget: a budget needs daily, monthly or both",
        "r.yaml: upstreams[a].budget: a budget needs daily, monthly or both"]


@pytest.mark.parametrize(("text", "path"), [
    ("failover: {drain_at: 0}", "failover.drain_at"),          # every upstream with a window would be full
    (f"upstreams: [{UPSTREAM % 'weight: 0'}]", "upstreams[a].weight"),
])
def test_zero_is_refused_where_it_means_nothing_useful(text, path):
    [problem] = problems(text)
    assert problem.startswith(f"r.yaml: {path}: ") and "greater than 0" in problem


def test_no_retries_is_a_setting_of_its_own():
    assert parse_rules("activation: {retries: 0}", "r.yaml", env={}).activation.retries == 0
