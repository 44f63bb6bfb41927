"""ccswitch.rules: parsing, validation, field paths, ${VAR}, secrets, model mapping."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from ccswitch.config.load import (
    default_rules_text,
    example_rules_text,
    find_rules,
    load_rules,
    parse_rules,
    resolve_rules_path,
    rules_origin,
)
from ccswitch.config.models import (
    DEFAULT_ON_STATUS,
    ROUTE_PROTOCOLS,
    Failover,
    HourWindow,
    Routes,
    Rules,
    Timeouts,
    Upstream,
)
from ccswitch.config.values import RulesError, parse_duration
from tests.support import REPO

SECRET = "fake-test-VERY-SECRET-0123456789"


def parse(text: str, env: dict | None = None, **kw) -> Rules:
    return parse_rules(textwrap.dedent(text), source="r.yaml", env=env or {}, **kw)


def problems(text: str, env: dict | None = None, **kw) -> list[str]:
    with pytest.raises(RulesError) as exc:
        parse(text, env, **kw)
    assert str(exc.value) == "\n".join(exc.value.problems)
    return exc.value.problems


def relay(name="relay", protocol="anthropic", extra="", key=f"api_key: {SECRET}"):
    base = "https://relay.example.com" + ("" if protocol == "anthropic" else "/v1")
    return (f"  - name: {name}\n    protocol: {protocol}\n    base_url: {base}\n"
            f"    {key}\n" + "".join(f"    {line}\n" for line in extra.splitlines() if line))


# ----------------------------------------------------------------------------- durations

@pytest.mark.parametrize("value,seconds", [
    ("500ms", 0.5), ("30s", 30.0), ("10m", 600.0), ("2h", 7200.0), (5, 5.0), (2.5, 2.5),
    ("45", 45.0), ("1.5s", 1.5), (" 3m ", 180.0), ("0", 0.0), (0, 0.0), ("250 ms", 0.25)])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize("value", ["-1s", -1, -0.5, "10x", "", "s", "1d", "ten", None, True, [1], "1h30m"])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value", [float("inf"), 1e300, 1e12, "8785h", 366 * 86400 + 1])
def test_a_duration_past_a_year_is_refused_not_a_crash_at_the_first_cooldown(value):
    # `cooldown: .inf` passed `check`, then every request of its route got a 500 (OverflowError
    # at the first cooldown), and a reload to a sane value kept the endless one
    with pytest.raises(ValueError, match="at most a year"):
        parse_duration(value)
    assert parse_duration("8784h") == parse_duration(366 * 86400) == 366 * 86400.0
    problems = str(excinfo(lambda: parse(f"failover: {{cooldown: {value!r}}}\n".replace("'", '"').replace("inf", ".inf"))))
    assert "failover.cooldown" in problems and "at most a year" in problems


def excinfo(call):
    try:
        call()
    except Exception as exc:     # the loader's RulesError, naming the field
        return exc
    raise AssertionError("the rules were taken")


# ----------------------------------------------------------------------------- defaults

def test_empty_file_is_all_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for text in ("", "# only a comment\n", "version: 1\n"):
        r = parse(text)
        assert r.version == 1 and r.timezone is None and r.client_keys == ()
        assert r.intercept == ("api.anthropic.com", "api.openai.com", "chatgpt.com")
        assert r.upstreams == () and r.routes == Routes() and r.prices == {}
        assert r.usage_db == tmp_path / ".ccswitch" / "usage.db"
        assert r.failover == Failover() and r.timeouts == Timeouts()
        assert r.source is None


def test_failover_and_timeout_defaults():
    f, t = Failover(), Timeouts()
    assert (f.threshold, f.cooldown, f.max_attempts, f.hold_back) == (3, 600.0, 4, 2.0)
    assert (f.on_network_error, f.retry_backoff) == ("switch", 1.0)
    assert f.on_status == {"400": "pass", "401": "switch", "403": "switch", "408": "retry",
                           "429": "switch", "4xx": "pass", "5xx": "switch"}
    assert (t.connect, t.first_byte, t.total, t.idle) == (10.0, 60.0, 600.0, 300.0)


def test_durations_in_failover_and_timeouts():
    r = parse("""
        failover: {cooldown: 2h, hold_back: 500ms, retry_backoff: 3, threshold: 5, max_attempts: 2}
        timeouts: {connect: 1.5s, first_byte: "90", total: 10m, idle: 45s}
        """)
    assert (r.failover.cooldown, r.failover.hold_back, r.failover.retry_backoff) == (7200.0, 0.5, 3.0)
    assert (r.failover.threshold, r.failover.max_attempts) == (5, 2)
    assert (r.timeouts.connect, r.timeouts.first_byte, r.timeouts.total, r.timeouts.idle) == (1.5, 90.0, 600.0, 45.0)


STATUS_KEY = ('status key must be a code 300-599 or a class "3xx".."5xx" (a 2xx answer is a success, '
              'never judged by these rules)')


def test_on_status_merges_over_defaults_and_action_for():
    r = parse("""
        failover:
          on_status: {"500": retry, 404: switch, "4XX": switch, "3xx": switch}
        """)
    f = r.failover
    assert f.on_status["400"] == "pass" and f.on_status["429"] == "switch"  # defaults kept
    assert f.on_status["4xx"] == "switch" and f.on_status["404"] == "switch"
    assert f.action_for(500) == "retry"       # exact code beats class
    assert f.action_for(503) == "switch"      # class
    assert f.action_for(400) == "pass"        # default exact beats user class
    assert f.action_for(418) == "switch"      # user class
    assert f.action_for(408) == "retry"
    assert f.action_for(302) == "switch"      # user entry for 3xx
    assert Failover().action_for(200) == "pass" and Failover().action_for(302) == "pass"
    assert Failover().action_for(529) == "switch" and Failover().action_for(422) == "pass"
    assert Failover().action_for(101) == "pass"


# ----------------------------------------------------------------------------- errors & paths

def test_unknown_keys_everywhere_with_paths():
    p = problems("""
        verison: 1
        failover: {hold_bak: 2s}
        timeouts: {conect: 1s}
        upstreams:
          - {name: a, protocol: anthropic, base_url: "https://x.example", api_key: k, colour: red}
        routes: {claude: [a], other: []}
        """)
    assert "r.yaml: verison: unknown key (did you mean 'version'?)" in p
    assert "r.yaml: failover.hold_bak: unknown key (did you mean 'hold_back'?)" in p
    assert "r.yaml: timeouts.conect: unknown key (did you mean 'connect'?)" in p
    assert "r.yaml: upstreams[a].colour: unknown key" in p
    assert "r.yaml: routes.other: unknown key" in p
    assert len(p) == 5


def test_key_from_another_section():
    assert problems("hours: ['09:00-18:00']\n") == ["r.yaml: hours: unknown key here (it belongs to another section)"]


def test_a_hint_names_only_a_key_valid_where_the_misspelt_one_was_typed():
    p = problems("""
        budgets: {}
        upstreams:
          - {name: a, protocol: anthropic, base_url: "https://x.example", api_key: k, cooldwn: 5, wieght: 2}
        routes: {claude: [a]}
        """)
    assert p == ["r.yaml: upstreams[a].cooldwn: unknown key ('cooldown', a key of another section, is not valid "
                 "here either)",
                 "r.yaml: upstreams[a].wieght: unknown key (did you mean 'weight'?)",
                 "r.yaml: budgets: unknown key ('budget', a key of another section, is not valid here either)"]


def test_a_hint_is_found_in_every_section_by_the_key_s_path():
    p = problems("""
        client_keys: [{name: x, key: abcdefgh12345678, budgt: {daily: 1}}]
        upstreams:
          - {name: a, protocol: anthropic, base_url: "https://x.example", api_key: k, budget: {daly: 2}}
        routes: {claude: {upstreams: [a], stratgy: priority}}
        notify: [{url: 'https://hooks.example/x', timout: 5}]
        """)
    assert sorted(p) == ["r.yaml: client_keys[0].budgt: unknown key (did you mean 'budget'?)",
                         "r.yaml: notify[0].timout: unknown key (did you mean 'timeout'?)",
                         "r.yaml: routes.claude.stratgy: unknown key (did you mean 'strategy'?)",
                         "r.yaml: upstreams[a].budget.daly: unknown key (did you mean 'daily'?)"]


def test_source_key_is_not_accepted_from_yaml():
    assert problems("source: /etc/passwd\n") == ["r.yaml: source: unknown key"]


def test_no_hint_names_the_source_key_it_refuses():
    assert problems("sourc: /etc/passwd\n") == ["r.yaml: sourc: unknown key"]


def test_a_key_of_another_section_close_to_one_of_this_section_is_hinted_as_this_section_s():
    p = problems("""
        websocket: true
        upstreams:
          - {name: a, protocol: openai-responses, base_url: "https://x.example", api_key: k, codex_websocket: true}
        routes: {codex: [a]}
        notify: [{url: 'https://hooks.example/x', timeouts: 5}]
        """)
    assert sorted(p) == ["r.yaml: notify[0].timeouts: unknown key (did you mean 'timeout'?)",
                         "r.yaml: upstreams[a].codex_websocket: unknown key (did you mean 'websocket'?)",
                         "r.yaml: websocket: unknown key (did you mean 'codex_websocket'?)"]


def test_yaml_syntax_error_has_line_and_column():
    p = problems("version: 1\nupstreams:\n  - name: a\n   protocol: [\n")
    assert len(p) == 1
    assert re.match(r"^r\.yaml: line \d+, column \d+: ", p[0]), p


def test_a_yaml_error_found_at_the_end_also_names_where_the_broken_part_starts():
    p = problems('upstreams:\n  - name: a\n    base_url: "https://x.example\nroutes:\n  claude: [a]\n\n')
    assert p == ["r.yaml: line 7, column 1: while scanning a quoted scalar found unexpected end of stream "
                 "(it starts at line 3, column 15)"]


def test_a_yaml_error_on_the_line_its_broken_part_starts_names_no_other_start():
    assert problems("version: 1\nupstreams: [1, 2}\n") == [
        "r.yaml: line 2, column 17: while parsing a flow sequence expected ',' or ']', but got '}'"]


def test_yaml_error_never_echoes_the_line():
    p = problems(f"upstreams:\n  - api_key: {SECRET}\n   bad: [\n")
    assert SECRET not in "\n".join(p)


def test_top_level_must_be_mapping():
    assert problems("- a\n- b\n") == ["r.yaml: the rules must be a mapping (key: value lines)"]


def test_duplicate_keys_reported():
    p = problems("version: 1\ntimezone: UTC\ntimezone: Europe/Berlin\n")
    assert p == ["r.yaml: line 3: duplicate key 'timezone'"]


def test_bad_types_and_values_paths():
    p = problems("""
        version: 2
        timezone: Mars/Olympus_Mons
        client_keys: "just-one"
        intercept: ["https://api.anthropic.com/", "*.anthropic.com"]
        failover:
          threshold: 0
          max_attempts: many
          cooldown: -5
          on_status: {600: pass, "6xx": pass, "4xx": maybe, abc: pass, "2xx": switch, 200: switch}
          on_network_error: explode
        timeouts: {connect: 0, idle: 5x}
        routes: {claude: official}
        prices: {m: {input: 3, outptu: 4, output: -1}}
        """)
    expect = [
        "r.yaml: version: must be 1",
        "r.yaml: timezone: unknown time zone 'Mars/Olympus_Mons' (use an IANA name like Europe/Berlin)",
        "r.yaml: client_keys: must be a list",
        "r.yaml: intercept[0]: must be a host name like api.anthropic.com",
        "r.yaml: intercept[1]: must be a host name like api.anthropic.com; wildcards are not supported, list each host",
        "r.yaml: failover.threshold: must be greater than or equal to 1",
        "r.yaml: failover.max_attempts: must be an integer",
        "r.yaml: failover.cooldown: duration must not be negative",
        f'r.yaml: failover.on_status.600: {STATUS_KEY}',
        f'r.yaml: failover.on_status.6xx: {STATUS_KEY}',
        "r.yaml: failover.on_status.4xx: 'maybe' is not one of 'switch', 'retry' or 'pass'",
        f'r.yaml: failover.on_status.abc: {STATUS_KEY}',
        f'r.yaml: failover.on_status.2xx: {STATUS_KEY}',
        f'r.yaml: failover.on_status.200: {STATUS_KEY}',
        "r.yaml: failover.on_network_error: must be 'switch' or 'retry'",
        "r.yaml: timeouts.connect: must be greater than 0",
        "r.yaml: timeouts.idle: duration must be a number of seconds or like 500ms, 30s, 10m, 2h",
        "r.yaml: routes.claude: must be a list of upstream names, or a mapping with upstreams, strategy and sticky",
        "r.yaml: prices.m.outptu: must be 'input', 'output', 'cache_write', 'cache_write_1h' or 'cache_read'",
        "r.yaml: prices.m.output: must be greater than or equal to 0",
    ]
    assert sorted(p) == sorted(expect)


def test_upstream_field_errors_paths():
    # "bad name" is not a usable name, so the upstream is named by its position
    p = problems("upstreams:\n" + relay("ok") + """\
  - name: "bad name"
    protocol: gemini
    base_url: ftp://x.example
    api_key: k
    auth: cookie
    enabled: maybe
    days: [mon, funday]
    hours: ["25:00-18:00", "09:00-09:00", "nine"]
    models: [a]
    only_models: "claude-*"
    headers: {"bad header": x, "x-ok": "a\\nb"}
    activate_at: ["7:5", "24:00"]
    price_multiplier: -1
