"""One Codex WebSocket's conversation chain, so each `response.create` frame can be sent to a
stateless upstream as a full Responses request.

Over its WebSocket, Codex sends only a turn's new input items with `previous_response_id` when
the rest of the request is unchanged: the server is expected to remember the previous request's
input and its response's output.  A bridge in front of stateless upstreams (HTTPS relays, other
accounts) must remember them itself, per client socket:

* the last completed turn's full input and its output items, under the response id the client saw;
* kept only once `response.completed` arrived, dropped on any error;
* the `generate: false` warm-up is answered here, its input kept as the baseline;
* a frame naming a response this socket does not hold is a lost chain: the caller closes the
  socket before any output, and Codex sends the whole input again on a new one.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ccswitch.wire.reasoning import is_encrypted_reasoning, seal_of

#: frame fields that are the bridge's business, never an upstream's
_BRIDGE_FIELDS = ("type", "generate", "previous_response_id")


class FrameError(ValueError):
    """A client frame that is not a `response.create` ccswitch can serve (answered in-band)."""


class ChainLost(Exception):
    """The frame continues a response this socket does not hold (close before any output)."""


@dataclass
class Turn:
    body: dict[str, Any]          # the full Responses request for an upstream
    input: list[Any]              # its full input, kept as the next baseline once it completes
    upstream_hint: str | None     # the upstream that produced the previous response, if any
    # the frame as Codex sent it, for an upstream reached over its own WebSocket that issued
    # `previous` on that socket (it holds the rest): only the new items, and that id
    new_input: list[Any] = field(default_factory=list)
    previous: str | None = None   # the frame's previous_response_id (always the chain's last id)
    # the upstream whose own each sealed reasoning item is (`seal_of` it): it made it, or it
    # read it in a turn it completed
    made_by: dict[int, str] = field(default_factory=dict)
    # the ids of the input items the upstream that served the turn was sent (the turn's own
    # objects), once known: not those it refused, or was left without for refusing them before
    sent: set[int] | None = None


@dataclass
class Chain:
    last_id: str | None = None
    last_input: list[Any] = field(default_factory=list)
    last_output: list[Any] = field(default_factory=list)
    last_upstream: str | None = None
    made_by: dict[int, str] = field(default_factory=dict)
    _pending: Turn | None = None
    _items: list[Any] = field(default_factory=list)

    def prepare(self, frame: Any) -> Turn:
        """The full request for one `response.create` frame (raises FrameError, ChainLost)."""
        if not isinstance(frame, dict) or frame.get("type") != "response.create":
            kind = frame.get("type") if isinstance(frame, dict) else type(frame).__name__
            raise FrameError(f"expected a response.create frame, not {kind!r}")
        new_input = frame.get("input", [])
        if isinstance(new_input, str):
            new_input = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": new_input}]}]
        if not isinstance(new_input, list):
            raise FrameError("input must be a list of items or a string")
        previous = frame.get("previous_response_id")
        if previous is not None:
            if previous != self.last_id:
                raise ChainLost(f"response {previous!r} is not the last one completed on this socket")
            full = self.last_input + self.last_output + new_input
        else:
            full = list(new_input)
        body = {k: v for k, v in frame.items() if k not in _BRIDGE_FIELDS}
        body.update(input=full, stream=True, store=False)
        self._pending = Turn(body, full, self.last_upstream, list(new_input), previous, self.made_by)
        self._items = []
        return self._pending

    def warm_up(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        """Answer a `generate: false` frame here: its input becomes the baseline, and the events
        the client waits for (created, completed) carry an id of the bridge's own."""
        turn = self.prepare(frame)
        response_id = "resp_ccswitch_" + secrets.token_hex(12)
        response = {"id": response_id, "object": "response", "created_at": int(time.time()),
                    "status": "completed", "model": frame.get("model"), "output": [],
                    "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
        self._commit(response_id, turn.input, [], self.last_upstream)
        return [{"type": "response.created", "response": {**response, "status": "in_progress"}},
                {"type": "response.completed", "response": response}]

    def observe(self, event: Any, upstream: str) -> None:
        """Each event of the turn in flight, as it goes to the client."""
        if not isinstance(event, dict) or self._pending is None:
            return
        kind = event.get("type")
        if kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            self._items.append(event["item"])
        elif kind == "response.completed":
            response = event.get("response") if isinstance(event.get("response"), dict) else {}
            output = response.get("output") if isinstance(response.get("output"), list) else self._items
            for item in output or self._items:
                if (seal := seal_of(item)) is not None:
                    self.made_by[seal] = upstream
            sent = sent_input(self._pending, upstream)
            for item in sent:   # it read what it was sent: its own
                if (seal := seal_of(item)) is not None:
                    self.made_by.setdefault(seal, upstream)
            self._commit(response.get("id"), chained_input(self._pending, upstream, sent), output or self._items,
                         upstream)
        elif kind in ("error", "response.failed", "response.incomplete"):
            self.drop()

    def drop(self) -> None:
        """An error: nothing is kept (Codex's next turn sends its whole input), but who made
        which reasoning, which stays true."""
        self.last_id, self.last_input, self.last_output, self.last_upstream = None, [], [], None
        self._pending, self._items = None, []

    def _commit(self, response_id: Any, full_input: list[Any], output: list[Any], upstream: str | None) -> None:
        self.last_id = response_id if isinstance(response_id, str) else None
        self.last_input, self.last_output, self.last_upstream = full_input, list(output), upstream
        self._pending, self._items = None, []


def for_upstream(turn: Turn, upstream: str) -> dict[str, Any]:
    """The turn's body for `upstream`: reasoning items another account encrypted are left out
    (they would not decrypt there)."""
    kept = kept_input(turn, upstream)
    return turn.body if kept is turn.input else {**turn.body, "input": kept}


def kept_input(turn: Turn, upstream: str) -> list[Any]:
    """The turn's full input as `upstream` may take it (the turn's own list when all of it):
    without the sealed reasoning another upstream of the chain made, nor, once the chain has
    moved to another upstream, the sealed reasoning the client sent of its own (made by whoever
    served the turns before this socket)."""
    kept = [item for item in turn.input if _fits(turn, upstream, item)]
    return turn.input if len(kept) == len(turn.input) else kept


def sent_input(turn: Turn, upstream: str) -> list[Any]:
    """What `upstream` was sent of the turn's input: as the dialer says, else as it was shaped."""
    if turn.sent is None:
        return kept_input(turn, upstream)
    return [item for item in turn.input if id(item) in turn.sent]


def chained_input(turn: Turn, upstream: str, sent: list[Any] | None = None) -> list[Any]:
    """What the chain keeps of a turn `upstream` completed: what it was sent (`sent_input`, when
    the caller has it), and the reasoning the chain's upstreams made or took (a later turn may be
    theirs: a conversation that went from A to B and back keeps A's).  Reasoning of unknown make
    it was not sent stays out: it would come back once the next turn is `upstream`'s own."""
    sent_ids = {id(item) for item in (sent_input(turn, upstream) if sent is None else sent)}
    return [item for item in turn.input
            if not is_encrypted_reasoning(item) or id(item) in sent_ids or seal_of(item) in turn.made_by]


def _fits(turn: Turn, upstream: str, item: Any) -> bool:
    if not is_encrypted_reasoning(item):
        return True
    maker = turn.made_by.get(seal_of(item))
    if maker is not None:
        return maker == upstream
    return turn.upstream_hint is None or turn.upstream_hint == upstream
