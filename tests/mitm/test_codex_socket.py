"""The request hook and Codex's WebSocket upgrade: bridged by default, 426 with `refuse`."""

import asyncio
from datetime import UTC, datetime

from mitmproxy.flow import Error
from mitmproxy.test import taddons

from ccswitch.dial.relay import Relay
from ccswitch.dial.ws_bridge import TICKET_HEADER
from ccswitch.dial.ws_errors import Refusal
from ccswitch.mitm.codex_socket import CodexSockets
from ccswitch.mitm.router import Router
from ccswitch.wire.ws_chain import Turn
from tests.mitm.test_router import messages_flow
from tests.support.helpers import CLIENT_KEY, KEY_A

RULES = f"""
client_keys: ["{CLIENT_KEY}"]
upstreams:
  - {{name: a, protocol: openai-responses, base_url: 'http://127.0.0.1:9/v1', api_key: '{KEY_A}'}}
routes: {{codex: [a]}}
"""


def bridging(gateway) -> Router:
    """A router that has started, with its bridge (not listening)."""
    router = Router(gateway)
    router.relay = Relay(None)
    router.started.set()
    router.sockets = CodexSockets(router)
    return router


def upgrade():
    flow = messages_flow(path="/v1/responses", method="GET", host="api.openai.com")
    flow.request.headers["upgrade"] = "websocket"
    flow.request.headers["connection"] = "Upgrade"
    flow.request.headers["sec-websocket-key"] = "dGhlIHNhbXBsZSBub25jZQ=="
    flow.request.headers["session-id"] = "codex-session-1"
    return flow


async def test_an_upgrade_is_handed_to_the_bridge_with_a_ticket(gateway):
    router = bridging(gateway)
    router.sockets.bridge.port = 4343
    with taddons.context(router):
        flow = upgrade()
        await router.request(flow)
    assert flow.response is None and flow.request.port == 4343 and flow.request.host == "127.0.0.1"
    token = flow.request.headers[TICKET_HEADER]
    ticket = router.sockets.bridge._tickets[token]
    kept = dict(ticket.context.headers)
    assert kept["session-id"] == "codex-session-1" and "sec-websocket-key" not in kept and "upgrade" not in kept
    assert "x-api-key" not in kept                              # a client key goes no further than ccswitch
    assert flow.request.headers["x-api-key"] == flow.request.headers["cookie"] == "<redacted>"   # the flow's
    assert flow.comment == "ccswitch: Codex WebSocket bridged"


async def test_in_upstream_mode_an_upgrade_goes_to_the_bridge_straight_not_through_the_mode_s_proxy(gateway):
    router = bridging(gateway)
    router.sockets.bridge.port = 4343
    with taddons.context(router):
        flow = upgrade()
        shared = flow.server_conn
        shared.via = ("http", ("127.0.0.1", 3128))     # as mitmproxy's upstream mode sets it
        await router.request(flow)
    assert flow.server_conn.address == ("127.0.0.1", 4343) and flow.server_conn.via is None
    assert shared.via == ("http", ("127.0.0.1", 3128))       # the connection's next requests keep it


async def test_an_upgrade_while_draining_gets_a_503_not_a_bridge_about_to_close(gateway):
    router = bridging(gateway)
    router.shutdown.draining = True
    with taddons.context(router):
        flow = upgrade()
        await router.request(flow)
    assert flow.response.status_code == 503 and flow.response.headers["retry-after"]
    assert TICKET_HEADER not in flow.request.headers and not router.sockets.bridge._tickets


async def test_refuse_keeps_the_426(gateway):
    gateway.rules_file.rules = gateway.rules.model_copy(update={"codex_websocket": "refuse"})
    router = bridging(gateway)
    with taddons.context(router):
        flow = upgrade()
        await router.request(flow)
    assert flow.response.status_code == 426 and not router.sockets.bridge._tickets


async def test_a_wrong_client_key_never_reaches_the_bridge(gateway):
    router = bridging(gateway)
    with taddons.context(router):
        flow = upgrade()
        flow.request.headers["x-api-key"] = "wrong"
        await router.request(flow)
    assert flow.response.status_code == 401 and not router.sockets.bridge._tickets


