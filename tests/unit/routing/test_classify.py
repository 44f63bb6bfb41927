"""Which client API a request speaks, by method and path, and the routed path a wrong one meant."""

import pytest

from ccswitch.routing.classify import base_url_hint, classify


@pytest.mark.parametrize("method, path, route", [
    ("POST", "/v1/messages?beta=true", "claude"), ("POST", "/v1/messages/", "claude"),
    ("POST", "/backend-api/codex/responses", "codex"), ("POST", "/v1/chat/completions", "chat"),
    ("GET", "/v1/messages", None), ("POST", "/v1/v1/messages", None), ("POST", "/v1/models", None),
])
def test_routes_by_method_and_path(method, path, route):
    match = classify(method, path)
    assert (match.route if match else None) == route


ALL = ("claude", "codex", "chat")


@pytest.mark.parametrize("path, hint", [
    ("/v1/v1/messages?beta=true", "ccswitch routes /v1/messages, not /v1/v1/messages: check the client's base URL"),
    ("/v1/v1/chat/completions", "ccswitch routes /v1/chat/completions, not /v1/v1/chat/completions: check"),
    ("/api/v1/responses", "ccswitch routes /v1/responses, not /api/v1/responses: check the client's base URL"),
    # an OpenAI client whose base URL lacks the /v1 it leaves to the base URL
    ("/chat/completions", "ccswitch routes /v1/chat/completions, not /chat/completions: the client's base URL "
                          "likely lacks its /v1"),
    ("/messages/count_tokens?beta=true", "ccswitch routes /v1/messages/count_tokens, not /messages/count_tokens: "
                                         "the client's base URL likely lacks its /v1"),
    ("/v1/message", "ccswitch routes /v1/messages, not /v1/message: check the path"),
    ("/v1/chat/completion", "ccswitch routes /v1/chat/completions, not /v1/chat/completion: check the path"),
    ("/v1/messages", None), ("/responses", None), ("/api/hello", None),
    # the API's own other paths go on without a word
    ("/v1/models", None), ("/v1/messages/batches", None), ("/v1/complete", None), ("/v1/embeddings", None),
])
def test_what_a_base_url_gets_wrong_for_an_unrouted_path_a_routed_one_explains(path, hint):
    said = base_url_hint(path, ALL)
    assert said == hint if hint is None else said.startswith(hint)


def test_no_hint_points_at_a_path_whose_route_lists_no_upstream():
    # with the shipped rules (chat: []) the mended path would go on unrouted all the same
    assert base_url_hint("/chat/completions", ("claude", "codex")) is None
    assert base_url_hint("/v1/v1/chat/completions", ("claude", "codex")) is None
    assert base_url_hint("/v1/v1/messages", ("claude",)).startswith("ccswitch routes /v1/messages")