""")
    expect = {
        "upstreams[1].name": "may contain only letters, digits, '.', '_', '-'",
        "upstreams[1].protocol": "'gemini' is not one of 'anthropic', 'openai-responses' or 'openai-chat'",
        "upstreams[1].base_url": "must be 'original' or an http(s) URL like https://host[:port][/prefix]",
        "upstreams[1].auth": "'cookie' is not one of 'x-api-key', 'bearer' or 'client'",
        "upstreams[1].enabled": "must be true or false",
        "upstreams[1].days": "unknown weekday 'funday' (use mon..sun, or a range like mon-fri)",
        "upstreams[1].hours[0]": "hours window '25:00-18:00': time must be HH:MM between 00:00 and 23:59",
        "upstreams[1].hours[1]": "hours window start and end must differ",
        "upstreams[1].hours[2]": "hours window 'nine': must look like \"09:00-18:00\": one start, one end",
        "upstreams[1].models": "must be a mapping",
        "upstreams[1].only_models": "must be a list, even of one: [\"claude-*\"]",
        "upstreams[1].headers.bad header": "invalid header name",
        "upstreams[1].headers.x-ok": "header value must not contain line breaks",
        "upstreams[1].activate_at[0]": "time must be HH:MM between 00:00 and 23:59",
        "upstreams[1].activate_at[1]": "time must be HH:MM between 00:00 and 23:59",
        "upstreams[1].price_multiplier": "must be greater than or equal to 0",
    }
    assert sorted(p) == sorted(f"r.yaml: {k}: {v}" for k, v in expect.items())


def test_missing_required_upstream_fields():
    p = problems("upstreams:\n  - {name: a}\n")
    assert sorted(p) == ["r.yaml: upstreams[a].base_url: required", "r.yaml: upstreams[a].protocol: required"]
    p = problems("upstreams:\n  - {protocol: anthropic, base_url: 'https://x.example', api_key: k}\n")
    assert p == ["r.yaml: upstreams[0].name: required"]


def test_websocket_is_only_for_responses_upstreams():
    rules = parse("upstreams:\n" + relay("ws", "openai-responses", "websocket: true") + relay("plain", "openai-responses"))
    assert rules.upstream("ws").websocket is True and rules.upstream("plain").websocket is False
    for protocol in ("anthropic", "openai-chat"):
        assert problems("upstreams:\n" + relay("ws", protocol, "websocket: true")) == [
            f"r.yaml: upstreams[ws]: websocket: true needs protocol openai-responses (only the Responses API "
            f"has a WebSocket), not {protocol}"]
    assert problems("upstreams:\n" + relay("ws", "openai-responses", "websocket: maybe")) == [
        "r.yaml: upstreams[ws].websocket: must be true or false"]


@pytest.mark.parametrize("word", ["no", "off", "yes", "on", "0", "1", "'false'"])
def test_a_switch_is_true_or_false_only_as_the_docs_say(word):
    # `no` is text in YAML 1.2: read as false by one check and as set by another, it would
    # leave an upstream both disabled and asked for its ${VAR}
    for field in ("enabled", "websocket"):
        assert problems("upstreams:\n" + relay("a", "openai-responses", f"{field}: {word}")) == [
            f"r.yaml: upstreams[a].{field}: must be true or false"]


@pytest.mark.parametrize("url,ok", [
    ("https://relay.example.com", "https://relay.example.com"),
    ("https://relay.example.com/openai/v1/", "https://relay.example.com/openai/v1"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("https://[::1]:8443/x", "https://[::1]:8443/x"),
    ("relay.example.com", None), ("https://", None), ("https://x.example:99999", None),
    ("https://x.example/?a=1", None), ("https://x.example/#f", None), ("ws://x.example", None),
    ("https://user:pw@x.example", None), ("https://relay..example.com", None), (f"https://{'a' * 64}.example", None),
])
def test_base_url(url, ok):
    text = f"upstreams:\n  - {{name: a, protocol: openai-chat, base_url: '{url}', api_key: k}}\n"
    if ok:
        assert parse(text).upstreams[0].base_url == ok
    else:
        p = problems(text)
        assert len(p) == 1 and p[0].startswith("r.yaml: upstreams[a].base_url: ")
        assert "pw" not in p[0]


# ----------------------------------------------------------------------------- cross checks

def test_unique_upstream_names():
    p = problems("upstreams:\n" + relay("a") + relay("b") + relay("a"))
    # a shared name identifies neither upstream: both are named by position
    assert p == ["r.yaml: upstreams[2].name: duplicate upstream name 'a' (also upstreams[0]): "
                 "give each upstream its own name"]


def test_route_unknown_upstream_and_duplicates():
    p = problems("upstreams:\n" + relay("a") + "routes:\n  claude: [a, ghost, a]\n")
    assert p == ["r.yaml: routes.claude[1]: unknown upstream 'ghost' (the upstreams are: a)",
                 "r.yaml: routes.claude[2]: upstream 'a' is listed twice (a route tries each upstream once)"]
    p = problems("upstreams:\n" + relay("relay-a") + relay("night") + "routes:\n  claude: [rlay-a, zz]\n")
    assert p == ["r.yaml: routes.claude[0]: unknown upstream 'rlay-a' (did you mean 'relay-a'?)",
                 "r.yaml: routes.claude[1]: unknown upstream 'zz' (the upstreams are: relay-a, night)"]
    assert problems("routes:\n  claude: [x]\n") == [
        "r.yaml: routes.claude[0]: unknown upstream 'x' (no upstream is defined: add it under upstreams)"]
    # a name that differs only in case is the one meant ('Relay-A' was told 'relay-b', 'RELAY-A' nothing)
    p = problems("upstreams:\n" + relay("relay-a") + relay("relay-b") + "routes:\n  claude: [Relay-A, RELAY-A]\n")
    assert [line.split(": ", 2)[2] for line in p] == ["unknown upstream 'Relay-A' (did you mean 'relay-a'?)",
                                                      "unknown upstream 'RELAY-A' (did you mean 'relay-a'?)"]


def test_route_protocol_compatibility():
    text = ("upstreams:\n" + relay("x", "openai-chat") + relay("r", "openai-responses") + relay("an")
            + "routes:\n  claude: [an, x]\n  codex: [r, an]\n  chat: [x, r, an]\n")
    assert problems(text) == [
        "r.yaml: routes.claude[1]: upstream 'x' speaks openai-chat; the claude route takes only anthropic upstreams"
        " (the chat route takes any)",
        "r.yaml: routes.codex[1]: upstream 'an' speaks anthropic; "
        "the codex route takes only openai-responses upstreams (the chat route takes any)",
    ]
    assert ROUTE_PROTOCOLS["chat"] == {"anthropic", "openai-responses", "openai-chat"}


def test_route_check_runs_even_when_an_upstream_is_invalid():
    # upstream b is invalid (bad base_url) but its name exists: no 'unknown upstream' noise
    text = ("upstreams:\n" + relay("a") + "  - {name: b, protocol: anthropic, base_url: nope, api_key: k}\n"
            + "routes:\n  claude: [a, b, c]\n")
    assert problems(text) == [
        "r.yaml: upstreams[b].base_url: must be 'original' or an http(s) URL like https://host[:port][/prefix]",
        "r.yaml: routes.claude[2]: unknown upstream 'c' (the upstreams are: a, b)",
    ]


def test_auth_client_with_client_keys_in_a_route():
    text = (f"client_keys: [{SECRET}]\nupstreams:\n" + relay("a", extra="auth: client", key="")
            + relay("o", "openai-chat", extra="auth: client", key="") + "routes:\n  claude: [a]\n  chat: [a, o]\n")
    assert problems(text) == [
        "r.yaml: upstreams[a].auth: auth: client cannot be used with client_keys: client keys are never forwarded, "
        "so a would reach its upstream without credentials. Give it an api_key (auth: x-api-key), "
        "or take it out of routes.claude and routes.chat",
        "r.yaml: upstreams[o].auth: auth: client cannot be used with client_keys: client keys are never forwarded, "
        "so o would reach its upstream without credentials. Give it an api_key (auth: bearer), "
        "or take it out of routes.chat"]
    # disabled is not enough while it is in a route: ccswitch.enable can switch it on
    disabled = text.replace("auth: client", "auth: client\n    enabled: false", 1)
    assert problems(disabled)[0].endswith("(enabled: false is not enough: ccswitch.enable can switch it on)")
    mapping_form = (f"client_keys: [{SECRET}]\nupstreams:\n" + relay("a", extra="auth: client", key="")
                    + "routes:\n  claude: {upstreams: [a], strategy: priority}\n")
    assert problems(mapping_form)[0].startswith("r.yaml: upstreams[a].auth: ")


def test_auth_client_in_no_route_is_fine_beside_client_keys():
    """An upstream no route lists is never dialled, so it cannot carry a client key anywhere:
    client_keys can be added to the shipped rules without deleting the official upstreams."""
    text = (f"client_keys: [{SECRET}]\nupstreams:\n" + relay("official", extra="auth: client", key="")
            + relay("relay-a") + "routes:\n  claude: [relay-a]\n")
    assert parse(text).upstream("official").auth == "client"
    shipped = (REPO / "rules.yaml").read_text().replace('# client_keys: ["change-me"]', 'client_keys: ["change-me"]')
    shipped = shipped.replace("claude: [anthropic-official]", "claude: []").replace("codex: [codex-original]", "codex: []")
    assert parse_rules(shipped, env={}).client_keys


def test_base_url_original_only_with_auth_client():
    p = problems("upstreams:\n  - {name: o, protocol: openai-responses, base_url: original, api_key: k}\n")
    assert p == ["r.yaml: upstreams[o].base_url: base_url: original requires auth: client (keep the client's "
                 "own credentials), or give the upstream's URL"]
    r = parse("upstreams:\n  - {name: o, protocol: openai-responses, base_url: original, auth: client}\n")
    assert r.upstreams[0].base_url == "original" and r.upstreams[0].api_key is None


def test_activate_at_not_with_auth_client():
    p = problems("upstreams:\n" + relay("a", extra="auth: client\nactivate_at: ['06:00']", key=""))
    assert p == ["r.yaml: upstreams[a].activate_at: activate_at cannot be used with auth: client "
                 "(there is no key to probe with): remove activate_at, or give the upstream an api_key"]


def test_api_key_required_unless_client_or_disabled():
    how = ": give the upstream an api_key (e.g. ${VAR} from the environment), or set enabled: false"
    assert problems("upstreams:\n" + relay("a", key="")) == [
        "r.yaml: upstreams[a].api_key: required with auth: x-api-key" + how]
    assert problems("upstreams:\n" + relay("a", "openai-chat", key="api_key: ''")) == [
        "r.yaml: upstreams[a].api_key: required with auth: bearer" + how]
    assert problems("upstreams:\n" + relay("a", key="api_key: ${EMPTY}"), env={"EMPTY": ""}) == [
        "r.yaml: upstreams[a].api_key: environment variable EMPTY is set but empty (give it the key, or set "
        "enabled: false)"]
    assert parse("upstreams:\n" + relay("a", key="enabled: false")).upstreams[0].api_key is None
    assert parse("upstreams:\n" + relay("a", key="auth: client")).upstreams[0].auth == "client"


def test_a_header_whose_variable_is_set_but_empty_is_refused_as_an_api_key_would_be():
    # `api-key: ${AZURE_KEY}` with AZURE_KEY="" sent an empty credential on every request
    header = "headers: {api-key: '${AZURE_KEY}'}"
    assert problems("upstreams:\n" + relay("a", extra=header), env={"AZURE_KEY": ""}) == [
        "r.yaml: upstreams[a].headers.api-key: environment variable AZURE_KEY is set but empty (give it the key, "
        "or set enabled: false)"]
    assert parse("upstreams:\n" + relay("a", extra=header + "\nenabled: false"), env={"AZURE_KEY": ""})


def test_all_problems_collected_at_once():
    text = ("timezone: Nowhere/Land\nupstreams:\n" + relay("a", key="api_key: ${NOPE}")
            + relay("a", "openai-chat") + "routes:\n  claude: [ghost]\n  codex: [a]\n")
    p = problems(text)
    assert len(p) == 5, p
    assert any("timezone" in x for x in p) and any("environment variable NOPE" in x for x in p)
    assert any("duplicate upstream name" in x for x in p) and any("ghost" in x for x in p)
    assert any(x.startswith("r.yaml: routes.codex[0]: upstream 'a' speaks anthropic") for x in p)


# ----------------------------------------------------------------------------- env & secrets

def test_env_expansion_in_api_key_and_headers():
    text = "upstreams:\n" + relay("a", key="api_key: ${KEY_A}", extra=(
        "headers: {x-user: '${USER_A}-${ZONE}', x-lit: 'cost $${NOT_A_VAR}', x-num: 7}"))
    r = parse(text, env={"KEY_A": SECRET, "USER_A": "bob", "ZONE": "eu"})
    up = r.upstreams[0]
    assert up.api_key.get_secret_value() == SECRET
    assert up.headers == {"x-user": "bob-eu", "x-lit": "cost ${NOT_A_VAR}", "x-num": "7"}


def test_header_values_and_keys_must_be_latin1_text():
    """They go out as one byte per character: José can, 日本 or a pasted em dash cannot."""
    up = parse("upstreams:\n" + relay("a", extra="headers: {x-relay-user: José}")).upstreams[0]
    assert up.headers == {"x-relay-user": "José"}
    text = "upstreams:\n" + relay("a", key="api_key: ${KEY_A}", extra="headers: {x-ok: José, x-relay-user: '日本'}")
    p = problems(text, env={"KEY_A": SECRET + "\u2014"})
    assert p == [f"r.yaml: upstreams[a].{field}: must be latin-1 text: a header cannot carry a character "
                 "beyond U+00FF" for field in ("api_key", "headers.x-relay-user")]
    assert SECRET not in "".join(p)


@pytest.mark.parametrize("name", ["content-length", "Transfer-Encoding"])
def test_a_header_that_frames_the_body_is_refused_by_the_rules_not_by_every_request(name):
    # check said OK, then every request to the upstream failed over, its message naming no header
    p = problems("upstreams:\n" + relay("a", extra=f"headers: {{{name}: '5'}}"))
    assert len(p) == 1 and f"headers.{name}" in p[0] and "frames each request's body" in p[0] and "remove it" in p[0]


def test_an_empty_model_name_is_refused_where_it_would_be_sent_or_matched():
    # `models: {"claude-*": ""}` sent `"model": ""` upstream; activation_model already refused it
    assert problems("upstreams:\n" + relay("a", extra="models: {'claude-*': ''}")) == [
        "r.yaml: upstreams[a].models.claude-*: must not be empty"]
    assert problems("upstreams:\n" + relay("a", extra="only_models: ['']")) == [
        "r.yaml: upstreams[a].only_models[0]: must not be empty"]


def test_missing_env_var_enabled_upstream_is_error():
    text = "upstreams:\n" + relay("ok") + relay("b", key="api_key: pre-${RELAY_B_KEY}",
                                                  extra="headers: {x-t: '${TOKEN_X}'}")
    assert problems(text) == [
        "r.yaml: upstreams[b].api_key: environment variable RELAY_B_KEY is not set "
        "(export it where ccswitch runs, or set enabled: false)",
        "r.yaml: upstreams[b].headers.x-t: environment variable TOKEN_X is not set "
        "(export it where ccswitch runs, or set enabled: false)",
    ]


def test_missing_env_var_disabled_upstream_is_fine():
    text = "upstreams:\n" + relay("b", key="api_key: ${RELAY_B_KEY}",
                                  extra="enabled: false\nheaders: {x-t: '${TOKEN_X}', x-k: kept}")
    up = parse(text).upstreams[0]
    assert up.enabled is False and up.api_key is None and up.headers == {"x-k": "kept"}
    assert up.lacks() == "b has no api_key (${RELAY_B_KEY}, ${TOKEN_X} are not set where ccswitch runs)"


def test_a_disabled_upstream_names_each_unset_variable_once():
    text = "upstreams:\n" + relay("b", extra="enabled: false\nheaders: {x-t: '${TOKEN_X}', x-u: 'u-${TOKEN_X}'}")
    up = parse(text).upstreams[0]
    assert up.unset_vars == ("TOKEN_X",)
    assert up.lacks() == "b lacks its header(s) x-t, x-u (${TOKEN_X} not set where ccswitch runs)"


def test_the_loader_s_own_notes_are_refused_as_settings():
    assert problems("upstreams:\n" + relay("a", extra="unset_vars: [RELAY_A_KEY]")) == [
        "r.yaml: upstreams[a].unset_vars: unknown key"]


def test_a_regular_rules_file_is_read_anew_each_time(tmp_path):
    """Only what a pipe gave is kept (it cannot be read twice); a file edited since is read as it is now."""
    from ccswitch.config.load import read_rules_text
    rules = tmp_path / "rules.yaml"
    rules.write_text("upstreams: []\n")
    assert read_rules_text(rules) == "upstreams: []\n"
    rules.write_text("routes: {}\n")
    assert read_rules_text(rules) == "routes: {}\n"


def test_malformed_env_reference():
    p = problems("upstreams:\n" + relay("a", key="api_key: ${BROKEN KEY}"))
    assert p == ["r.yaml: upstreams[a].api_key: malformed ${...} reference (use ${NAME}, or $${ for a literal ${)"]


def test_environment_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("CCSWITCH_TEST_KEY", SECRET)
    r = parse_rules("upstreams:\n" + relay("a", key="api_key: ${CCSWITCH_TEST_KEY}"))
    assert r.upstreams[0].api_key.get_secret_value() == SECRET


def test_secrets_never_in_errors_or_repr():
    text = (f"client_keys: ['{SECRET}-client']\nupstreams:\n"
            + relay("a", extra=f"headers: {{x-secret: '{SECRET}-hdr', 'bad name': '{SECRET}-h2'}}\nbogus: 1")
            + relay("b", "openai-chat", key="api_key: ${ENV_SECRET}", extra="auth: client")
            + f"  - {{name: c, protocol: anthropic, base_url: nope, api_key: {{nested: '{SECRET}'}}}}\n")
    with pytest.raises(RulesError) as exc:
        parse(text, env={"ENV_SECRET": SECRET})
    blob = str(exc.value) + repr(exc.value) + repr(exc.value.problems)
    assert SECRET not in blob
    assert "upstreams[c].api_key: must be a string" in blob
    good = parse(f"client_keys: ['{SECRET}-client']\nupstreams:\n"
                 + relay("a", extra=f"headers: {{x-s: '{SECRET[:4]}'}}"))
    assert SECRET not in repr(good) and SECRET not in str(good) and SECRET not in repr(good.upstreams[0])
    assert SECRET not in str(good.upstreams[0].fingerprint())


def test_fingerprint_changes_with_key_url_protocol():
    base = dict(name="a", protocol="anthropic", base_url="https://x.example", api_key="k1")
    fp = Upstream(**base).fingerprint()
    assert Upstream(**base).fingerprint() == fp
    assert Upstream(**{**base, "enabled": False, "days": ["mon"]}).fingerprint() == fp
    assert Upstream(**{**base, "api_key": "k2"}).fingerprint() != fp
    assert Upstream(**{**base, "base_url": "https://y.example"}).fingerprint() != fp
    assert Upstream(**{**base, "protocol": "openai-chat"}).fingerprint() != fp
    assert Upstream(**{**base, "api_key": None}).fingerprint() != fp


def test_client_key_ok():
    r = parse(f"client_keys: ['{SECRET}', other-key]\n")
    assert all(isinstance(k.key, SecretStr) for k in r.client_keys) and [k.name for k in r.client_keys] == ["key-1", "key-2"]
    assert r.client_key_ok(SECRET) and r.client_key_ok("other-key")
    assert not r.client_key_ok(SECRET[:-1]) and not r.client_key_ok("") and not r.client_key_ok(None)
    assert not r.client_key_ok(SECRET + "x") and not r.client_key_ok("ключ")
    assert parse("").client_key_ok(None) is True  # no keys configured: nothing to check
    assert problems("client_keys: ['']\n") == ["r.yaml: client_keys[0].key: client key must not be empty"]


# ----------------------------------------------------------------------------- upstream fields

def test_upstream_defaults_and_auth_by_protocol():
    r = parse("upstreams:\n" + relay("an") + relay("oc", "openai-chat") + relay("orr", "openai-responses"))
    an, oc, orr = r.upstreams
    assert (an.auth, oc.auth, orr.auth) == ("x-api-key", "bearer", "bearer")
    assert an.enabled is True and an.days == frozenset(range(7)) and an.hours == ()
    assert an.models == {} and an.only_models == () and an.headers == {} and an.activate_at == ()
    assert an.activation_model is None and an.price_multiplier == 1.0
    assert r.upstream("oc") is oc
    with pytest.raises(KeyError):
        r.upstream("nope")


def test_days_hours_activate_at_parsing():
    r = parse("upstreams:\n" + relay("a", extra=(
        "days: [Mon, TUE, wednesday, sat-sun]\n"
        "hours: ['09:00-18:00', '22:00-02:00', '00:00-24:00', '9:30-10:00']\n"
        "activate_at: [06:00, '7:05']\nprice_multiplier: 0.25")))
    up = r.upstreams[0]
    assert up.days == frozenset({0, 1, 2, 5, 6})
    assert [(w.start_minute, w.end_minute) for w in up.hours] == [(540, 1080), (1320, 120), (0, 1440), (570, 600)]
    assert [str(w) for w in up.hours] == ["09:00-18:00", "22:00-02:00", "00:00-24:00", "09:30-10:00"]
    assert up.hours[1].wraps and not up.hours[0].wraps and not up.hours[2].wraps
    assert up.activate_at == ("06:00", "07:05")
    assert up.price_multiplier == 0.25


def test_a_time_listed_twice_in_activate_at_is_one_time():
    # written differently ("6:00", 06:00 unquoted) it is still one probe and one series of retries
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from ccswitch.activation.probe import Schedule
    r = parse("timezone: UTC\nupstreams:\n" + relay("a", extra="activate_at: [06:00, '6:00', '06:00', '7:05']"))
    assert r.upstreams[0].activate_at == ("06:00", "07:05")
    due = Schedule().due(r, datetime(2026, 12, 4, 6, 0, 1, tzinfo=ZoneInfo("UTC")))
    assert [slot.at for _, slot in due] == ["06:00"]
    assert parse("upstreams:\n" + relay("a", extra="days: fri-mon")).upstreams[0].days == frozenset({4, 5, 6, 0})
    assert problems("upstreams:\n" + relay("a", extra="days: []")) == [
        "r.yaml: upstreams[a].days: days must not be empty (use enabled: false to switch an upstream off)"]
    assert problems("upstreams:\n" + relay("a", extra="hours: []")) == [
        "r.yaml: upstreams[a].hours: hours must not be empty (leave it out for all day, or use "
        "enabled: false to switch an upstream off)"]
    assert HourWindow.model_validate("22:00-24:00").end_minute == 1440
    with pytest.raises(ValueError):
        HourWindow.model_validate("24:00-02:00")


def test_map_model_precedence():
    up = Upstream(name="a", protocol="anthropic", base_url="https://x.example", api_key="k", models={
        "*": "catch-all", "claude-*": "glob-claude", "claude-haiku-*": "glob-haiku",
        "claude-haiku-4-5": "exact-haiku", "gpt-?o": "glob-q"})
    assert up.map_model("claude-haiku-4-5") == "exact-haiku"      # exact beats every glob
    assert up.map_model("claude-haiku-3") == "glob-claude"        # first matching glob in order
    assert up.map_model("claude-opus-4") == "glob-claude"
    assert up.map_model("gpt-4o") == "glob-q"
    assert up.map_model("CLAUDE-opus") == "catch-all"             # globs are case-sensitive
    assert up.map_model("anything") == "catch-all"                # "*" is used last
    plain = Upstream(name="b", protocol="anthropic", base_url="https://x.example", models={"a": "b"})
    assert plain.map_model("zzz") == "zzz" and plain.map_model("a") == "b"


def test_a_glob_is_shadowed_only_by_an_earlier_plain_prefix_glob_that_takes_all_it_matches():
    from ccswitch.config.values import shadowed_globs
    assert shadowed_globs({"claude-*": 1, "claude-sonnet-*": 2, "claude-[ho]*": 3}) == [
        ("claude-sonnet-*", "claude-*"), ("claude-[ho]*", "claude-*")]
    # "*" is looked up last wherever it stands: it shadows nothing
    assert shadowed_globs({"*": 1, "claude-*": 2}) == []
    # `gpt-?` matches one character more, not every name from `gpt-` on: `gpt-4*` is reached
    assert shadowed_globs({"gpt-?": 1, "gpt-4*": 2}) == []
    assert shadowed_globs({"claude-*": 1, "claude-[ab]": 2}) == [("claude-[ab]", "claude-*")]


def test_admits_model():
    up = Upstream(name="a", protocol="anthropic", base_url="https://x.example",
                  only_models=["claude-haiku-*", "exact-one"])
    assert up.admits_model("claude-haiku-4-5") and up.admits_model("exact-one")
    assert not up.admits_model("claude-sonnet-4-5") and not up.admits_model("Claude-haiku-4-5")
    assert Upstream(name="b", protocol="anthropic", base_url="https://x.example").admits_model("any")


def test_routes_for_route():
    r = Routes(claude=["a", "b"], chat=["c"])
    assert r.for_route("claude") == ("a", "b") and r.for_route("codex") == () and r.for_route("chat") == ("c",)
    with pytest.raises(KeyError):
        r.for_route("gemini")


def test_intercept_lowercased_and_prices():
    r = parse("intercept: [API.Example.COM, relay.example.net.]\n"
              "prices: {claude-sonnet-4-5: {input: 3, output: 15, cache_read: 0.3}}\n")
    assert r.intercept == ("api.example.com", "relay.example.net")
    assert r.prices == {"claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_read": 0.3}}


def test_timezone_and_tz_property():
    r = parse("timezone: Asia/Shanghai\n")
    assert r.timezone == "Asia/Shanghai" and str(r.tz) == "Asia/Shanghai"
    assert parse("").tz is not None


def test_without_a_timezone_the_machines_named_zone_else_its_offset_and_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("TZ", "Europe/Lisbon")
    assert str(parse("").tz) == "Europe/Lisbon"
    monkeypatch.setenv("TZ", "Nowhere/Atlantis")
    with caplog.at_level("WARNING", logger="ccswitch.clock"):
        fixed = parse("").tz
    assert fixed.utcoffset(None) is not None and "TZ=Nowhere/Atlantis names no time zone" in caplog.text


def test_usage_db_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    base = tmp_path / "cfg"
    assert parse("usage_db: data/u.db\n", base_dir=base).usage_db == base / "data" / "u.db"
    assert parse("usage_db: ~/x.db\n", base_dir=base).usage_db == tmp_path / "home" / "x.db"
    assert parse("usage_db: /abs/u.db\n", base_dir=base).usage_db == Path("/abs/u.db")
    f = base / "rules.yaml"
    base.mkdir()
    f.write_text("usage_db: u.db\n")
    r = load_rules(f, env={})
    assert r.usage_db == base.resolve() / "u.db" and r.source == f


def test_a_relative_usage_db_is_beside_the_rules_file_as_named_not_its_link_target(tmp_path):
    # a Kubernetes ConfigMap's rules.yaml links through ..data to a folder swapped at each update:
    # the ledger moved to the new folder, and the report lost the history before it
    from ccswitch.config.watch import _parse
    data = tmp_path / "k8s" / "v2"
    data.mkdir(parents=True)
    (data / "rules.yaml").write_text("usage_db: u.db\n")
    (tmp_path / "k8s" / "..data").symlink_to("v2")
    (tmp_path / "k8s" / "rules.yaml").symlink_to("..data/rules.yaml")
    named = tmp_path / "k8s" / "rules.yaml"
    assert load_rules(named, env={}).usage_db == tmp_path / "k8s" / "u.db"
    assert _parse(named.read_bytes(), named).usage_db == tmp_path / "k8s" / "u.db"   # the proxy's reload


def test_yaml_12_scalars():
    r = parse("upstreams:\n" + relay("on", extra="activate_at: [06:00, 23:59]") + "routes: {claude: [on]}\n")
    assert r.upstreams[0].name == "on" and r.routes.for_route("claude") == ("on",)
    assert r.upstreams[0].activate_at == ("06:00", "23:59")     # times, not sexagesimal numbers


# ----------------------------------------------------------------------------- files

def test_load_rules_reports_file_name(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("routes: {claude: [ghost]}\n")
    with pytest.raises(RulesError) as exc:
        load_rules(f, env={})
    assert exc.value.problems == [f"{f}: routes.claude[0]: unknown upstream 'ghost' "
                                  "(no upstream is defined: add it under upstreams)"]
    with pytest.raises(RulesError) as exc:
        load_rules(tmp_path / "missing.yaml")
    assert str(exc.value).startswith(f"{tmp_path / 'missing.yaml'}: cannot read")


def test_resolve_rules_path(tmp_path):
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    (home / ".ccswitch").mkdir(parents=True)
    assert resolve_rules_path(None, cwd, home) is None
    assert resolve_rules_path("", cwd, home) is None
    (home / ".ccswitch" / "rules.yaml").write_text("")
    assert resolve_rules_path(None, cwd, home) == home / ".ccswitch" / "rules.yaml"
    (cwd / "rules.yaml").write_text("")
    assert resolve_rules_path(None, cwd, home) == cwd / "rules.yaml"
    assert resolve_rules_path("other.yaml", cwd, home) == cwd / "other.yaml"  # explicit, even if absent
    assert resolve_rules_path("/etc/r.yaml", cwd, home) == Path("/etc/r.yaml")
    assert resolve_rules_path("~/r.yaml", cwd, home) == home / "r.yaml"


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.symlink_to(p.parent / "moved.yaml"), "is a link to {dir}/moved.yaml, which does not exist"),
    (lambda p: p.mkdir(), "is a folder, not a rules file"),
])
def test_a_rules_file_there_in_another_form_is_chosen_and_its_fault_said(tmp_path, make, problem):
    # a link to nothing or a folder was taken for no file: the built-in default served (with the
    # client's credentials, the user's relays ignored) while `ccswitch init` said it existed
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    (home / ".ccswitch").mkdir(parents=True)
    (home / ".ccswitch" / "rules.yaml").write_text("upstreams: []\n")
    for there in (home / ".ccswitch" / "rules.yaml", cwd / "rules.yaml"):
        if there.exists():
            there.unlink()
        make(there)
        assert resolve_rules_path(None, cwd, home) == there
        with pytest.raises(RulesError) as caught:
            find_rules(None, env={}, cwd=cwd, home=home)
        assert caught.value.problems == [f"{there}: " + problem.format(dir=there.parent)]


def _uncomment_examples(text: str) -> str:
    out = []
    for line in text.splitlines():
        m = re.match(r'^(\s*)# (\s*)(- name:.*|("[\w.*-]+"|[a-z][\w.*-]*):(\s.*)?)$', line)
        out.append(f"{m.group(1)}{m.group(2)}{m.group(3)}" if m and "client_keys" not in line else line)
    return "\n".join(out) + "\n"


def test_shipped_rules_validate_and_equal_builtin_default():
    shipped = load_rules(REPO / "rules.yaml", env={})
    builtin = parse_rules(default_rules_text(), env={})
    assert shipped.model_copy(update={"source": None}) == builtin
    assert shipped.source == REPO / "rules.yaml"
    assert [u.name for u in builtin.upstreams] == ["anthropic-official", "openai-official",
                                                   "chatgpt-codex", "codex-original"]
    assert all(u.auth == "client" and u.api_key is None for u in builtin.upstreams)
    assert builtin.routes == Routes(claude=["anthropic-official"], codex=["codex-original"], chat=[])
    assert builtin.upstream("codex-original").base_url == "original"
    assert builtin.upstream("chatgpt-codex").base_url == "https://chatgpt.com/backend-api/codex"


def test_shipped_rules_commented_examples_are_valid():
    text = _uncomment_examples((REPO / "rules.yaml").read_text())
    assert "${RELAY_A_KEY}" in text and "\n  - name: relay-a" in text and "\nfailover:" in text
    with pytest.raises(RulesError) as exc:
        parse_rules(text, env={})
    assert "upstreams[relay-a].api_key: environment variable RELAY_A_KEY is not set" in str(exc.value)
    r = parse_rules(text, env={"RELAY_A_KEY": "a", "RELAY_A_USER": "u", "RELAY_B_KEY": "b"})
    a = r.upstream("relay-a")
    assert a.days == frozenset(range(5)) and [str(h) for h in a.hours] == ["09:00-18:00", "22:00-02:00"]
    assert a.activate_at == ("06:00",) and a.map_model("claude-haiku-3") == "claude-haiku-4-5"
    assert r.failover == Failover() and r.timeouts == Timeouts() and r.timezone == "Asia/Shanghai"
    assert set(DEFAULT_ON_STATUS) <= set(r.failover.on_status)
    assert r.upstream("relay-b").protocol == "openai-chat"


def test_upstreams_are_named_by_name_in_every_kind_of_problem():
    """Pydantic errors, ${VAR} problems and cross-checks alike; a name made of digits would read
    as a position, so such an upstream keeps its position."""
    text = ("upstreams:\n" + relay('"7"', extra="days: [funday]")
            + relay("relay-a", key="api_key: ${NOPE}", extra="hours: ['nine']\nactivate_at: ['06:00']\nauth: client"))
    assert problems(text) == [
        "r.yaml: upstreams[relay-a].api_key: environment variable NOPE is not set "
        "(export it where ccswitch runs, or set enabled: false)",
        "r.yaml: upstreams[0].days: unknown weekday 'funday' (use mon..sun, or a range like mon-fri)",
        "r.yaml: upstreams[relay-a].hours[0]: hours window 'nine': must look like \"09:00-18:00\": one start, one end",
    ]
    p = problems("upstreams:\n" + relay("relay-a", extra="activate_at: ['06:00']\nauth: client"))
    assert p[0].startswith("r.yaml: upstreams[relay-a].activate_at: ")


def test_packaged_example_is_the_shipped_rules_yaml():
    """`ccswitch init` writes the packaged copy; the checkout's rules.yaml must say the same."""
    assert example_rules_text() == (REPO / "rules.yaml").read_text(encoding="utf-8")
    assert "[options.package_data]\n" in (REPO / "setup.cfg").read_text()