async def test_a_refused_upgrade_s_row_is_a_streamed_request_s(gateway, monkeypatch):
    # the client asked for a WebSocket (`stream` is 1 for one, interface §5): the 401's row said 0
    rows = []
    monkeypatch.setattr(gateway, "record_own_answer", rows.append)
    router = bridging(gateway)
    with taddons.context(router):
        flow = upgrade()
        flow.request.headers["x-api-key"] = "wrong"
        await router.request(flow)
    [row] = rows
    assert (row["status"], row["endpoint"], row["stream"], row["session"]) == (401, "websocket", True,
                                                                               "codex-session-1")


async def test_an_upgrade_that_never_reached_the_bridge_leaves_no_ticket_behind(gateway):
    router = bridging(gateway)
    with taddons.context(router):
        flow = upgrade()
        await router.request(flow)
        assert router.sockets.bridge._tickets          # held for the bridge: the flow, the client's headers
        flow.error = Error("client disconnected")         # before mitmproxy reached the bridge
        router.error(flow)
    assert not router.sockets.bridge._tickets and not router.sockets._open


async def test_an_upgrade_the_bridge_answered_without_a_socket_is_let_go(gateway):
    # its ticket was taken (a 403 for one it did not know, a client gone after the 101): no
    # websocket_end comes for it, and its flow was held for good
    from mitmproxy.test import tutils
    router = bridging(gateway)
    with taddons.context(router):
        flow = upgrade()
        await router.request(flow)
        router.sockets.bridge._tickets.clear()            # the bridge took the ticket
        flow.response = tutils.tresp(status_code=403)
        router.response(flow)
    assert not router.sockets._open


async def test_a_shutdown_waits_for_bridged_turns_and_cuts_them(gateway):
    router = bridging(gateway)
    turn = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    router.sockets.bridge._track(turn)                   # as a turn being served registers itself
    assert router._in_flight() == 1
    router._cut()
    await asyncio.gather(turn, return_exceptions=True)
    assert turn.cancelled()


async def first_turn(gateway):
    """A Codex upgrade through the router, then its first turn (`gpt-5`, no input) as the bridge
    makes it: (the upgrade's flow, the job or refusal)."""
    router = bridging(gateway)
    with taddons.context(router):
        flow = upgrade()
        await router.request(flow)
    ticket = router.sockets.bridge._tickets[flow.request.headers[TICKET_HEADER]]
    ticket.turns = 1
    return flow, router.sockets._make_job(ticket, Turn(body={"model": "gpt-5", "input": []}, input=[],
                                                       upstream_hint=None))


async def test_a_bug_planning_a_turn_is_its_500_frame_and_row(gateway, monkeypatch):
    def broken(*args):
        raise KeyError("input")
    monkeypatch.setattr("ccswitch.mitm.planner.convert_for_candidates", broken)
    rows = []
    monkeypatch.setattr(gateway, "record_own_answer", rows.append)
    made = (await first_turn(gateway))[1]
    assert isinstance(made, Refusal) and made.status == 500 and "internal error" in made.message
    [row] = rows
    assert (row["status"], row["model"], row["endpoint"], row["upstream"]) == (500, "gpt-5", "websocket", None)


async def bridged_ticket(gateway, monkeypatch, session_header: bool = True):
    """An upgrade handed to the bridge: (its router, its ticket, the refusals' rows recorded)."""
    rows = []
    monkeypatch.setattr(gateway, "record_own_answer", rows.append)
    router = bridging(gateway)
    with taddons.context(router):
        flow = upgrade()
        if not session_header:
            del flow.request.headers["session-id"]
        await router.request(flow)
    return router, router.sockets.bridge._tickets[flow.request.headers[TICKET_HEADER]], rows


async def test_a_frame_that_cannot_be_read_keeps_the_socket_s_session_in_its_row(gateway, monkeypatch):
    # the bridge refuses such a frame before any body is read: its row's session was NULL
    router, ticket, rows = await bridged_ticket(gateway, monkeypatch)
    refusal = router.sockets.bridge._refuse(ticket, 400, "a frame that is not JSON")
    [row] = rows
    assert refusal.status == 400 and (row["status"], row["session"]) == (400, "codex-session-1")


