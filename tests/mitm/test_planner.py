"""The job's plan: which upstreams of the route can take this very request."""

import json

import pytest

from ccswitch.config.models import Routes
from ccswitch.dial.job import Job
from ccswitch.mitm.planner import Planner
from ccswitch.wire.exchange import ClientRequest
from tests.mitm.conftest import open_gateway
from tests.support.helpers import KEY_A, KEY_B

RULES = f"""
upstreams:
  - {{name: chatty, protocol: openai-chat, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: anth, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
  - {{name: anth2, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{chat: [chatty, anth, anth2]}}
"""


def chat_request(**extra) -> ClientRequest:
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], **extra}
    return ClientRequest(route="chat", endpoint="chat", method="POST", url="http://127.0.0.1/v1/chat/completions",
                         headers=[], body=json.dumps(body).encode(), json=body, model="gpt-x",
                         client_protocol="openai-chat")


def cool(gateway, name: str) -> None:
    gateway.health.record_failure(name, "503", threshold=1, cooldown=600)


def test_an_upstream_that_cannot_take_the_request_is_skipped_for_one_that_can(gateway):
    job = Planner(gateway).plan_job(chat_request(n=2), "f1", None, None, shown=False)
    assert isinstance(job, Job)
    assert [u.name for u in job.candidates] == ["chatty"]
    assert ("anth", "unable to take this request (n must be 1: an Anthropic upstream returns a single choice)") \
        in job.skipped


def test_the_first_can_be_the_one_skipped_and_its_reason_to_lead_goes_with_it(gateway):
    gateway.health.prefer("anth", gateway.health.clock() + 600)      # ccswitch.use anth
    job = Planner(gateway).plan_job(chat_request(n=2), "f1", None, None, shown=False)
    assert [u.name for u in job.candidates] == ["chatty"] and job.why_first == "route order"


def test_a_cooling_upstream_that_can_take_it_gets_its_second_chance_as_on_a_route_of_its_own(gateway):
    """Before, the available Anthropic upstreams' refusal made it a 503 for the whole cooldown."""
    cool(gateway, "chatty")
    job = Planner(gateway).plan_job(chat_request(n=2), "f1", None, None, shown=False)
    assert isinstance(job, Job) and [u.name for u in job.candidates] == ["chatty"]
    assert job.why_first == "recovers first"
    assert ("anth", "unable to take this request (n must be 1: an Anthropic upstream returns a single choice)") \
        in job.skipped


# nothing opens by itself: told at once (x-should-retry), and, as every 503 of ccswitch's own, when
# to come back all the same (a reload or ccswitch.enable may open it; it had no retry-after at all)
NO_END = {"x-should-retry": "false", "retry-after": "60"}


def test_one_switched_off_that_could_take_it_makes_it_a_wait_naming_both(gateway):
    gateway.health.switch("chatty", False)                          # ccswitch.disable chatty
    status, message, headers = Planner(gateway).plan_job(chat_request(n=2), "f1", None, None, shown=False)
    # nothing opens by itself: a client is told at once instead of retrying for minutes
    assert status == 503 and headers == NO_END
    assert "chatty is disabled by ccswitch.disable" in message
    from ccswitch.wire.protocols import own_error
    told_codex, _ = own_error("openai-responses", status, message, tuple(headers.items()), codex=True)
    assert not any(name == "retry-after" for name, _ in told_codex)     # Codex would wait it out
    assert "anth is unable to take this request (n must be 1" in message


@pytest.mark.parametrize("route, only_models", [(["anth", "anth2"], ""), (["chatty", "anth"], "only_models: [o-*]")])
def test_a_request_no_upstream_of_the_route_could_take_is_the_clients_400(tmp_path, route, only_models):
    gateway = open_gateway(tmp_path, RULES.replace("api_key: '" + KEY_A + "'}", "api_key: '" + KEY_A + "', "
                                                    + only_models + "}", 1) if only_models else RULES)
    gateway.rules_file.rules = gateway.rules.model_copy(
        update={"routes": Routes(**{**gateway.rules.routes.model_dump(), "chat": route})})
    status, message, headers = Planner(gateway).plan_job(chat_request(n=2), "f1", None, None, shown=False)
    assert (status, headers) == (400, None) and message.startswith("n must be 1")