def test_rules_origin_says_which_file_and_why(tmp_path):
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    (home / ".ccswitch").mkdir(parents=True)
    cwd.mkdir()
    personal, local = home / ".ccswitch" / "rules.yaml", cwd / "rules.yaml"
    assert rules_origin(None, None, cwd, home).startswith("the built-in default (official upstreams, the client's "
                                                          f"own credentials): there is no ./rules.yaml here and no "
                                                          f"{personal}; `ccswitch init` writes one")
    personal.write_text("version: 1\n")
    assert rules_origin(None, personal, cwd, home) == f"{personal} (~/.ccswitch/rules.yaml; there is no ./rules.yaml here)"
    local.write_text(example_rules_text())
    assert rules_origin(None, local, cwd, home) == (
        f"{local} (found as ./rules.yaml in the current directory, which comes before ~/.ccswitch/rules.yaml; "
        f"{personal} is not used; name a file to use another; it is the shipped example, unchanged)")
    assert rules_origin("x.yaml", cwd / "x.yaml", cwd, home) == f"{cwd / 'x.yaml'} (as named)"


def test_a_mistyped_protocol_is_named_with_the_one_it_is_closest_to_and_every_bad_day_at_once():
    with pytest.raises(RulesError) as refused:
        parse_rules("upstreams:\n"
                    "  - {name: a, protocol: antropic, base_url: 'https://x.example', api_key: k-000000000}\n"
                    "  - {name: b, protocol: anthropic, base_url: 'https://x.example', api_key: k-000000001,"
                    " days: [funday, tue, mon-frii, true], hours: ['09:00-18:00-20:00']}\n", "r.yaml")
    assert sorted(refused.value.problems) == [
        "r.yaml: upstreams[a].protocol: 'antropic' is not one of 'anthropic', 'openai-responses' or "
        "'openai-chat' (did you mean 'anthropic'?)",
        "r.yaml: upstreams[b].days: unknown weekdays 'funday', 'mon-frii', true (use mon..sun, or a range like "
        "mon-fri)",
        "r.yaml: upstreams[b].hours[0]: hours window '09:00-18:00-20:00': must look like \"09:00-18:00\": one "
        "start, one end"]


