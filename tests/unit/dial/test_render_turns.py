"""A bridged Codex socket's turn as it is rendered for each kind of upstream."""

import json

import pytest

from ccswitch.dial.render import render
from ccswitch.vocab import Endpoint, Protocol, Route
from ccswitch.wire.exchange import ClientRequest
from tests.support.mock_upstream import MockUpstream
from tests.unit.dial.test_dialer_websocket import rules_for


class _Where:
    def __init__(self, port):
        self.base_url = f"http://127.0.0.1:{port}"


def turn(beta: str) -> ClientRequest:
    body = {"type": "response.create", "model": "gpt-5-codex", "input": []}
    return ClientRequest(route=Route.CODEX, endpoint=Endpoint.WEBSOCKET, method="POST",
                         url="https://api.openai.com/v1/responses",
                         headers=[("openai-beta", beta), ("originator", "codex_exec")],
                         body=json.dumps(body).encode(), json=body, model="gpt-5-codex", stream=True,
                         client_protocol=Protocol.RESPONSES)


@pytest.mark.parametrize("beta, over_https", [
    ("responses_websockets=2026-02-06", None),
    ("responses=experimental, responses_websockets=2026-02-06", "responses=experimental"),
])
def test_a_turn_over_https_does_not_claim_the_websocket_beta_and_one_over_a_socket_does(beta, over_https):
    # a strict relay may refuse an HTTPS POST that says it is a WebSocket client; Codex's own
    # HTTPS requests never carry it
    port = MockUpstream.closed_port()
    rules = rules_for(_Where(port), _Where(port), a_ws=True, b_ws=False)
    over_socket, over_post = (dict(render(rules.upstream(name), turn(beta)).headers) for name in ("a", "b"))
    assert over_socket["openai-beta"] == beta
    assert over_post.get("openai-beta") == over_https and over_post["originator"] == "codex_exec"