def test_a_400_of_a_route_of_several_protocols_names_each_reason_with_the_upstreams_it_stands_for(tmp_path):
    # a mixed route said only the Anthropic reason, as if a Responses upstream could have taken it
    gateway = open_gateway(tmp_path, RULES.replace(
        "routes: {chat: [chatty, anth, anth2]}",
        f"  - {{name: resp, protocol: openai-responses, base_url: 'http://127.0.0.1:9/v1', api_key: '{KEY_A}'}}\n"
        "routes: {chat: [anth, resp, anth2]}"))
    status, message, headers = Planner(gateway).plan_job(chat_request(n=2), "f1", None, None, shown=False)
    assert (status, headers) == (400, None)
    assert message.count("n must be 1") == 2 and message.index("(anth, anth2)") < message.index("(resp)")


def test_one_no_wait_helps_is_a_400_even_while_the_others_are_rate_limited(gateway):
    """Not a 429 with a retry-after after which the same request gets its 400, nor an alert."""
    gateway.rules_file.rules = gateway.rules.model_copy(
        update={"routes": Routes(**{**gateway.rules.routes.model_dump(), "chat": ["anth", "anth2"]})})
    gateway.health.record_rate_limit("anth2", "429", seconds=600, reset_known=True)
    events = []
    gateway.events.subscribe(events.append)
    status, message, headers = Planner(gateway).plan_job(chat_request(n=2), "f1", None, None, shown=False)
    assert (status, headers) == (400, None) and message.startswith("n must be 1")
    assert events == []


def test_planning_that_keeps_an_upstream_it_was_told_cannot_take_it_is_an_error_not_a_hang(gateway, monkeypatch):
    from ccswitch.mitm import planner as planner_module
    real_plan = planner_module.plan
    monkeypatch.setattr(planner_module, "plan", lambda *a, unable=None, **kw: real_plan(*a, unable=None, **kw))
    with pytest.raises(RuntimeError, match="anth"):
        Planner(gateway).plan_job(chat_request(n=2), "f1", None, None, shown=False)


def closed_route(tmp_path, hours: str, only_models: str = "o-*", night_models: str = "gpt-*"):
    """One upstream off by its hours, one that serves another model only.  In UTC, as the tests'
    `hours` are written: a local "two hours from now" is one or three at a DST change."""
    gateway = open_gateway(tmp_path, f"""
timezone: UTC
upstreams:
  - {{name: night, protocol: openai-chat, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}', hours: ['{hours}'],
     only_models: ['{night_models}']}}
  - {{name: other, protocol: openai-chat, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}',
     only_models: ['{only_models}']}}
routes: {{chat: [night, other]}}
""")
    return Planner(gateway).plan_job(chat_request(), "f1", None, None, shown=False)


def test_a_route_closed_by_hours_says_when_its_first_upstream_opens(tmp_path):
    from datetime import UTC, datetime, timedelta

    from ccswitch.wire.protocols import own_error
    opens = datetime.now(UTC) + timedelta(hours=2)
    ends = opens + timedelta(hours=1)
    status, message, headers = closed_route(tmp_path, f"{opens:%H:%M}-{ends:%H:%M}")
    assert status == 503 and "night is outside its hours" in message and "other is not serving model" in message
    wait = int(headers["retry-after"])
    assert 2 * 3600 - 120 <= wait <= 2 * 3600 + 60
    assert ("x-should-retry", "false") in own_error("anthropic", status, message, tuple(headers.items()))[0]


def test_a_route_that_opens_within_a_minute_is_worth_a_retry(tmp_path):
    from datetime import UTC, datetime, timedelta

    from ccswitch.wire.protocols import own_error
    now = datetime.now(UTC)
    if now.second > 50:         # the window opens at the next minute: not the one after
        import time
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    opens = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    status, _, headers = closed_route(tmp_path, f"{opens:%H:%M}-{opens + timedelta(hours=1):%H:%M}")
    assert status == 503 and 1 <= int(headers["retry-after"]) <= 61
    assert ("x-should-retry", "true") in own_error("anthropic", status, "m", tuple(headers.items()))[0]