HOOKED = """
    upstreams:
      - {name: a, protocol: anthropic, base_url: "https://x.example", api_key: k}
    routes: {claude: [a]}
    notify:
      - url: ${HOOK_URL}
        events: [cooldwn]
    """


def test_an_unset_hook_url_is_said_once_and_a_misspelt_event_gets_its_hint():
    assert problems(HOOKED) == [
        "r.yaml: notify[0].url: environment variable HOOK_URL is not set (export it where ccswitch runs)",
        "r.yaml: notify[0].events[0]: 'cooldwn' is not one of 'cooldown', 'recovered', 'full', 'budget', "
        "'exhausted' or 'activation_failed' (did you mean 'cooldown'?)"]


def test_a_hook_password_from_the_environment_arrives_as_it_is():
    from ccswitch.notify.webhook import without_login
    rules = parse(HOOKED.replace("${HOOK_URL}", "https://ops:${HOOK_PASS}@hooks.example/x").replace("cooldwn", "full"),
                  env={"HOOK_PASS": "p@ss/w%41rd#1"})
    url, login = without_login(rules.notify[0].url.get_secret_value())
    assert url == "https://hooks.example/x" and base64_login(login) == "ops:p@ss/w%41rd#1"


def base64_login(value: str) -> str:
    import base64
    return base64.b64decode(value.removeprefix("Basic ")).decode()