async def test_a_refused_frame_s_row_has_the_model_and_session_it_names(gateway, monkeypatch):
    # a frame read but refused (no model, a lost chain): the upgrade's session header wins over
    # the frame's `prompt_cache_key` as for a turn served; without the header the frame's is used
    router, ticket, rows = await bridged_ticket(gateway, monkeypatch, session_header=False)
    router.sockets.bridge._refuse(ticket, 409, "conversation state lost",
                                  frame={"model": "gpt-5", "prompt_cache_key": "pck-7"})
    router.sockets.bridge._refuse(ticket, 400, "the frame names no model", frame={"prompt_cache_key": "pck-8"})
    assert [(r["status"], r["model"], r["session"]) for r in rows] == [(409, "gpt-5", "pck-7"), (400, None, "pck-8")]


async def test_a_client_over_its_budget_is_bridged_and_refused_turn_by_turn_with_when_it_resets(tmp_path, monkeypatch):
    """Codex reads a turn's refusal but not a refused upgrade's body: the upgrade goes through, and
    each turn is the 429 whose `usage_limit_reached` says when to come back."""
    import json

    from ccswitch.dial.ws_errors import refusal_frame
    from ccswitch.routing.budget import CLIENT
    from tests.mitm.conftest import open_gateway
    gateway = open_gateway(tmp_path, RULES.replace(
        f'client_keys: ["{CLIENT_KEY}"]', f"client_keys: [{{name: alice, key: '{CLIENT_KEY}', budget: {{daily: 1}}}}]"))
    # at noon: in the last minute of a day its budget comes back sooner than is worth a stop (a CI
    # run at 23:59 got the plain 429 with its short retry-after)
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    gateway.spend.clock = lambda: noon
    gateway.spend.configure(gateway.rules)
    gateway.spend.add(CLIENT, "alice", 1.5)
    rows = []
    monkeypatch.setattr(gateway, "record_own_answer", rows.append)
    flow, made = await first_turn(gateway)
    assert flow.response is None      # bridged, not refused
    assert isinstance(made, Refusal) and made.status == 429 and "alice" in made.message
    assert [k for k, _ in made.headers] == ["retry-after"]
    error = json.loads(refusal_frame(made))["error"]
    assert error["type"] == "usage_limit_reached" and error["resets_at"] > 0
    [row] = rows
    assert (row["status"], row["model"], row["endpoint"]) == (429, "gpt-5", "websocket")


def next_turn(router, ticket):
    ticket.turns += 1
    return router.sockets._make_job(ticket, Turn(body={"model": "gpt-5", "input": []}, input=[], upstream_hint=None))


async def test_a_socket_is_let_in_turn_by_turn_by_the_client_keys_the_rules_hold_then(tmp_path, monkeypatch):
    """A socket lasts for hours: a reload that revokes its key refuses its next turns (401) as it
    refuses that key's requests, and one that renames it puts the new name on its turns."""
    from ccswitch.dial.job import Job
    from tests.mitm.conftest import open_gateway
    from tests.support.helpers import reload_settled
    bob, carol = f"{{name: bob, key: '{CLIENT_KEY}'}}", "{name: carol, key: 'another-client-key-0123456789'}"
    rules = RULES.replace(f'client_keys: ["{CLIENT_KEY}"]', f"client_keys: [{bob}, {carol}]")
    gateway = open_gateway(tmp_path, rules)
    router, ticket, rows = await bridged_ticket(gateway, monkeypatch)
    assert isinstance(made := next_turn(router, ticket), Job) and made.client == "bob"
    (tmp_path / "rules.yaml").write_text(rules.replace("name: bob", "name: robert"))
    assert reload_settled(gateway.rules_file)
    assert isinstance(made := next_turn(router, ticket), Job) and made.client == "robert"
    (tmp_path / "rules.yaml").write_text(rules.replace(f"{bob}, ", ""))
    assert reload_settled(gateway.rules_file)
    made = next_turn(router, ticket)
    assert isinstance(made, Refusal) and made.status == 401 and "client key" in made.message
    assert [(r["status"], r["client"]) for r in rows] == [(401, None)]


async def test_a_socket_opened_without_client_keys_is_refused_once_the_rules_ask_for_one(tmp_path, monkeypatch):
    from tests.mitm.conftest import open_gateway
    from tests.support.helpers import reload_settled
    open_rules = RULES.replace(f'client_keys: ["{CLIENT_KEY}"]\n', "")
    gateway = open_gateway(tmp_path, open_rules)
    router, ticket, _ = await bridged_ticket(gateway, monkeypatch)
    assert next_turn(router, ticket).client is None
    (tmp_path / "rules.yaml").write_text(RULES)
    assert reload_settled(gateway.rules_file)
    assert next_turn(router, ticket).status == 401