def test_a_model_no_upstream_serves_is_said_at_once(tmp_path):
    from datetime import UTC, datetime, timedelta
    opens = datetime.now(UTC) + timedelta(hours=2)     # the one off by its hours would not serve it either
    status, message, headers = closed_route(tmp_path, f"{opens:%H:%M}-{opens + timedelta(hours=1):%H:%M}",
                                            only_models="haiku-*", night_models="opus-*")
    assert status == 503 and headers == NO_END and "not serving model 'gpt-x'" in message
    assert message.endswith("(an upstream's only_models in ccswitch's rules name the models it serves)")   # the mend


def test_a_client_keys_spent_budget_says_when_it_resets_with_the_zone_of_the_rules(tmp_path):
    from ccswitch.routing.budget import CLIENT
    gateway = open_gateway(tmp_path, f"""
timezone: Europe/Berlin
client_keys: [{{name: alice, key: ccsw-alice-000000000, budget: {{daily: 1}}}}]
upstreams:
  - {{name: chatty, protocol: openai-chat, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}'}}
routes: {{chat: [chatty]}}
""")
    gateway.spend.configure(gateway.rules)
    gateway.spend.add(CLIENT, "alice", 1.5)
    status, message, headers = Planner(gateway).client_over_budget("alice")
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert message.endswith(" 00:00 CET") or message.endswith(" 00:00 CEST")


def test_a_closed_chat_route_is_back_when_an_upstream_that_could_take_the_request_opens(tmp_path):
    """An upstream that opens sooner but could not take the request as it is (an Anthropic one
    and `n` > 1) does not set the 503's `retry-after`."""
    from datetime import UTC, datetime, timedelta
    now = datetime.now(UTC)     # and the rules in UTC: a local "three hours from now" is two or four at a DST change
    soon, later = now + timedelta(hours=1), now + timedelta(hours=3)
    gateway = open_gateway(tmp_path, f"""
timezone: UTC
upstreams:
  - {{name: anth, protocol: anthropic, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}',
     hours: ['{soon:%H:%M}-{soon + timedelta(minutes=30):%H:%M}']}}
  - {{name: chatty, protocol: openai-chat, base_url: 'http://127.0.0.1:9', api_key: '{KEY_A}',
     hours: ['{later:%H:%M}-{later + timedelta(minutes=30):%H:%M}']}}
routes: {{chat: [anth, chatty]}}
""")
    status, _, headers = Planner(gateway).plan_job(chat_request(n=2), "f1", None, None, shown=False)
    assert status == 503 and 3 * 3600 - 120 <= int(headers["retry-after"]) <= 3 * 3600 + 60


RESPONSES_RULES = f"""
upstreams:
  - {{name: ra, protocol: openai-responses, base_url: 'http://127.0.0.1:9/v1', api_key: '{KEY_A}'}}
  - {{name: rb, protocol: openai-responses, base_url: 'http://127.0.0.1:9/v1', api_key: '{KEY_A}'}}
routes: {{codex: [ra, rb]}}
"""


def follow_up(endpoint: str, previous: str) -> ClientRequest:
    """A Responses request continuing the stored answer `previous`."""
    body = {"model": "gpt-x", "input": "and then?", "previous_response_id": previous}
    return ClientRequest(route="codex", endpoint=endpoint, method="POST", url="http://127.0.0.1/v1/responses",
                         headers=[], body=json.dumps(body).encode(), json=body, model="gpt-x",
                         client_protocol="openai-responses")


@pytest.mark.parametrize("endpoint, previous, first", [
    ("responses", "resp_seen", ["rb"]),            # only its issuer holds it
    ("responses", "resp_unknown", ["ra", "rb"]),   # issued before a restart, or elsewhere: as any request
    ("websocket", "resp_seen", ["ra", "rb"]),      # a bridged turn carries its conversation itself
])
def test_a_responses_request_continuing_a_stored_response_is_planned_for_its_issuer(tmp_path, endpoint, previous,
                                                                                    first):
    gateway = open_gateway(tmp_path, RESPONSES_RULES)
    gateway.issued.record("resp_seen", "rb")
    job = Planner(gateway).plan_job(follow_up(endpoint, previous), "f1", None, None, shown=False)
    assert [u.name for u in job.candidates] == first