def test_a_tab_in_the_indentation_is_said_to_be_one():
    [problem] = problems("upstreams:\n\t- {name: a}\n")
    assert problem.endswith("(indent with spaces: YAML does not allow tabs)")


@pytest.mark.parametrize("text", [
    "upstreams:\n  - name: a\n   protocol: anthropic\n    base_url: 'https://relay.example'\n",   # one space short
    "upstreams:\n  - name: a\n    protocol: anthropic\n      base_url: 'https://relay.example'\n",   # two too many
    "upstreams:\n  - name: a\n    protocol anthropic\n    base_url: 'https://relay.example'\n",   # no ': '
])
def test_a_line_indented_unlike_its_neighbours_is_said_to_be(text):
    [problem] = problems(text)
    assert "(check this line's indentation against the lines above it" in problem
    assert "a value holding ': ' needs quotes)" in problem     # `api_key: sk-abc: def` says the same


def test_entries_not_indented_under_their_key_are_said_to_be():
    p = problems("""
        upstreams:
          - name: a
            protocol: anthropic
            base_url: 'https://relay.example'
            api_key: k
            models:
            "claude-opus-*": "glm-4.6"
        routes: {claude: [a]}
        """)
    assert "r.yaml: upstreams[a].models: is empty: a mapping is wanted (its entries indented under models:?)" in p


