"""Which client API a request speaks, by method and path, and the routed path a wrong one meant."""

import pytest

from ccswitch.routing.classify import classify, meant_path


@pytest.mark.parametrize("method, path, route", [
    ("POST", "/v1/messages?beta=true", "claude"), ("POST", "/v1/messages/", "claude"),
    ("POST", "/backend-api/codex/responses", "codex"), ("POST", "/v1/chat/completions", "chat"),
    ("GET", "/v1/messages", None), ("POST", "/v1/v1/messages", None), ("POST", "/v1/models", None),
])
def test_routes_by_method_and_path(method, path, route):
    match = classify(method, path)
    assert (match.route if match else None) == route


@pytest.mark.parametrize("path, meant", [
    ("/v1/v1/messages?beta=true", "/v1/messages"), ("/v1/v1/chat/completions", "/v1/chat/completions"),
    ("/api/v1/responses", "/v1/responses"), ("/v1/messages", None), ("/api/hello", None),
])
def test_the_routed_path_an_unrouted_one_ends_with(path, meant):
    assert meant_path(path) == meant