def test_a_follow_up_whose_issuer_now_holds_another_account_is_planned_as_any_request(tmp_path):
    # docs/rules.md: an answer issued to another account under that upstream's name is routed as any
    gateway = open_gateway(tmp_path, RESPONSES_RULES)
    gateway.sync_upstreams()
    gateway.issued.record("resp_seen", "rb")
    gateway.issued.record("resp_ra", "ra")
    (tmp_path / "rules.yaml").write_text(RESPONSES_RULES.replace(f"api_key: '{KEY_A}'}}\nroutes",
                                                                 f"api_key: '{KEY_B}'}}\nroutes"))
    assert gateway.rules_file.open(str(tmp_path / "rules.yaml"))
    gateway.sync_upstreams()          # the reload: rb's name now holds another key
    job = Planner(gateway).plan_job(follow_up("responses", "resp_seen"), "f1", None, None, shown=False)
    assert [u.name for u in job.candidates] == ["ra", "rb"]
    assert gateway.issued.issuer("resp_ra") == "ra"       # the unchanged one keeps what it issued


def test_a_follow_up_whose_issuer_is_switched_off_is_told_at_once_why(tmp_path):
    # the others, in their hours, counted as opening now: retry-after 1 and a retry into the same 503
    gateway = open_gateway(tmp_path, RESPONSES_RULES)
    gateway.issued.record("resp_seen", "rb")
    gateway.health.switch("rb", False)
    req = follow_up("responses", "resp_seen")
    status, message, headers = Planner(gateway).plan_job(req, "f1", None, None, shown=False)
    assert status == 503 and headers == NO_END
    assert message == ("no upstream available for the codex route: ra is not the issuer of the response this request "
                       "continues (rb); rb is disabled by ccswitch.disable")


@pytest.mark.parametrize("store, remembered", [(None, True), (True, True), (False, False)])
def test_the_gateway_remembers_the_issuer_of_an_answer_that_can_be_continued(tmp_path, store, remembered):
    # Codex asks `store: false`: its turns can never be continued, and need no memory
    from ccswitch.dial.job import Attempt
    from tests.support.helpers import make_job
    gateway = open_gateway(tmp_path, RESPONSES_RULES)
    body = {"model": "gpt-x", "input": "hi", **({} if store is None else {"store": store})}
    job = make_job(gateway.rules, path="/v1/responses", body=body, host="api.openai.com")
    job.attempts = [Attempt(upstream="ra", status=500), Attempt(upstream="rb", status=200, response_id="resp_1")]
    job.upstream, job.status = "rb", 200
    gateway.record_job(job)
    assert gateway.issued.issuer("resp_1") == ("rb" if remembered else None)


@pytest.mark.parametrize("path, answered_by, kept", [
    ("/v1/responses", "rb", {"resp_new": "rb"}),     # a Responses client may continue it: its issuer is kept
    ("/v1/chat/completions", "rb", {}),              # a chat client never saw the id: nothing to continue
    ("/v1/responses", "ra", {}),                     # the id of an attempt that did not answer the client
], ids=["responses-client", "chat-client", "another-attempt-s-id"])
def test_the_id_of_a_responses_answer_is_kept_with_the_upstream_that_issued_it(tmp_path, path, answered_by, kept):
    from ccswitch.dial.job import Attempt
    from tests.support.helpers import make_job
    gateway = open_gateway(tmp_path, RESPONSES_RULES.replace("routes: {codex: [ra, rb]}",
                                                             "routes: {codex: [ra, rb], chat: [ra, rb]}"))
    body = {"model": "gpt-x", "input": "hi"} if path == "/v1/responses" else {
        "model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
    job = make_job(gateway.rules, path=path, body=body, host="api.openai.com")
    job.attempts = [Attempt(upstream=answered_by, status=200, response_id="resp_new")]
    job.upstream, job.status = "rb", 200
    gateway.record_job(job)
    assert ({"resp_new": gateway.issued.issuer("resp_new")} if len(gateway.issued) else {}) == kept


def test_a_follow_up_whose_issuer_is_out_is_no_news_of_the_route(tmp_path):
    # one openai-SDK follow-up set off a route-wide `exhausted` webhook while the route's others served
    gateway = open_gateway(tmp_path, RESPONSES_RULES)
    heard = []
    gateway.events.subscribe(heard.append)
    gateway.issued.record("resp_seen", "rb")
    gateway.health.switch("rb", False)
    req = follow_up("responses", "resp_seen")
    status, _, _ = Planner(gateway).plan_job(req, "f1", None, None, shown=False)
    assert status == 503 and [e.kind for e in heard] == []