def test_an_activation_retried_at_once_or_with_no_model_is_refused():
    p = problems("""
        activation: {retry_interval: 0}
        upstreams:
          - {name: a, protocol: anthropic, base_url: 'https://relay.example', api_key: k, activation_model: ""}
        routes: {claude: [a]}
        """)
    assert sorted(p) == ["r.yaml: activation.retry_interval: must be greater than 0",
                         "r.yaml: upstreams[a].activation_model: must not be empty"]


@pytest.mark.parametrize("protocol, base_url, problem", [
    ("anthropic", "https://relay.example.com/v1/", "ends in /v1, and ccswitch appends /v1/messages itself (it would "
     "call /v1/v1/messages): give https://relay.example.com (as the Anthropic SDK takes it, without /v1)"),
    ("anthropic", "https://relay.example.com/claude/v1/messages", "ends in /v1/messages, and ccswitch appends "
     "/v1/messages itself (it would call /claude/v1/messages/v1/messages): give https://relay.example.com/claude "),
    ("anthropic", "https://r.example/V1/Messages/count_tokens", "give https://r.example "),
    ("openai-chat", "https://relay.example.com/v1/chat/completions", "ends in /chat/completions, and ccswitch "
     "appends /chat/completions itself (it would call /v1/chat/completions/chat/completions): give "
     "https://relay.example.com/v1"),
    ("openai-responses", "https://relay.example.com/v1/responses", "give https://relay.example.com/v1"),
    ("openai-responses", "https://api.openai.com", "api.openai.com serves its API under /v1: give "
     "https://api.openai.com/v1"),
])
def test_a_base_url_pasted_with_the_path_ccswitch_appends_is_named(protocol, base_url, problem):
    # a relay answers /v1/v1/messages with a 404, which fails nothing over: the user saw only that
    [found] = problems(f"upstreams:\n  - {{name: a, protocol: {protocol}, base_url: '{base_url}', api_key: k}}\n"
                       f"routes: {{chat: [a]}}\n")
    assert found.startswith("r.yaml: upstreams[a].base_url: ") and problem in found + " "


@pytest.mark.parametrize("other", ["modles: {}", "days: [funday]", "weight: -1"])
def test_a_pasted_base_url_is_named_beside_another_mistake_of_the_same_upstream(other):
    """`check` prints every problem: fixing the first must not be the way to learn of the next."""
    found = problems(f"upstreams:\n  - {{name: a, protocol: anthropic, base_url: 'https://r.example/v1', api_key: k, "
                     f"{other}}}\nroutes: {{claude: [a]}}\n")
    assert any(p.startswith("r.yaml: upstreams[a].base_url: ends in /v1") for p in found), found
    assert len(found) == 2, found


def test_a_base_url_no_url_parser_takes_on_an_upstream_refused_for_it_is_one_problem_not_a_crash():
    found = problems("upstreams:\n  - {name: a, protocol: anthropic, base_url: 'https://[relay.example/v1', api_key: k, "
                     "modles: {}}\nroutes: {claude: [a]}\n")
    assert any("modles" in p for p in found) and all("Traceback" not in p for p in found), found


@pytest.mark.parametrize("upstream, problem", [
    ("'just a string'", "r.yaml: upstreams[0]: must be a mapping"),
    ("{name: a, protocol: [anthropic], base_url: 'https://r.example/v1', api_key: k}",
     "r.yaml: upstreams[a].protocol: must be"),
])
def test_an_upstream_refused_for_its_shape_is_named_without_a_look_at_its_base_url(upstream, problem):
    # the pasted-base_url check reads a refused upstream's raw entry: one of another shape must not crash it
    found = problems(f"upstreams:\n  - {upstream}\nroutes: {{claude: [a]}}\n")
    assert any(p.startswith(problem) for p in found), found


@pytest.mark.parametrize("protocol, base_url", [
    ("anthropic", "https://relay.example.com/api/v1beta"), ("anthropic", "https://relay.example.com/claude"),
    ("openai-chat", "https://relay.example.com/v1"), ("openai-responses", "https://chatgpt.com/backend-api/codex"),
    ("openai-chat", "https://relay.example.com"),
])
def test_a_base_url_as_the_sdks_take_it_is_fine(protocol, base_url):
    rules = parse(f"upstreams:\n  - {{name: a, protocol: {protocol}, base_url: '{base_url}', api_key: k}}\n"
                  f"routes: {{chat: [a]}}\n")
    assert rules.upstreams[0].base_url == base_url


def test_a_key_that_surely_is_not_the_one_meant_and_a_variable_in_base_url_are_named():
    # an empty variable read "give the upstream an api_key" though one was given; `$NAME` was sent
    # as the key itself; ${VAR} in base_url went out as a host named "${relay_host}"
    found = problems("""
upstreams:
  - {name: a, protocol: anthropic, base_url: 'https://${RELAY_HOST}/api', api_key: '${EMPTY_KEY}'}
  - {name: b, protocol: anthropic, base_url: 'https://relay.example.com', api_key: '$RELAY_KEY'}
  - {name: c, protocol: anthropic, base_url: 'https://relay.example.com', api_key: '${EMPTY_KEY}', enabled: false}
routes: {claude: [a, b, c]}
""", env={"EMPTY_KEY": ""})
    assert found == [
        "r.yaml: upstreams[a].api_key: environment variable EMPTY_KEY is set but empty (give it the key, or set "
        "enabled: false)",
        "r.yaml: upstreams[b].api_key: reads as a shell variable, which ccswitch does not expand: write ${RELAY_KEY}",
        "r.yaml: upstreams[a].base_url: ${VAR} is not expanded here (only in api_key, headers and the fields "
        "whose docs say so): write the value itself"]
    assert parse("upstreams:\n  - {name: a, protocol: anthropic, base_url: 'https://r.example', "
                 "api_key: 'sk-$abc-1'}\nroutes: {claude: [a]}\n").upstreams[0].api_key.get_secret_value() == "sk-$abc-1"


def test_a_key_pasted_with_its_header_or_scheme_is_named_without_the_key():
    # `Bearer sk-…` went out as `Authorization: Bearer Bearer sk-…` (or `x-api-key: Bearer …`), a 401
    # from every upstream that cooled the route down, with nothing in the log to say why
    found = problems("""
upstreams:
  - {name: a, protocol: openai-chat, base_url: 'https://r.example', api_key: 'Bearer sk-test-aaa'}
  - {name: b, protocol: anthropic, base_url: 'https://r.example', api_key: '${PASTED}'}
  - {name: c, protocol: anthropic, base_url: 'https://r.example', api_key: 'x-api-key: sk-test-ccc'}
  - {name: d, protocol: anthropic, base_url: 'https://r.example', api_key: 'bearer-sk-test-ddd'}
routes: {claude: [b, c, d], chat: [a]}
""", env={"PASTED": "Authorization: Bearer sk-test-bbb"})
    assert found == [
        "r.yaml: upstreams[a].api_key: has `Bearer ` or a header's name before the key: give the key alone "
        "(ccswitch writes the header itself, see `auth`)",
        "r.yaml: upstreams[b].api_key: environment variable PASTED holds `Bearer ` or a header's name before "
        "the key: give the key alone (ccswitch writes the header itself, see `auth`)",
        "r.yaml: upstreams[c].api_key: has `Bearer ` or a header's name before the key: give the key alone "
        "(ccswitch writes the header itself, see `auth`)"]
    assert not any("sk-test" in line for line in found)


def test_a_key_pasted_with_a_space_before_it_or_with_azure_s_api_key_header_is_named_too():
    # a variable set with a space before `Bearer ` (from a `.env` line) and Azure's `api-key:` header
    # (with or without a space before its colon) went out with the key and were refused upstream
    found = problems("""
upstreams:
  - {name: e, protocol: anthropic, base_url: 'https://r.example', api_key: '${SPACED}'}
  - {name: f, protocol: openai-chat, base_url: 'https://r.example', api_key: 'api-key: sk-test-fff'}
  - {name: g, protocol: anthropic, base_url: 'https://r.example', api_key: 'X-Api-Key : sk-test-ggg'}
routes: {claude: [e, g], chat: [f]}
""", env={"SPACED": " Bearer sk-test-eee"})
    advice = "`Bearer ` or a header's name before the key: give the key alone (ccswitch writes the header itself, see `auth`)"
    assert found == [f"r.yaml: upstreams[e].api_key: environment variable SPACED holds {advice}",
                     f"r.yaml: upstreams[f].api_key: has {advice}", f"r.yaml: upstreams[g].api_key: has {advice}"]
    assert not any("sk-test" in line for line in found)


def test_a_typo_in_a_zone_an_action_or_a_bare_value_for_a_list_gets_what_to_write():
    found = problems("""
timezone: Asia/Shangai
failover: {on_status: {429: rety}}
upstreams:
  - {name: a, protocol: anthropic, base_url: 'https://r.example', api_key: k, hours: "09:00-18:00"}
routes: {claude: [a]}
""")
    assert found == ["r.yaml: timezone: unknown time zone 'Asia/Shangai' (did you mean 'Asia/Shanghai'?)",
                     "r.yaml: failover.on_status.429: 'rety' is not one of 'switch', 'retry' or 'pass' "
                     "(did you mean 'retry'?)",
                     'r.yaml: upstreams[a].hours: must be a list, even of one: ["09:00-18:00"]']
    assert problems("timezone: utc\n") == ["r.yaml: timezone: unknown time zone 'utc' (did you mean 'UTC'?)"]
    assert problems("timezone: Nowhere/Land\n") == [
        "r.yaml: timezone: unknown time zone 'Nowhere/Land' (use an IANA name like Europe/Berlin)"]


def test_a_secret_a_typo_made_into_a_key_is_never_shown():
    # `api_key "sk-…"` without its colon is a key of its own: it was printed whole, in the log and
    # mitmweb's event log
    text = f"""
client_keys:
  - {{name: bob, key "{SECRET}-bob"}}
  - {SECRET}-alice:
upstreams:
  - {{name: a, protocol: anthropic, base_url: 'https://r.example', api_key "{SECRET}", timout: 3, base-url: x}}
routes: {{claude: [a]}}
"""
    found = problems(text)
    assert not [p for p in found if SECRET in p or SECRET[:12] in p], found
    assert "r.yaml: upstreams[a].<unknown key>: unknown key: api_key and its value run together, not shown " \
           "(a ':' missing after api_key?)" in found
    assert f"r.yaml: client_keys[1].<unknown key>: unknown key of {len(SECRET) + 6} characters, not shown: it may " \
           "hold a secret (a ':' where none belongs?)" in found
    # what reads as a key's name is still shown, with the name meant
    assert "r.yaml: upstreams[a].base-url: unknown key (did you mean 'base_url'?)" in found
    assert any(p.startswith("r.yaml: upstreams[a].timout: unknown key") for p in found)


def test_a_secret_reaches_no_message_by_the_other_ways_a_typo_can_take():
    # an identifier-like key, a duplicate key, a header name or a choice with a key run into it,
    # a key pasted as a route's upstream: each was printed whole
    hexkey = "abcdef0123456789abcdef0123456789"
    text = f"""
auth_typo: 1
upstreams:
  - name: a
    protocol: anthropic
    base_url: 'https://r.example'
    api_key: k
    {hexkey}: 1
    headers: {{x-api-key "{SECRET}": v}}
    anthropic-version: "2023-06-01"
  - {{name: b, protocol: anthropic, base_url: 'https://r.example', api_key: k, auth: {SECRET}}}
routes: {{claude: [a, b, {SECRET}-route-entry]}}
dup:
  {SECRET}-d: 1
  {SECRET}-d: 2
"""
    found = problems(text)
    assert not [p for p in found if SECRET[:12] in p or hexkey[:12] in p], found
    assert "r.yaml: upstreams[a].anthropic-version: unknown key (a header? headers go under headers:)" in found
    assert any("auth: a value of" in p for p in found), found


# ----------------------------------------------------------------------------- mutation-found gaps

def test_a_duplicate_header_is_named_though_it_is_no_field_name():
    # a header's name (capitals, dashes) is never a secret: the user is told which one is twice
    text = "upstreams:\n" + relay("a", extra="headers:\n  X-Team: a\n  X-Team: b\n")
    assert "r.yaml: line 8: duplicate key 'X-Team'" in problems(text)


def test_a_key_run_into_its_value_by_a_quote_is_said_so_and_not_shown():
    # `api_key"sk-…` (no space, a quote): the hint names the field, the value stays out
    text = "upstreams:\n" + relay("a", extra=f"'api_key\"{SECRET}': x\n")
    found = problems(text)
    assert not [p for p in found if SECRET[:12] in p], found
    assert any("unknown key: api_key and its value run together, not shown" in p for p in found), found


def test_a_short_unknown_key_with_a_space_is_not_shown_though_a_field_is_near_it():
    # `api_key sk-12` is near `api_key`, but a space in a key means a value is in it: no "did you mean"
    found = problems("upstreams:\n" + relay("a", extra="api_key sk-12: x\n"))
    assert not [p for p in found if "sk-12" in p], found
    assert "r.yaml: upstreams[a].<unknown key>: unknown key: api_key and its value run together, not shown " \
           "(a ':' missing after api_key?)" in found


def test_the_one_value_list_hint_quotes_a_name_not_a_long_value_that_may_be_a_pasted_key():
    found = problems("upstreams:\n" + relay("a", extra=f"only_models: {'m' * 41}\n"))
    assert any(p.endswith('must be a list, even of one: [...]') for p in found) and "mmm" not in str(found), found
    found = problems("upstreams:\n" + relay("a", extra=f"only_models: {'m' * 40}\n"))
    assert any(f'must be a list, even of one: ["{"m" * 40}"]' in p for p in found), found


@pytest.mark.parametrize("field", ["days", "hours"])
def test_a_key_pasted_into_days_or_hours_is_not_repeated(field):
    # "No message ever contains a key": protocol and auth hid such a value, these quoted it
    found = problems("upstreams:\n" + relay("a", extra=f"{field}: {SECRET}\n"))
    assert found and SECRET not in str(found)
    assert f"a value of {len(SECRET)} characters, not shown" in str(found) or str(found).endswith("[...]']")


def test_an_env_variable_of_blanks_is_set_but_empty():
    # "  " is no key: said so, not sent as one
    assert problems("upstreams:\n" + relay("a", key="api_key: ${BLANK}"), env={"BLANK": "  "}) == [
        "r.yaml: upstreams[a].api_key: environment variable BLANK is set but empty (give it the key, or set "
        "enabled: false)"]


def test_a_shell_variable_with_spaces_around_it_is_still_named():
    found = problems("upstreams:\n" + relay("a", key="api_key: ' $RELAY_KEY '"))
    assert any("reads as a shell variable, which ccswitch does not expand: write ${RELAY_KEY}" in p
               for p in found), found


def test_an_unknown_upstream_of_40_characters_is_still_shown():
    name = "r" * 40
    p = problems("upstreams:\n" + relay("a") + f"routes:\n  claude: [{name}]\n")
    assert p == [f"r.yaml: routes.claude[0]: unknown upstream {name!r} (the upstreams are: a)"]


def test_the_upstreams_listed_after_an_unknown_one_stop_at_eight():
    names = [f"u{i}" for i in range(9)]
    ups = "upstreams:\n" + "".join(relay(n) for n in names)
    p = problems(ups + "routes:\n  claude: [zzz]\n")
    assert p == ["r.yaml: routes.claude[0]: unknown upstream 'zzz' (the upstreams are: "
                 + ", ".join(names[:8]) + ", ...)"]
    ups8 = "upstreams:\n" + "".join(relay(n) for n in names[:8])
    assert problems(ups8 + "routes:\n  claude: [zzz]\n") == [
        "r.yaml: routes.claude[0]: unknown upstream 'zzz' (the upstreams are: " + ", ".join(names[:8]) + ")"]


def test_an_anthropic_upstream_at_api_openai_com_is_not_told_to_add_v1():
    # the /v1 advice is for OpenAI's own protocols; an anthropic upstream there is another fault
    text = ("upstreams:\n  - {name: a, protocol: anthropic, base_url: 'https://api.openai.com', api_key: k}\n"
            "routes: {claude: [a]}\n")
    assert parse(text).upstreams[0].base_url == "https://api.openai.com"


def test_a_location_part_with_a_value_run_into_it_is_not_shown_whatever_the_error():
    # any key on the path (not only an unknown last one) longer than a name, with a space or a
    # quote, may be `x-api-key "sk-…"`; exactly 24 characters, or no space nor quote, is a name
    from ccswitch.config.problems import UNSHOWN, shown_loc
    pasted = ["x-api-key 'sk-ant-0123456789'", 'x-api-key"sk-ant-0123456789', "x-api-key sk-ant-01234567"]
    for key in pasted:
        loc = ("upstreams", 0, "headers", key)
        assert shown_loc({"type": "string_type", "loc": loc}) == loc[:3] + (UNSHOWN,), (key, len(key))
    assert len(pasted[2]) == 25
    for name in (pasted[2][:-1], "x" * 30):
        loc = ("upstreams", 0, "headers", name)
        assert shown_loc({"type": "string_type", "loc": loc}) == loc


def test_a_variable_named_in_other_letters_case_is_pointed_at_never_its_value():
    text = ("upstreams:\n" + relay("a", key="api_key: ${relay_b_key}") + "routes: {claude: [a]}\n")
    said = problems(text, {"RELAY_B_KEY": "sk-test-secret-value"})
    assert [p for p in said if "relay_b_key" in p] == [
        "r.yaml: upstreams[a].api_key: environment variable relay_b_key is not set "
        "(export it where ccswitch runs, or set enabled: false; did you mean ${RELAY_B_KEY}?)"], said
    assert "sk-test-secret-value" not in "\n".join(said)


@pytest.mark.parametrize("host", ["api.anthropic.com\nevil", "api anthropic.com", "api.\x00anthropic.com"])
def test_an_intercept_host_with_a_space_or_control_character_inside_is_refused(host):
    # a line break inside went on into `ccswitch env`'s comments, text a shell evals
    from ccswitch.config.values import host_name
    with pytest.raises(ValueError, match="must be a host name"):
        host_name(host)


def test_a_top_level_x_key_holds_anchors_to_merge_as_in_docker_compose():
    # it was "unknown key (a header? headers go under headers:)"
    r = parse("""
        x-relay: &relay {protocol: anthropic, api_key: k-0123456789}
        upstreams:
          - {<<: *relay, name: a, base_url: 'https://a.example'}
          - {<<: *relay, name: b, base_url: 'https://b.example'}
        routes: {claude: [a, b]}
        """)
    assert [(u.name, u.protocol) for u in r.upstreams] == [("a", "anthropic"), ("b", "anthropic")]
    assert problems("xrelay: 1\n") and problems("x_relay: 1\n")     # only the `x-` prefix


def test_an_unquoted_variable_inside_braces_is_told_to_be_quoted():
    # `{…, api_key: ${KEY}}`: a bare YAML error with no fix
    [said] = problems("upstreams:\n  - {name: a, protocol: anthropic, base_url: 'https://a.example', api_key: ${KEY}}\n",
                      env={"KEY": "k-0123456789"})
    assert said.startswith("r.yaml: line 2, column 77: ") and said.endswith('(a ${VAR} inside { } needs quotes: api_key: "${VAR}")')


@pytest.mark.parametrize(("extra", "where"), [
    ("models: {'*': '${RELAY_MODEL}'}", "upstreams[a].models.*"),
    ("models: {'${BIG}': claude-x}", "upstreams[a].models.${BIG}"),
    ("only_models: ['${MODEL}']", "upstreams[a].only_models[0]"),
    ("activation_model: '${PROBE_MODEL}'", "upstreams[a].activation_model"),
])
def test_a_variable_where_none_is_expanded_is_refused_not_sent_as_its_text(extra, where):
    # the upstream was sent the model "${RELAY_MODEL}" without a word
    assert problems("upstreams:\n" + relay("a", extra=extra), env={"RELAY_MODEL": "m", "MODEL": "m"}) == [
        f"r.yaml: {where}: ${{VAR}} is not expanded here (only in api_key, headers and the fields whose docs "
        "say so): write the value itself"]


def test_a_variable_in_an_intercepted_host_is_refused_not_matched_as_its_text():
    assert problems("intercept: ['${RELAY_HOST}']\n", env={"RELAY_HOST": "r.example.com"}) == [
        "r.yaml: intercept[0]: ${VAR} is not expanded here (only in api_key, headers and the fields whose docs "
        "say so): write the value itself"]
